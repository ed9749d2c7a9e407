"""Promote a champion from one environment to the next (dev -> staging -> prod).

Each environment has its own registry namespace (``<env>.<model>``) and serving target. The
version is copied (``copy_model_version``) with its lineage tags and the digest of its files
recorded when it was logged; the copy is verified against that digest (a changed artifact stops
the promotion before the alias moves), then becomes ``@champion`` of the target namespace; the
deploy stage of the target environment serves it. Whether a human must approve first is
``promotion.require_approval`` of the *target* environment; :func:`copy_champion` checks the
approval itself (``mlops_core.approvals``), so no caller can skip it. The plan carries what an
approver needs to decide: the candidate's held-out metric, the target's current champion and
its metric. The target environment's registry mirror (``backends.registry_mirror``) receives the
copy with its lineage and approves it once it is ``@champion``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_core.approvals import approval_for
from mlops_core.errors import PermanentError
from mlops_core.registry import holdout_scores
from mlops_core.registry_mirror import MirroredVersion
from mlops_core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlops_core.backends import Backends
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


def plan_promotion(from_env: str, version: str | None, backends_for: Callable[[Settings], Backends]) -> dict[str, Any]:
    """What promoting ``version`` (default: the champion) of ``from_env`` would do; ``backends_for``
    builds an environment's bundle (the caller's: ``mlops_airflow.backends.backends_for`` in a task)."""
    source = load_settings(from_env)
    to_env = source.promotion.next_env
    if not to_env:
        raise PermanentError(f"{from_env} is the last environment (promotion.next_env is empty)")
    target = load_settings(to_env)
    registry = backends_for(source).registry
    src_name = source.registered_model_name
    if version is None:
        champion = registry.champion(src_name)
        if champion is None:
            raise PermanentError(f"{src_name} has no @champion to promote")
        version = champion.version
    source_info = registry.version_info(src_name, version)  # raises if it does not exist
    metric = target.evaluation.primary_metric
    current = backends_for(target).registry.champion(target.registered_model_name)
    return {
        "from_env": from_env,
        "to_env": to_env,
        "source_model": src_name,
        "source_version": str(version),
        "target_model": target.registered_model_name,
        "requires_approval": target.promotion.require_approval,
        "metric": metric,
        "source_metric": source_info.tags.get(f"mlops.holdout_{metric}"),
        "source_dataset_versions": source_info.tags.get("mlops.dataset_versions"),
        "source_run_id": source_info.run_id,
        "source_experiment_id": source_info.experiment_id,
        "source_scores": holdout_scores(source_info.tags),
        "source_training_set": source_info.tags.get("mlops.training_set"),
        "target_champion_version": current.version if current else None,
        "target_champion_metric": current.tags.get(f"mlops.holdout_{metric}") if current else None,
        "target_champion_scores": holdout_scores(current.tags) if current else None,
        "target_champion_dataset_versions": current.tags.get("mlops.dataset_versions") if current else None,
        "greater_is_better": target.evaluation.greater_is_better,
    }


def copy_champion(
    plan: dict[str, Any],
    backends: Backends,
    *,
    approval: dict[str, Any] | None = None,
    source: Backends | None = None,
) -> dict[str, Any]:
    """Copy the planned version into the target namespace, verify its files, make it ``@champion`` there.

    ``backends`` is the bundle of the target environment (``plan["to_env"]``): its registry and mirror.
    ``source`` is the bundle of ``plan["from_env"]``: when its store is not the target's, the
    version's held-out rows are copied too, so the target's deploy can smoke-test it.

    ``approval`` is the approval step's answer; a target environment that requires approval
    refuses without one (``ApprovalRequired``), whatever the plan says, before anything changes.
    """
    target = load_settings(plan["to_env"])
    what = (
        f"{plan['source_model']} version {plan['source_version']} becomes @champion of {target.registered_model_name}"
    )
    approved_by = approval_for(target.env, target.promotion.require_approval, approval, what)
    if plan["target_model"] != target.registered_model_name:
        raise PermanentError(
            f"plan names {plan['target_model']!r}, but {target.env} registers {target.registered_model_name!r}"
        )
    registry = backends.registry
    previous = registry.champion(plan["target_model"])
    new_version = registry.copy_to(
        plan["source_model"],
        plan["source_version"],
        plan["target_model"],
        tags={
            "mlops.promoted_from": f"{plan['source_model']}/{plan['source_version']}",
            **({"mlops.approved_by": approved_by} if approved_by else {}),
        },
    )
    digest = registry.verify_model(plan["target_model"], new_version)  # ModelIntegrityError: the alias stays
    info = registry.version_info(plan["target_model"], new_version)
    if source is not None and "mlops.training_set" in info.tags:
        from mlops_core.stages.train import carry_drift_reference, carry_held_out_rows

        carry_held_out_rows(source.store, backends.store, info.tags["mlops.training_set"])
        carry_drift_reference(source.store, backends.store, info.tags)
    registry.set_champion(plan["target_model"], new_version, previous=previous.version if previous else None)
    info = registry.version_info(plan["target_model"], new_version)
    mirror = backends.mirror
    mirror_ref = mirror.mirror(
        MirroredVersion(
            model_name=plan["target_model"],
            version=str(new_version),
            model_uri=registry.model_uri(plan["target_model"], str(new_version)),
            model_sha256=digest,
            lineage={k: v for k, v in info.tags.items() if k.startswith("mlops.")},
        )
    )
    mirror.approve(plan["target_model"], str(new_version), approved_by=approved_by)
    log.info(
        "Promoted %s/%s to %s version %s (sha256 %s verified)",
        plan["source_model"],
        plan["source_version"],
        plan["target_model"],
        new_version,
        digest,
    )
    return {
        "env": plan["to_env"],
        "model_name": plan["target_model"],
        "version": str(new_version),
        "previous_version": previous.version if previous else None,
        "mlflow_run_id": info.run_id,
        "approved_by": approved_by,
        "mirror_ref": mirror_ref,
    }
