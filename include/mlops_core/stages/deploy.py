"""Stage 5: serve the environment's champion, smoke-test it, verify it, roll back on failure.

Rollout on the local target: the serving backend starts the new model, the smoke test sends
real held-out rows to ``/invocations``; if anything fails, the previous champion is put back
(serving and the ``@champion`` alias both), and the stage raises so the run shows the failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_core.backends import model_registry, serving_backend
from mlops_core.stages.train import read_training_frame

if TYPE_CHECKING:
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


class DeploymentFailed(RuntimeError):
    pass


def _smoke_rows(settings: Settings, info) -> Any:
    from mlops_core.training.model import prepare_features

    contract = settings.load_contract()
    if "mlops.training_set" not in info.tags:
        raise DeploymentFailed(
            f"{info.name} version {info.version} has no 'mlops.training_set' tag, so there are no held-out rows "
            "to smoke-test it with; register models through evaluate_register"
        )
    holdout = read_training_frame(settings, {"key": info.tags["mlops.training_set"]}, "holdout")
    return prepare_features(holdout.head(settings.serving.smoke_rows), contract)


def deploy_champion(settings: Settings, expected_version: str | None = None) -> dict[str, Any]:
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
    if live and live.get("alive") and str(live.get("model_version")) == str(champion.version):
        log.info("%s version %s is already live at %s", name, champion.version, live.get("url"))
        smoke = server.smoke_test(_smoke_rows(settings, champion))
        return _report(settings, name, champion.version, live["url"], smoke, rolled_back=False, previous=None)

    previous = live.get("model_version") if live else None
    try:
        deployment = server.deploy(
            registry.model_uri(name, champion.version),
            str(champion.version),
            startup_timeout=settings.serving.startup_timeout_seconds,
        )
        smoke = server.smoke_test(_smoke_rows(settings, champion))
        if not server.verify(str(champion.version)):
            raise DeploymentFailed(f"serving target does not report version {champion.version} after deploy")
    except Exception as exc:
        log.error("Deploying %s version %s failed: %s", name, champion.version, exc)
        rolled_to = _rollback(settings, registry, server, name, previous)
        raise DeploymentFailed(
            f"deploying {name} version {champion.version} failed ({exc}); "
            + (f"rolled back to version {rolled_to}" if rolled_to else "no previous version to roll back to")
        ) from exc
    url = deployment["url"] if isinstance(deployment, dict) else deployment.url
    return _report(settings, name, champion.version, url, smoke, rolled_back=False, previous=previous)


def _rollback(settings, registry, server, name, previous_live):
    target = registry.rollback(name) or previous_live
    if not target:
        server.stop()
        return None
    info = registry.version_info(name, target)
    server.deploy(
        registry.model_uri(name, target), str(target), startup_timeout=settings.serving.startup_timeout_seconds
    )
    server.smoke_test(_smoke_rows(settings, info))
    log.warning("Rolled back %s to version %s", name, target)
    return target


def _report(settings, name, version, url, smoke, *, rolled_back, previous) -> dict[str, Any]:
    preds = smoke.get("predictions", [])
    return {
        "env": settings.env,
        "model_name": name,
        "version": str(version),
        "previous_version": previous,
        "url": url,
        "rolled_back": rolled_back,
        "smoke_latency_ms": smoke.get("latency_ms"),
        "sample_prediction": preds[0] if preds else None,
    }
