"""Stage 5: serve the environment's champion, smoke-test it, verify it, roll back on failure.

The stage speaks only the serving seam (:class:`mlops_core.serving_target.Serving`), so every
target rolls out the same way: the target fetches the champion and checks its files against the
digest recorded in the tracking database when it was logged (``mlops_core.model_integrity``),
serves it, the smoke test sends real held-out rows to it, and the stage verifies that the target
reports the version asked for. If anything fails -- a changed or refused model artifact included
-- the previous champion is put back (serving and the ``@champion`` alias both), and the stage
raises so the run shows the failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_core.model_integrity import ModelIntegrityError
from mlops_core.serving import DeploymentFailed
from mlops_core.stages.train import read_training_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.backends import Backends
    from mlops_core.registry import ModelVersionInfo
    from mlops_core.serving_target import LiveModel, SmokeResult
    from mlops_core.settings import Settings
    from mlops_core.storage import ObjectStore

__all__ = ["DeploymentFailed", "deploy_champion"]

log = logging.getLogger(__name__)


def _smoke_rows(settings: Settings, store: ObjectStore, info: ModelVersionInfo) -> pd.DataFrame:
    from mlops_core.training.model import prepare_features

    contract = settings.load_contract()
    if "mlops.training_set" not in info.tags:
        raise DeploymentFailed(
            f"{info.name} version {info.version} has no 'mlops.training_set' tag, so there are no held-out rows "
            "to smoke-test it with; register models through evaluate_register"
        )
    holdout = read_training_frame(store, {"key": info.tags["mlops.training_set"]}, "holdout")
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


def deploy_champion(settings: Settings, expected_version: str | None, backends: Backends) -> dict[str, Any]:
    """Serve the environment's ``@champion``: verify, deploy, smoke-test; roll back and raise on failure.

    ``backends.serving`` is the environment's serving target; the smoke test's held-out rows come
    from ``backends.store``.
    """
    registry = backends.registry
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
    target = backends.serving
    live = target.live()
    if (
        live
        and live.healthy
        and live.model_version == str(champion.version)
        and champion.model_sha256
        and live.model_sha256 == champion.model_sha256
    ):
        log.info("%s version %s is already live at %s", name, champion.version, live.endpoint)
        smoke = target.smoke_test(_smoke_rows(settings, backends.store, champion))
        return _report(settings, name, champion, live, smoke, previous=None)

    previous = live.model_version if live else None
    try:
        expected = _expected_sha256(champion)
        deployed = target.deploy(
            registry.model_uri(name, champion.version),
            str(champion.version),
            startup_timeout=settings.serving.startup_timeout_seconds,
            expected_sha256=expected,
        )
        smoke = target.smoke_test(_smoke_rows(settings, backends.store, champion))
        if not target.verify(str(champion.version), expected):
            raise DeploymentFailed(
                f"serving target does not report version {champion.version} (sha256 {expected}) after deploy"
            )
    except Exception as exc:
        log.error("Deploying %s version %s failed: %s", name, champion.version, exc)
        rolled_to = _rollback(settings, backends, name, previous)
        raise DeploymentFailed(
            f"deploying {name} version {champion.version} failed ({type(exc).__name__}: {exc}); "
            + (f"rolled back to version {rolled_to}" if rolled_to else "no previous version to roll back to")
        ) from exc
    return _report(settings, name, champion, deployed, smoke, previous=previous)


def _rollback(settings: Settings, backends: Backends, name: str, previous_live: str | None) -> str | None:
    """Point ``@champion`` back and serve that version again (verified like any deploy); its version or None."""
    registry, target = backends.registry, backends.serving
    version = registry.rollback(name) or previous_live
    if not version:
        target.stop()
        return None
    info = registry.version_info(name, version)
    target.deploy(
        registry.model_uri(name, version),
        str(version),
        startup_timeout=settings.serving.startup_timeout_seconds,
        expected_sha256=_expected_sha256(info),
    )
    target.smoke_test(_smoke_rows(settings, backends.store, info))
    log.warning("Rolled back %s to version %s", name, version)
    return version


def _report(
    settings: Settings,
    name: str,
    champion: ModelVersionInfo,
    live: LiveModel,
    smoke: SmokeResult,
    *,
    previous: str | None,
) -> dict[str, Any]:
    return {
        "env": settings.env,
        "model_name": name,
        "version": str(champion.version),
        "model_sha256": champion.model_sha256,  # the verified digest of the files being served
        "previous_version": previous,
        "target": live.target,
        "url": live.endpoint,
        "rolled_back": False,
        "smoke_latency_ms": smoke.latency_ms,
        "sample_prediction": smoke.predictions[0] if smoke.predictions else None,
    }
