"""TrainingJobOperator with backends.compute: aws -- SageMaker on the moto server, the tests playing its container.

The same operator and trigger as for the local service; only the environment's settings differ
(a conf folder whose dev.yaml sets the aws backends), so nothing in the DAG names a backend.
Calls are counted where they land, at the moto server.
"""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import TaskDeferred

from mlops_airflow.operators.training import TrainingJobOperator
from tests.airflow.test_training_operator import (
    _context,
    _training_set,
    execute_in_worker,
    first_event,
    rebuilt,
    run_task,
)
from tests.aws.aws_conf import connection_variable, write_aws_conf
from tests.moto_server import unique_name
from tests.sagemaker_container import SageMakerTrainingContainer

ROLE = "arn:aws:iam::123456789012:role/mlops-training"


@pytest.fixture
def aws_env(mlops_home, moto_server, monkeypatch, tmp_path):
    """MLOPS_CONF_DIR with a dev.yaml whose storage and compute are aws, on the moto server's connection."""
    from mlops_core.settings import load_settings

    bucket = unique_name("train")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv(connection_variable("mlops_aws_test"), moto_server.connection_uri())
    aws = {"storage": "aws", "compute": "aws"}  # the rest stay local
    conf = write_aws_conf(tmp_path / "conf", bucket, conn_id="mlops_aws_test", role_arn=ROLE, backends=aws)
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    settings = load_settings("dev")
    assert settings.backends.compute == "aws"
    return settings


@pytest.fixture
def container(moto_server):
    box = SageMakerTrainingContainer(moto_server).start()
    yield box
    box.close()


def _s3_training_set(settings, key: str, single_class: bool = False) -> dict:
    """The local test's training set, written to the environment's S3 store instead."""
    from mlops_airflow.backends import store_for
    from mlops_core.backends import object_store
    from mlops_core.settings import with_overrides

    local = with_overrides(settings, backends={"storage": "local", "compute": "local"}, storage={"root": "store"})
    ts = _training_set(local, key, single_class)
    store, source = store_for(settings), object_store(local)
    for name in ("train", "holdout"):
        store.put_bytes(f"{ts['key']}/{name}.parquet", source.get_bytes(f"{ts['key']}/{name}.parquet"))
    return ts


def test_a_sagemaker_job_trains_defers_and_a_retry_reattaches(aws_env, moto_server, container):
    from mlops_airflow.backends import backends_for
    from mlops_core.compute import read_metrics
    from mlops_core.sagemaker_compute import SageMakerCompute

    backends = backends_for(aws_env)
    assert isinstance(backends.compute, SageMakerCompute)
    ts = _s3_training_set(aws_env, "aws1")
    before = moto_server.calls("sagemaker", "CreateTrainingJob")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression", poll_interval=0.2)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context("manual__aws1"))
    name = deferred.value.trigger.job_name
    assert moto_server.training_job(name).role_arn == ROLE
    event = first_event(rebuilt(deferred.value.trigger))
    result = op.execute_complete(_context("manual__aws1"), event=event, **deferred.value.kwargs)
    assert result["status"] == "Completed" and result["model_uri"].endswith(f"/{name}/output/model.tar.gz")
    assert (
        result["metrics"] == read_metrics(backends.store, result["metrics_uri"]) and "test_roc_auc" in result["metrics"]
    )
    again = run_task(
        TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression", poll_interval=0.2),
        _context("manual__aws1"),
    )
    assert again["job_name"] == name and again["reattached"] is True
    assert moto_server.calls("sagemaker", "CreateTrainingJob") == before + 1  # one job for the run, retry included
    assert container.ran == [name]


def test_a_failed_sagemaker_job_raises_with_sagemakers_reason(aws_env, moto_server, container):
    from mlops_core.stages.train import TrainingJobFailed

    ts = _s3_training_set(aws_env, "aws2", single_class=True)
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression", poll_interval=0.2)
    with pytest.raises(TrainingJobFailed, match=r"AlgorithmError: .*single class"):
        run_task(op, _context("manual__aws2"))


def test_on_kill_stops_the_sagemaker_job_exactly_once(aws_env, moto_server):
    from mlops_core.stages.train import TrainingJobFailed

    ts = _s3_training_set(aws_env, "aws3")
    before = moto_server.calls("sagemaker", "StopTrainingJob")
    op = TrainingJobOperator(
        task_id="train_model", training_set=ts, algorithm="logistic_regression", deferrable=False, poll_interval=0.2
    )
    name, worker, outcome = execute_in_worker(op, _context("manual__aws3"), "_running_job")
    assert name is not None
    op.on_kill()
    moto_server.finish_training_job(name, "Stopped")  # SageMaker ends a stopping job (no container runs this one)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert moto_server.calls("sagemaker", "StopTrainingJob") == before + 1
    assert isinstance(outcome.get("error"), TrainingJobFailed) and f"training job {name} stopped" in str(
        outcome["error"]
    )
