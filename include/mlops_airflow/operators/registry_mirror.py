"""Approve or reject a registered version in the environment's registry mirror (the Amazon provider has none)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

DECISIONS = ("approve", "reject")


class RegistryMirrorApprovalOperator(BaseOperator):
    """Record a promotion decision on a version mirrored to the environment's cloud registry.

    MLflow stays the system of record; the mirror (``backends.registry_mirror``: a SageMaker model
    package group, or ``none``) follows the promotion gate. This task sets the mirrored version's
    approval status (``Approved`` / ``Rejected`` for SageMaker) with ``reason`` as the recorded
    description (SageMaker's ``ApprovalDescription``, cut to its 1024 characters). It is
    idempotent: a version that already has that status and reason is left alone, so a retry sends
    nothing. With ``backends.registry_mirror: none`` it logs that there is nothing to record.

    The mirror comes from the task's backends bundle (``mlops_airflow.backends.backends_for``), so
    a DAG using this operator names no backend. A version never mirrored fails the task with the
    reason (it is mirrored when ``evaluate_register`` or ``promote`` registers it).

    Returns ``{"model_name", "version", "decision", "reason", "mirror"}``.

    :param model_name: the MLflow registered model (``<env>.<model>``). (templated)
    :param version: its version. (templated)
    :param decision: ``approve`` or ``reject``. (templated)
    :param reason: why; required to reject. (templated)
    :param approved_by: who approved (recorded when no ``reason`` is given). (templated)
    :param env: environment whose settings choose the mirror; default the run's ``env`` Param. (templated)
    """

    template_fields: Sequence[str] = ("model_name", "version", "decision", "reason", "approved_by", "env")
    ui_color = "#e8f0e0"

    def __init__(
        self,
        *,
        model_name: str,
        version: str,
        decision: str,
        reason: str | None = None,
        approved_by: str | None = None,
        env: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.decision = decision
        self.reason = reason
        self.approved_by = approved_by
        self.env = env

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.runtime import fail_fast, settings_for
        from mlops_core.errors import PermanentError
        from mlops_core.registry_mirror import NoMirror

        with fail_fast():
            decision = str(self.decision).strip().lower()
            if decision not in DECISIONS:
                raise PermanentError(f"decision {self.decision!r}: use one of {', '.join(DECISIONS)}")
            reason = str(self.reason).strip() if self.reason else ""
            if decision == "reject" and not reason:
                raise PermanentError(f"rejecting {self.model_name} version {self.version} needs a reason")
            version = str(self.version).strip()
            if not self.model_name or not version:
                raise PermanentError(f"no version to {decision}: model {self.model_name!r}, version {self.version!r}")
            settings = settings_for(context, self.env)
            mirror = backends_for(settings).mirror
            result = {
                "model_name": self.model_name,
                "version": version,
                "decision": decision,
                "reason": reason,
                "mirror": settings.backends.registry_mirror,
            }
            if isinstance(mirror, NoMirror):
                self.log.info(
                    "No registry mirror in %s (backends.registry_mirror: none): %s version %s not %sd anywhere",
                    settings.env,
                    self.model_name,
                    version,
                    decision,
                )
                return result
            if decision == "approve":
                mirror.approve(self.model_name, version, approved_by=self.approved_by or None, reason=reason or None)
            else:
                mirror.reject(self.model_name, version, reason=reason)
        self.log.info(
            "%s version %s: %sd in the %s mirror (%s)", self.model_name, version, decision, result["mirror"], reason
        )
        return result
