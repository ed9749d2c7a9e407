"""The lifecycle a second time, with every backend ``aws``: S3, the Glue Data Catalog and SageMaker on moto.

The same DAGs, the same demo driver and the same Airflow stack as ``test_lifecycle_e2e.py`` (one per
session, ``tests/conftest.py``: the demo restarts its components with this environment, and its
client sees only this pass's runs); only the conf folder differs
(``MLOPS_CONF_DIR``: ``backends`` all ``aws`` / ``sagemaker``, ``storage.root`` an ``s3://`` prefix per
environment, ``aws.conn_id`` an ``AIRFLOW_CONN_*`` pointing at the session's moto server). Nothing in
``dags/`` changes. The tests play SageMaker's parts moto does not: the training container
(``tests/sagemaker_container.py``: runs our entrypoint on the job's channels and uploads its
``model.tar.gz``) and the endpoint's serving container (``tests/sagemaker_hosting.py``: moto's
``InvokeEndpoint`` forwarded to ``include/sagemaker/serve`` with the deployed model).

Arrival here is event-driven (``dataset.arrival.via: watcher``): no ``watch_drop_zone`` DAG, the
``DropZoneWatcher`` in the stack's triggerer schedules ``ingest`` (the local lifecycle keeps the
default sensor DAG, so both ways run end to end).

The lifecycle is the short one (setup, initial run, promotion dev -> staging -> prod): every stage
runs on the aws backends once; drift and re-runs are the local test's business, their logic does
not depend on the backend. Each test checks an outcome where it lives: in S3, Glue and SageMaker
(through the test's own client, not the code's), and in Airflow's REST API.
"""

from __future__ import annotations

import os

import pytest
import yaml

from tests.aws.aws_conf import connection_variable, write_aws_conf
from tests.moto_server import unique_name

pytestmark = pytest.mark.e2e

ROWS = 400
ROLE = "arn:aws:iam::123456789012:role/mlops-lifecycle"
CONN_ID = "mlops_aws_e2e"
ENVIRONMENTS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def bucket(moto_server):
    name = unique_name("lifecycle")
    moto_server.client("s3").create_bucket(Bucket=name)
    moto_server.client("s3").put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture(scope="module")
