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
