"""Who may move @champion, and why a version was not made champion (what the registry mirror records)."""

from __future__ import annotations

import pytest

from mlops_core.approvals import approval_for, rejection_reason
from mlops_core.errors import ApprovalRequired

ALICE = {"id": "7", "name": "alice"}


def test_only_an_answered_approval_passes_where_one_is_required():
    assert approval_for("dev", False, None, "x") is None
    assert approval_for("prod", True, {"chosen_options": ["Approve"], "responded_by_user": ALICE}, "x") == "alice (7)"
    for response in (None, {"chosen_options": ["Reject"], "responded_by_user": ALICE}, {"chosen_options": ["Approve"]}):
        with pytest.raises(ApprovalRequired):
            approval_for("prod", True, response, "prod.churn version 3 becomes @champion")


def test_the_rejection_reason_names_the_gate_or_the_approver():
    gate = {"promote": False, "reasons": ["roc_auc 0.55 < threshold 0.6", "f1 0.2 < threshold 0.3"]}
    assert rejection_reason(gate, None) == "promotion gate: roc_auc 0.55 < threshold 0.6; f1 0.2 < threshold 0.3"
    assert rejection_reason({"promote": False}, None) == "promotion gate: did not pass"
    passed = {"promote": True, "reasons": []}
    rejected = {"chosen_options": ["Reject"], "responded_by_user": ALICE}
    assert rejection_reason(passed, rejected) == "rejected by alice (7) in the Airflow approval step"
    assert (
        rejection_reason(passed, {"chosen_options": ["Maybe"]}) == "not approved: the approval step answered ['Maybe']"
    )
    assert rejection_reason(passed, None) == "not promoted: no approval was given"
