"""``python -m mlops_airflow.verify_aws``: the pre-flight check of an environment's aws backends, on moto.

The checks run through the same hooks and connection as the DAGs; here the connection points at
the session's moto server. A real account is the tool's business (README, "Verify against your
account"); what this proves is that each check passes when the backends work, and fails with AWS's
own words, without stopping the other checks' report, when they do not.
"""

from __future__ import annotations

from tests.aws.aws_conf import connection_variable, write_aws_conf
from tests.moto_server import unique_name
from tests.sagemaker_container import SageMakerTrainingContainer

ROLE = "arn:aws:iam::123456789012:role/mlops-verify"


def _conf(tmp_path, monkeypatch, moto_server, bucket: str):
    monkeypatch.setenv(connection_variable("mlops_aws_verify"), moto_server.connection_uri())
    conf = write_aws_conf(
        tmp_path / "conf",
        bucket,
        conn_id="mlops_aws_verify",
        role_arn=ROLE,
        # its own Glue databases: the session's moto server keeps what other tests registered (mlops_dev_churn)
        glue_database_prefix=unique_name("verify").replace("-", "_"),
    )
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))


def test_every_check_passes_on_a_working_account_and_a_real_job_trains(
    mlops_home, moto_server, tmp_path, monkeypatch, capsys
):
    from mlops_airflow.verify_aws import main

    bucket = unique_name("verify")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    _conf(tmp_path, monkeypatch, moto_server, bucket)
    jobs_before = moto_server.calls("sagemaker", "CreateTrainingJob")
    container = SageMakerTrainingContainer(moto_server).start()
    try:
        code = main(["--env", "dev", "--train"])
    finally:
        container.close()
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split()[1]: line for line in out.splitlines()}
    assert "FAIL" not in out
    for check in ("settings", "credentials", "s3", "glue", "sagemaker"):
        assert check in lines, out
    assert "does not exist yet (ingest creates it)" in out  # nothing ingested: fine before the first run
    assert "does not exist yet (deploy creates it)" in out
    assert "completed" in out and len(container.ran) == 1
    assert moto_server.calls("sagemaker", "CreateTrainingJob") == jobs_before + 1
    leftovers = moto_server.client("s3").list_objects_v2(Bucket=bucket, Prefix="mlops/dev/_verify/")
    assert all("/mlops-verify-" in o["Key"] for o in leftovers.get("Contents", [])), "the probe object was not deleted"


def test_a_missing_bucket_fails_its_check_with_awss_words_and_the_exit_code(
    mlops_home, moto_server, tmp_path, monkeypatch, capsys
):
    from mlops_airflow.verify_aws import main

    _conf(tmp_path, monkeypatch, moto_server, unique_name("absent"))  # never created
    code = main(["--env", "dev"])
    out = capsys.readouterr().out
    assert code == 1
    s3_line = next(line for line in out.splitlines() if " s3 store " in f" {line} ")
    assert s3_line.startswith("FAIL") and "NoSuchBucket" in s3_line, out
    assert any(line.startswith("ok") and "credentials" in line for line in out.splitlines()), out


def test_an_environment_without_aws_backends_says_so(mlops_home, capsys):
    from mlops_airflow.verify_aws import main

    assert main(["--env", "dev"]) == 1
    assert "nothing to verify" in capsys.readouterr().out
