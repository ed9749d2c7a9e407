"""Stage 5: serve the environment's champion, smoke-test it, verify it, roll back on failure.

Rollout on the local target: the serving backend downloads the champion, checks its files against
the digest recorded in the tracking database when it was logged (``mlops_core.model_integrity``),
starts it, and the smoke test sends real held-out rows to ``/invocations``; if anything fails --
a changed or refused model artifact included -- the previous champion is put back (serving and
the ``@champion`` alias both), and the stage raises so the run shows the failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_core.backends import model_registry, object_store, serving_backend
from mlops_core.model_integrity import ModelIntegrityError
from mlops_core.serving import DeploymentFailed
from mlops_core.stages.train import read_training_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.registry import ModelRegistry, ModelVersionInfo
    from mlops_core.serving import LocalModelServer
    from mlops_core.settings import Settings

__all__ = ["DeploymentFailed", "deploy_champion"]

log = logging.getLogger(__name__)


def _smoke_rows(settings: Settings, info: ModelVersionInfo) -> pd.DataFrame:
    from mlops_core.training.model import prepare_features

    contract = settings.load_contract()
    if "mlops.training_set" not in info.tags:
        raise DeploymentFailed(
            f"{info.name} version {info.version} has no 'mlops.training_set' tag, so there are no held-out rows "
            "to smoke-test it with; register models through evaluate_register"
        )
    holdout = read_training_frame(object_store(settings), {"key": info.tags["mlops.training_set"]}, "holdout")
    return prepare_features(holdout.head(settings.serving.smoke_rows), contract)


def _expected_sha256(info: ModelVersionInfo) -> str:
    """The digest recorded for a version in the tracking database; a version without one is never served."""
    if not info.model_sha256:
        raise ModelIntegrityError(
            f"{info.name} version {info.version} has no recorded digest (mlops.model_sha256), so nothing vouches "
            "for its files and it is not served; re-register the model from a trusted training run (train DAG, "
            "then evaluate_register) and deploy that version"
        )
    return info.model_sha256


def deploy_champion(settings: Settings, expected_version: str | None = None) -> dict[str, Any]:
    """Serve the environment's ``@champion``: verify, deploy, smoke-test; roll back and raise on failure."""
    registry = model_registry(settings)
    name = settings.registered_model_name
    champion = registry.champion(name)
    if champion is None:
        raise DeploymentFailed(f"{name} has no @champion to deploy; run evaluate_register (or promote) first")
    if expected_version and str(expected_version) != str(champion.version):
        log.warning(
            "Event asked for version %s but @champion is now %s: deploying the champion",
            expected_version,
            champion.version,
        )
    server = serving_backend(settings)
    live = server.current()
    if (
        live
        and live.get("alive")
        and str(live.get("model_version")) == str(champion.version)
        and champion.model_sha256
        and live.get("model_sha256") == champion.model_sha256
    ):
        log.info("%s version %s is already live at %s", name, champion.version, live.get("url"))
        smoke = server.smoke_test(_smoke_rows(settings, champion))
        return _report(settings, name, champion, live["url"], smoke, previous=None)

    previous = live.get("model_version") if live else None
    try:
        expected = _expected_sha256(champion)
        deployment = server.deploy(
            registry.model_uri(name, champion.version),
            str(champion.version),
            startup_timeout=settings.serving.startup_timeout_seconds,
            expected_sha256=expected,
        )
        smoke = server.smoke_test(_smoke_rows(settings, champion))
        if not server.verify(str(champion.version), expected):
            raise DeploymentFailed(
                f"serving target does not report version {champion.version} (sha256 {expected}) after deploy"
            )
    except Exception as exc:
        log.error("Deploying %s version %s failed: %s", name, champion.version, exc)
        rolled_to = _rollback(settings, registry, server, name, previous)
        raise DeploymentFailed(
            f"deploying {name} version {champion.version} failed ({type(exc).__name__}: {exc}); "
            + (f"rolled back to version {rolled_to}" if rolled_to else "no previous version to roll back to")
        ) from exc
    return _report(settings, name, champion, deployment.url, smoke, previous=previous)


def _rollback(
    settings: Settings, registry: ModelRegistry, server: LocalModelServer, name: str, previous_live: str | None
) -> str | None:
    """Point ``@champion`` back and serve that version again (verified like any deploy); its version or None."""
    target = registry.rollback(name) or previous_live
    if not target:
        server.stop()
        return None
    info = registry.version_info(name, target)
    server.deploy(
        registry.model_uri(name, target),
        str(target),
        startup_timeout=settings.serving.startup_timeout_seconds,
        expected_sha256=_expected_sha256(info),
    )
    server.smoke_test(_smoke_rows(settings, info))
    log.warning("Rolled back %s to version %s", name, target)
    return target


def _report(
    settings: Settings,
    name: str,
    champion: ModelVersionInfo,
    url: str,
    smoke: dict[str, Any],
    *,
    previous: str | None,
) -> dict[str, Any]:
    preds = smoke.get("predictions", [])
    return {
        "env": settings.env,
        "model_name": name,
        "version": str(champion.version),
        "model_sha256": champion.model_sha256,  # the verified digest of the files being served
        "previous_version": previous,
        "url": url,
        "rolled_back": False,
        "smoke_latency_ms": smoke.get("latency_ms"),
        "sample_prediction": preds[0] if preds else None,
    }
