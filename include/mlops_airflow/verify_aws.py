"""Check an environment's aws backends against the account they point at, before the first DAG run.

    python -m mlops_airflow.verify_aws --env prod            # reads and one small S3 object; costs nothing
    python -m mlops_airflow.verify_aws --env prod --train    # also one real training job (bills minutes)

Run it where Airflow runs, with the same connection (``aws.conn_id``: ``AIRFLOW_CONN_<ID>``, a
secrets backend or the metadata database). Every check uses only actions that
``include/aws/iam-policy.json`` grants, on the resources the DAGs will touch, so an
``AccessDenied`` here is the one the DAG would hit; "not found" answers are fine before the first
run (the DAGs create what they need). Prints one line per check and exits 1 if any failed.

What it cannot see without spending money: that SageMaker can pull the images and read the
store as ``aws.sagemaker_role_arn``; ``--train`` runs the smallest real job to prove that
(``ml.m5.large`` bills about USD 0.12 an hour, per second with a one-minute minimum), and no
endpoint is created (``make demo`` with ``backends.serving: aws`` on a test account does that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_core.settings import Settings

AWS_CONCERNS = ("storage", "compute", "registry_mirror", "serving", "catalog")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _run(name: str, probe: Callable[[], str]) -> Check:
    from mlops_core.aws_errors import aws_error

    try:
        return Check(name, True, probe())
    except Exception as exc:  # every failure becomes a line of the report, with AWS's own words
        code, message = aws_error(exc)
        return Check(name, False, f"{code}: {message}" if code else f"{type(exc).__name__}: {exc}")


def _missing_is_fine(call: Callable[[], Any], found: str, missing: str) -> str:
    from mlops_core.aws_errors import is_missing

    try:
        call()
    except Exception as exc:
        if is_missing(exc):
            return missing
        raise
    return found


def checks(settings: Settings, *, train: bool = False, train_timeout: float = 1800.0) -> list[Check]:
    """Every check for ``settings``' aws concerns, in the order a DAG run needs them."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from mlops_airflow.hooks import aws

    backends = settings.backends
    used = [c for c in AWS_CONCERNS if getattr(backends, c) in ("aws", "sagemaker", "glue")]
    if not used:
        return [Check("settings", False, f"no backend of environment {settings.env!r} is aws: nothing to verify")]
    out = [Check("settings", True, f"environment {settings.env}: aws for {', '.join(used)}")]

    def identity() -> str:
        sts = AwsBaseHook(aws_conn_id=settings.aws.conn_id, client_type="sts").get_conn()
        who = sts.get_caller_identity()  # needs no permission: proves the credentials resolve
        return f"connection {settings.aws.conn_id!r} is {who['Arn']} (account {who['Account']})"

    out.append(_run("credentials", identity))
    if not out[-1].ok:
        return out

    store = aws.s3_object_store(settings) if backends.storage == "aws" else None
    if store is not None:

        def round_trip() -> str:
            key = f"_verify/{uuid.uuid4().hex}.json"
            payload = json.dumps({"written_by": "mlops_airflow.verify_aws", "at": time.time()}).encode()
            version = store.put_bytes(key, payload)  # with a SHA-256 checksum S3 verifies
            try:
                if store.get_bytes(key) != payload:  # checked against the recorded digest too
                    raise RuntimeError("read back different bytes")
                if version and store.get_bytes(key, object_version=version) != payload:  # as manifests pin parts
                    raise RuntimeError(f"read back different bytes for object version {version}")
                if key not in store.list_keys("_verify/"):
                    raise RuntimeError("the object is not listed under the store's prefix")
            finally:
                store.delete(key)
            versioning = f"versioning on (version {version} read back by id)" if version else "versioning off"
            return f"{store.uri()}: put, checksum-verified get, list and delete work; {versioning}"

        out.append(_run("s3 store", round_trip))

    if backends.catalog == "glue":
        catalog = aws.glue_catalog(settings)
        dataset = settings.load_contract().name
        database = catalog.database(dataset)

        out.append(
            _run(
                "glue catalog",
                lambda: _missing_is_fine(
                    lambda: catalog.client.get_table(DatabaseName=database, Name=dataset),
                    f"table {database}.{dataset} is readable",
                    f"{database}.{dataset} does not exist yet (ingest creates it)",
                ),
            )
        )

    if backends.compute == "aws":
        compute = aws.sagemaker_compute(settings, store)
        no_such_job = f"mlops-verify-{uuid.uuid4().hex[:8]}"
        out.append(
            _run(
                "sagemaker training",
                lambda: _missing_is_fine(
                    lambda: compute.client.describe_training_job(TrainingJobName=no_such_job),
                    "DescribeTrainingJob answered",
                    "DescribeTrainingJob is allowed (no such job, as expected)",
                ),
            )
        )
        if train:
            out.append(_run("sagemaker training job", lambda: _train(settings, compute, train_timeout)))

    if backends.registry_mirror == "sagemaker":
        from mlops_core.sagemaker_registry import group_name

        mirror = aws.sagemaker_registry_mirror(settings)
        group = group_name(settings.registered_model_name)
        out.append(
            _run(
                "sagemaker model registry",
                lambda: _missing_is_fine(
                    lambda: mirror.client.describe_model_package_group(ModelPackageGroupName=group),
                    f"model package group {group} is readable",
                    f"model package group {group} does not exist yet (evaluate_register creates it)",
                ),
            )
        )

    if backends.serving == "aws":
        serving = aws.sagemaker_serving(settings, store)

        def endpoint() -> str:
            live = serving.live()
            if live is None:
                return f"endpoint {serving.name} does not exist yet (deploy creates it)"
            return f"endpoint {serving.name} serves version {live.model_version} (healthy: {live.healthy})"

        out.append(_run("sagemaker endpoint", endpoint))
    return out