def demo(tmp_path_factory, moto_server, bucket, lifecycle_stack):
    from mlops_demo.run import DemoOptions, LifecycleDemo, print_summary
    from tests.sagemaker_container import SageMakerTrainingContainer

    home = tmp_path_factory.mktemp("e2e-aws")
    conf = write_aws_conf(
        home / "conf", bucket, conn_id=CONN_ID, role_arn=ROLE, environments=ENVIRONMENTS, endpoint_wait_minutes=5
    )
    for env in ENVIRONMENTS:  # event-driven arrival; no hourly reconciliation run in the middle of the test
        path = conf / f"{env}.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["dataset"]["arrival"] = {**raw["dataset"]["arrival"], "via": "watcher", "reconcile_schedule": None}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    saved = dict(os.environ)
    for name in ("MLOPS_HOME", "MLOPS_ENV", "MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    extra = {"MLOPS_CONF_DIR": str(conf), connection_variable(CONN_ID): moto_server.connection_uri()}
    container = SageMakerTrainingContainer(moto_server).start()
    runner = LifecycleDemo(
        DemoOptions(
            home=home / "demo",
            rows=ROWS,
            phase_timeout=480,
            stop_when_done=False,
            extra_env=extra,
            skip=frozenset({"no-drift", "drift", "re-run"}),
        ),
        stack=lifecycle_stack,
    )
    try:
        result = runner.run()
        print_summary(result)
        assert result.ok, result.failures
        runner.container = container  # type: ignore[attr-defined]
        yield runner
    finally:
        runner.stop()
        container.close()
        os.environ.clear()
        os.environ.update(saved)


def _settings(env: str):
    from mlops_core.settings import load_settings

    return load_settings(env)


def test_no_run_failed_and_every_stage_ran(demo):
    client = demo.client
    for dag_id in ("ingest", "features", "monitor", "train", "evaluate_register", "deploy", "promote"):
        assert client.runs(dag_id, state=["success"]), f"{dag_id} never succeeded"
        assert not client.runs(dag_id, state=["failed"]), dag_id


def test_ingest_was_scheduled_by_the_asset_watcher_with_no_watch_dag(demo):
    """Every landed_files event came from the triggerer's watcher; no watch DAG ran; each ingest run
    was started by such an event (none by the reconciliation cron, which is off here)."""
    client = demo.client
    assert "watch_drop_zone" not in demo.dags
    assert "watch_drop_zone" not in {d["dag_id"] for d in client.dags()}  # its file defines no DAG here
    events = client.asset_events("landed_files")
    assert events, "no landed_files event"
    for event in events:
        assert event["extra"]["from_trigger"] is True, event
        payload = event["extra"]["payload"]
        assert payload["status"] == "success" and payload["files"], payload
        assert all(f["path"].startswith(str(demo.drop_zone)) for f in payload["files"]), payload
    assert {r["run_type"] for r in client.runs("ingest")} == {"asset_triggered"}


def test_dataset_versions_live_in_s3_with_checksums_and_version_ids(demo, moto_server, bucket):
    store = demo.dataset_store()
    versions = store.list_versions()
    assert versions and sum(v["row_count"] for v in versions) > 0
    s3 = moto_server.client("s3")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlops/dev/")
        for o in page.get("Contents", [])
    ]
    assert any("/versions/" in k or "datasets/" in k for k in keys), keys[:20]
    assert all(k.startswith("mlops/") for k in keys)
    head = s3.head_object(Bucket=bucket, Key=keys[0], ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256"), "written without an S3 checksum"
    assert store.read_version(versions[0]["version_id"]).shape[0] == versions[0]["row_count"]


def test_every_version_is_a_partition_of_its_glue_table(demo, moto_server):
    glue = moto_server.client("glue")
    versions = demo.dataset_store().list_versions()
    databases = [d["Name"] for d in glue.get_databases()["DatabaseList"] if d["Name"].endswith("_churn")]
    assert databases, "no Glue database for the dataset"
    partitions = [
        tuple(p["Values"])
        for db in databases
        for p in glue.get_partitions(DatabaseName=db, TableName="churn")["Partitions"]
    ]
    for manifest in versions:
        wanted = {(manifest["version_id"], day) for day in manifest["partitions"]}
        assert wanted <= set(partitions), manifest["version_id"]


def test_every_training_run_was_one_sagemaker_job(demo, moto_server):
    trains = demo.client.runs("train", state=["success"])
    jobs = moto_server.client("sagemaker").list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    ours = [j for j in jobs if j["TrainingJobName"] in demo.container.ran]
    assert len(ours) == len(trains) >= 1
    assert all(j["TrainingJobStatus"] == "Completed" for j in ours)


def test_the_champion_is_mirrored_and_approved_in_the_model_registry(demo, moto_server):
    from mlops_core.backends import model_registry

    settings = _settings("dev")
    champion = model_registry(settings).champion(settings.registered_model_name)
    assert champion is not None
    sm = moto_server.client("sagemaker")
    groups = sm.list_model_package_groups(MaxResults=100)["ModelPackageGroupSummaryList"]
    packages = [
        p
        for g in groups
        for p in sm.list_model_packages(ModelPackageGroupName=g["ModelPackageGroupName"], MaxResults=100)[
            "ModelPackageSummaryList"
        ]
    ]
    assert any(p["ModelApprovalStatus"] == "Approved" for p in packages), packages


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_serves_its_champion_from_an_in_service_endpoint(demo, moto_server, env):
    import json

    from mlops_airflow.backends import backends_for
    from mlops_core.backends import model_registry

    settings = _settings(env)
    champion = model_registry(settings).champion(settings.registered_model_name)
    assert champion is not None, f"no {env} champion"
    live = backends_for(settings).serving.live()
    assert live is not None and live.model_version == str(champion.version), live
    sm = moto_server.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=live.endpoint)
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InstanceType"] == settings.aws.serving_instance_type

    from mlops_core.demo_data import generate_day
    from mlops_core.training.model import prepare_features

    rows = prepare_features(generate_day(9, rows=3, seed=5), settings.load_contract())
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    answer = moto_server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=live.endpoint, Body=body, ContentType="application/json"
    )
    predictions = json.loads(answer["Body"].read())
    assert len(predictions.get("predictions", predictions)) == 3
