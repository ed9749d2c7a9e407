"""Who may move ``@champion`` in an environment that requires a human approval.

Every path that makes a model version the champion of an environment (the evaluate-and-register
stage, a promotion from the previous environment) asks :func:`approval_for` first. Where the
environment's ``promotion.require_approval`` is true, only an answered approval passes: the
response of Airflow's ``ApprovalOperator`` (``chosen_options == ["Approve"]`` and who responded).
A run triggered with other parameters, an asset event posted over the REST API, or a task whose
approval was rejected or never asked gets :class:`~mlops_core.errors.ApprovalRequired`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_core.errors import ApprovalRequired

APPROVE = "Approve"
REJECT = "Reject"


def approval_for(env: str, require_approval: bool, response: Mapping[str, Any] | None, what: str) -> str | None:
    """Check that ``what`` (e.g. "prod.churn version 3 as @champion") may happen in ``env``.

    Args:
        env: the environment whose champion changes.
        require_approval: ``promotion.require_approval`` of that environment.
        response: the approval task's result (its XCom), or None when no approval was asked.
        what: the change, for the error message and the record.

    Returns:
        Who approved (``"name (id)"``), or None when the environment needs no approval.

    Raises:
        ApprovalRequired: approval is required and ``response`` is not an approval.
    """
    if not require_approval:
        return None
    if not isinstance(response, Mapping):
        raise ApprovalRequired(
            f"{env} requires a human approval (promotion.require_approval) before {what}, and none was given; "
            "run the DAG path with the approval step (promote, or evaluate_register) and approve it in the UI "
            "(Required actions)"
        )
    chosen = response.get("chosen_options")
    who = response.get("responded_by_user") or {}
    if chosen != [APPROVE] or not isinstance(who, Mapping) or not who.get("name"):
        raise ApprovalRequired(
            f"{env} requires a human approval before {what}; the recorded answer {chosen!r} "
            f"by {who!r} is not an approval"
        )
    return f"{who['name']} ({who.get('id', '?')})"


def rejection_reason(evaluation: Mapping[str, Any], response: Mapping[str, Any] | None) -> str:
    """Why an evaluated version did not become ``@champion``, as the registry mirror records it.

    Args:
        evaluation: the evaluate stage's result (``promote``, ``reasons``).
        response: the approval task's result, or None when no approval was asked.

    Returns:
        The promotion gate's reasons when the gate turned the version down; otherwise who rejected
        it in the approval step; otherwise what the approval step answered.
    """
    if not evaluation.get("promote"):
        reasons = [str(r) for r in evaluation.get("reasons") or []]
        return "promotion gate: " + ("; ".join(reasons) or "did not pass")
    if isinstance(response, Mapping):
        chosen = response.get("chosen_options")
        who = response.get("responded_by_user") or {}
        name = who.get("name") if isinstance(who, Mapping) else None
        if chosen == [REJECT] and name:
            return f"rejected by {name} ({who.get('id', '?')}) in the Airflow approval step"
        return f"not approved: the approval step answered {chosen!r}"
    return "not promoted: no approval was given"