def _train(settings: Settings, compute: Any, timeout: float) -> str:
    """The smallest real job: the project's entrypoint, in the configured image, on 300 generated rows."""
    import io

    from mlops_core.demo_data import generate_day
    from mlops_core.stages.train import training_job_spec

    name = f"mlops-verify-{uuid.uuid4().hex[:12]}"
    prefix = f"_verify/{name}"
    for part, day in (("train", 0), ("holdout", 1)):
        buffer = io.BytesIO()
        generate_day(day, rows=300, seed=1).to_parquet(buffer, index=False)
        compute.store.put_bytes(f"{prefix}/{part}.parquet", buffer.getvalue())
    compute.submit(training_job_spec(settings, {"key": prefix, "holdout_rows": 300}, name, compute.store))
    deadline = time.monotonic() + timeout
    while True:
        job = compute.describe(name)
        if job.status in ("Completed", "Failed", "Stopped"):
            break
        if time.monotonic() > deadline:
            compute.stop(name)
            raise TimeoutError(f"{name} still {job.status} after {timeout:.0f}s; stopped it")
        time.sleep(2)
    if job.status != "Completed":
        raise RuntimeError(f"{name} ended {job.status}: {job.failure_reason}")
    return f"{name} completed: SageMaker ran the image as the role, read the channels and wrote the model"


def main(argv: list[str] | None = None) -> int:
    from mlops_core.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m mlops_airflow.verify_aws", description=__doc__.split("\n")[0])
    parser.add_argument("--env", default=None, help="environment to check (default: MLOPS_ENV or dev)")
    parser.add_argument("--train", action="store_true", help="also run one real, small SageMaker training job")
    args = parser.parse_args(argv)
    settings = load_settings(args.env)
    results = checks(settings, train=args.train)
    width = max(len(c.name) for c in results)
    for c in results:
        sys.stdout.write(f"{'ok  ' if c.ok else 'FAIL'} {c.name:<{width}}  {c.detail}\n")
    return 0 if all(c.ok for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
