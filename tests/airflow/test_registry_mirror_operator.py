"""RegistryMirrorApprovalOperator against SageMaker on the moto server, and where evaluate_register uses it.

The mirror is chosen by the environment's settings (``backends.registry_mirror: sagemaker`` here,
``none`` locally), exactly as the DAG's task gets it; UpdateModelPackage calls are counted at the
server. moto's UpdateModelPackage would reset unsent fields; ``tests/moto_server.py`` makes it
change only what is sent, as SageMaker does.
"""

from __future__ import annotations

import types

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow.operators.registry_mirror import RegistryMirrorApprovalOperator
from mlops_core.registry_mirror import MirroredVersion
from tests.aws.aws_conf import connection_variable, write_aws_conf
from tests.conftest import DAGS
from tests.moto_server import unique_name


@pytest.fixture
def sagemaker_env(mlops_home, moto_server, monkeypatch, tmp_path):
    """MLOPS_CONF_DIR whose dev.yaml mirrors the registry to SageMaker on the moto server."""
    from mlops_core.settings import load_settings

    bucket = unique_name("mirror-op")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv(connection_variable("mlops_aws_mirror_test"), moto_server.connection_uri())
    aws = {"storage": "aws", "compute": "aws", "registry_mirror": "sagemaker"}  # the rest stay local
    role = "arn:aws:iam::123456789012:role/mlops"
    conf = write_aws_conf(tmp_path / "conf", bucket, conn_id="mlops_aws_mirror_test", role_arn=role, backends=aws)
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    return load_settings("dev")


def _context() -> dict:
    return {
        "params": {"env": "dev"},
        "run_id": "manual__mirror",
        "dag": types.SimpleNamespace(dag_id="evaluate_register"),
        "logical_date": pendulum.datetime(2026, 2, 1, tz="UTC"),
    }


def _mirrored(settings, n: str) -> tuple[str, str]:
    from mlops_airflow.backends import backends_for

    model = f"dev.{unique_name('churn')}"
    arn = backends_for(settings).mirror.mirror(MirroredVersion(model, n, f"models:/{model}/{n}", "ab" * 32))
    assert arn
    return model, arn


def _op(model: str, version: str, decision: str, **kwargs) -> RegistryMirrorApprovalOperator:
    return RegistryMirrorApprovalOperator(
        task_id="reject_in_mirror", model_name=model, version=version, decision=decision, **kwargs
    )


def test_a_rejection_is_recorded_with_its_reason_once(sagemaker_env, moto_server):
    model, arn = _mirrored(sagemaker_env, "3")
    updates = moto_server.calls("sagemaker", "UpdateModelPackage")
    reason = "rejected by alice (7) in the Airflow approval step"
    result = _op(model, "3", "reject", reason=reason).execute(_context())
    assert result == {
        "model_name": model,
        "version": "3",
        "decision": "reject",
        "reason": reason,
        "mirror": "sagemaker",
    }
    described = moto_server.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Rejected" and described["ApprovalDescription"] == reason
    assert described["CustomerMetadataProperties"]["mlflow_version"] == "3"  # the lineage stays
    _op(model, "3", "reject", reason=reason).execute(_context())  # a retry: nothing more is sent
    assert moto_server.calls("sagemaker", "UpdateModelPackage") == updates + 1
    _op(model, "3", "reject", reason="promotion gate: roc_auc 0.5 < 0.6").execute(_context())  # another reason
    assert moto_server.calls("sagemaker", "UpdateModelPackage") == updates + 2
    long = _op(model, "3", "reject", reason="x" * 3000)
    long.execute(_context())
    described = moto_server.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert len(described["ApprovalDescription"]) == 1024  # SageMaker's limit
    long.execute(_context())
    assert moto_server.calls("sagemaker", "UpdateModelPackage") == updates + 3


def test_an_approval_records_who_or_the_reason(sagemaker_env, moto_server):
    model, arn = _mirrored(sagemaker_env, "4")
    _op(model, "4", "Approve", approved_by="bob (9)").execute(_context())
    described = moto_server.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "@champion in MLflow; approved by bob (9)"
    _op(model, "4", "approve", reason="approved by the model risk board, ticket MR-12").execute(_context())
    described = moto_server.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert described["ApprovalDescription"] == "approved by the model risk board, ticket MR-12"


def test_a_version_never_mirrored_fails_with_the_reason(sagemaker_env):
    model, _ = _mirrored(sagemaker_env, "1")
    with pytest.raises(LookupError, match="version 8 has no model package"):
        _op(model, "8", "reject", reason="no").execute(_context())


@pytest.mark.parametrize(
    ("decision", "reason", "message"),
    [("promote", "x", "use one of approve, reject"), ("reject", "", "needs a reason"), ("reject", None, "reason")],
)
def test_a_decision_that_cannot_be_recorded_fails_without_retries(
    sagemaker_env, moto_server, decision, reason, message
):
    updates = moto_server.calls("sagemaker", "UpdateModelPackage")
    with pytest.raises(AirflowFailException, match=message):
        _op("dev.churn", "1", decision, reason=reason).execute(_context())
    assert moto_server.calls("sagemaker", "UpdateModelPackage") == updates


def test_without_a_mirror_it_is_a_logged_no_op(mlops_home, moto_server, capsys):
    updates = moto_server.calls("sagemaker", "UpdateModelPackage")
    result = _op("dev.churn", "2", "reject", reason="promotion gate: f1 0.1 < 0.5").execute(_context())
    assert result["mirror"] == "none"
    assert "No registry mirror in dev" in capsys.readouterr().out
    assert moto_server.calls("sagemaker", "UpdateModelPackage") == updates


@pytest.fixture(scope="module")
def evaluate_register():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / "evaluate_register.py")).dags["evaluate_register"]


def test_evaluate_register_rejects_in_the_mirror_whenever_promote_is_skipped(evaluate_register):
    """The gate's no (route skips both branches) and the approver's no (ApprovalOperator skips promote) both
    leave promote skipped; then ``rejection`` runs and reject_in_mirror records it. A promoted version skips
    it; a failed evaluate or promote leaves it upstream_failed, so the run fails (a run is judged by its leaves)."""
    from airflow.sdk.exceptions import AirflowSkipException

    rejection = evaluate_register.get_task("rejection")
    assert rejection.upstream_task_ids == {"promote"} and rejection.trigger_rule == "none_failed"
    reject = evaluate_register.get_task("reject_in_mirror")
    assert isinstance(reject, RegistryMirrorApprovalOperator) and reject.upstream_task_ids == {"rejection"}
    assert reject.decision == "reject"

    def run(evaluation: dict, approval: dict | None, promoted: dict | None = None) -> dict:
        pulled = {"evaluate": evaluation, "approve_champion": approval, "promote": promoted}
        ti = types.SimpleNamespace(xcom_pull=lambda task_ids: pulled[task_ids])
        return rejection.python_callable(ti=ti)

    gate = {"model_name": "dev.churn", "version": 5, "promote": False, "reasons": ["roc_auc 0.55 < 0.6"]}
    assert run(gate, None) == {
        "model_name": "dev.churn",
        "version": "5",
        "reason": "promotion gate: roc_auc 0.55 < 0.6",
    }
    human = {**gate, "promote": True, "reasons": []}
    answer = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "alice"}}
    assert run(human, answer)["reason"] == "rejected by alice (7) in the Airflow approval step"
    with pytest.raises(AirflowSkipException, match="promoted"):
        run(human, None, promoted={"model_name": "dev.churn", "version": "5"})
