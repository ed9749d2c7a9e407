"""Stage 4: score challenger and champion on the same held-out rows; register; promote or not.

The challenger is always registered (with lineage tags), so every trained model is findable.
It becomes ``@champion`` (an MLflow alias; stages are deprecated) only when the promotion gate
(``mlops_core.evaluation.decide_promotion``) says so and, where the environment's
``promotion.require_approval`` is true, a human approved it (``mlops_core.approvals``). Only
candidates trained in the same environment are evaluated here: a model reaches a later
environment through the promote stage, never by evaluating another environment's run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_core.approvals import approval_for
from mlops_core.errors import PermanentError
from mlops_core.registry import holdout_tags
from mlops_core.registry_mirror import MirroredVersion
from mlops_core.stages.train import read_training_frame

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.registry import ModelRegistry
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


class CandidateFromAnotherEnvironment(PermanentError):
    """A training run of one environment was offered for registration in another."""


def evaluate_candidate(
    settings: Settings,
    candidate: dict[str, Any],
    backends: Backends,
    *,
    min_improvement: float | None = None,
) -> dict[str, Any]:
    """Score, register and judge ``candidate``: held-out rows from ``backends.store``, the version
    mirrored to ``backends.mirror`` (the DAG's reject_in_mirror task rejects it there when the gate says no)."""
    from mlops_core.evaluation import PromotionPolicy, decide_promotion, score_model
    from mlops_core.lineage import git_commit

    contract = settings.load_contract()
    registry = backends.registry
    name = settings.registered_model_name
    trained_in = registry.run_tags(candidate["mlflow_run_id"]).get("mlops.env")
    if trained_in and trained_in != settings.env:
        raise CandidateFromAnotherEnvironment(
            f"MLflow run {candidate['mlflow_run_id']} was trained in {trained_in}, not {settings.env}; a model reaches "
            f"{settings.env} only by promotion (the promote DAG, from the environment before it), with the approval "
            f"{settings.env} requires"
        )
    holdout = read_training_frame(backends.store, {"key": candidate["training_set"]}, "holdout")
    if holdout.empty:
        raise ValueError(f"training set {candidate['training_set']} has no held-out rows to evaluate on")

    challenger_model = registry.load_run_model(candidate["mlflow_run_id"])
    challenger = score_model(challenger_model, holdout, contract)
    champion_info = registry.champion(name)
    champion = None
    if champion_info is not None:
        champion = score_model(registry.load_model(name, champion_info.version), holdout, contract)
    policy = PromotionPolicy(
        primary_metric=settings.evaluation.primary_metric,
        greater_is_better=settings.evaluation.greater_is_better,
        thresholds=dict(settings.evaluation.thresholds),
        min_improvement=settings.evaluation.min_improvement if min_improvement is None else min_improvement,
    )
    decision = decide_promotion(challenger, champion, policy)
    for reason in decision.reasons:
        log.info("Promotion gate: %s", reason)
    run_tags = {k: v for k, v in registry.run_tags(candidate["mlflow_run_id"]).items() if k.startswith("mlops.")}
    version = registry.register(
        candidate["mlflow_run_id"],
        name,
        tags={
            **run_tags,  # lineage of the training run travels with the version (and its copies)
            "mlops.dataset_versions": ",".join(candidate["dataset_versions"]),
            "mlops.training_set": candidate["training_set"],
            "mlops.run_id": candidate["mlflow_run_id"],
            "mlops.git_commit": git_commit(),
            **holdout_tags(challenger),  # every held-out score: what an approver compares later
            "mlops.holdout_" + policy.primary_metric: str(challenger.get(policy.primary_metric, "nan")),
            "mlops.promotion_decision": "promote" if decision.promote else "reject",
        },
    )
    mirror = backends.mirror
    mirror_ref = mirror.mirror(_mirrored(registry, name, version, challenger))
    if mirror_ref:
        log.info("%s version %s mirrored as %s", name, version, mirror_ref)
    # A version the gate turns down is rejected in the mirror by the DAG's reject_in_mirror task
    # (RegistryMirrorApprovalOperator), the one place both rejections (gate, approver) go through.
    return {
        "env": settings.env,
        "model_name": name,
        "version": version,
        "mlflow_run_id": candidate["mlflow_run_id"],
        "mlflow_experiment_id": candidate.get("mlflow_experiment_id"),
        "dataset_versions": list(candidate["dataset_versions"]),
        "primary_metric": policy.primary_metric,
        "promote": decision.promote,
        "reasons": decision.reasons,
        "challenger_metrics": challenger,
        "champion_metrics": champion,
        "champion_version": champion_info.version if champion_info else None,
        "requires_approval": settings.promotion.require_approval,
        "mirror_ref": mirror_ref,
    }


def _mirrored(registry: ModelRegistry, name: str, version: str, metrics: dict[str, Any]) -> MirroredVersion:
    """A registered version as the registry mirror receives it: files, digest, metrics, lineage tags."""
    info = registry.version_info(name, version)
    return MirroredVersion(
        model_name=name,
        version=str(version),
        model_uri=registry.model_uri(name, str(version)),
        model_sha256=info.model_sha256 or "",
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        lineage={k: v for k, v in info.tags.items() if k.startswith("mlops.")},
    )


def candidate_from_run(settings: Settings, run_id: str, backends: Backends) -> dict[str, Any]:
    """Rebuild a ``model_candidate`` description from a training run's tags (manual evaluations)."""
    tags = backends.registry.run_tags(run_id)
    missing = [t for t in ("mlops.training_set", "mlops.dataset_versions") if t not in tags]
    if missing:
        raise ValueError(f"MLflow run {run_id} was not logged by the train DAG (missing tags {missing})")
    return {
        "env": settings.env,
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": backends.registry.experiment_id,
        "training_set": tags["mlops.training_set"],
        "dataset_versions": [v for v in tags["mlops.dataset_versions"].split(",") if v],
        "metrics": {},
    }


def promote_to_champion(
    settings: Settings,
    evaluation: dict[str, Any],
    backends: Backends,
    *,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the evaluated version ``@champion``: only if the gate passed it and, where required, a human approved.

    ``approval`` is the answer of the approval step (Airflow's ``ApprovalOperator`` result);
    without it an environment with ``promotion.require_approval`` raises ``ApprovalRequired``.
    """
    if not evaluation.get("promote"):
        raise PermanentError(f"{evaluation['model_name']} version {evaluation['version']} did not pass the gate")
    what = f"{evaluation['model_name']} version {evaluation['version']} becomes @champion"
    approved_by = approval_for(settings.env, settings.promotion.require_approval, approval, what)
    registry = backends.registry
    registry.set_champion(evaluation["model_name"], evaluation["version"], previous=evaluation["champion_version"])
    if approved_by:
        registry.set_version_tags(evaluation["model_name"], evaluation["version"], {"mlops.approved_by": approved_by})
    backends.mirror.approve(evaluation["model_name"], evaluation["version"], approved_by=approved_by)
    log.info(
        "%s version %s is now @champion (previous: %s; approved by %s)",
        evaluation["model_name"],
        evaluation["version"],
        evaluation["champion_version"],
        approved_by or "nobody: no approval required",
    )
    return {
        "env": settings.env,
        "model_name": evaluation["model_name"],
        "version": evaluation["version"],
        "previous_version": evaluation["champion_version"],
        "mlflow_run_id": evaluation["mlflow_run_id"],
        "approved_by": approved_by,
    }
