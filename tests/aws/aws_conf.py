"""A conf folder whose environments use the aws backends, on a bucket of the session's moto server.

The tests that run our code on aws backends (the operator, the pre-flight check, the all-aws
lifecycle) build it one way: a copy of ``include/conf`` (``MLOPS_CONF_DIR``) in which each chosen
environment's ``backends`` are set, its ``storage.root`` is ``s3://<bucket>/mlops/<env>``, its
``aws`` section names the Airflow connection, the SageMaker role and images, and its contract is
the repository's (an absolute path: the copy is elsewhere).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

TRAINING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlops-training:1"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlops-inference:1"
ALL_AWS: Mapping[str, str] = {
    "storage": "aws",
    "compute": "aws",
    "registry_mirror": "sagemaker",
    "serving": "aws",
    "catalog": "glue",
}


def connection_variable(conn_id: str) -> str:
    """The environment variable an Airflow connection ``conn_id`` is read from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def write_aws_conf(
    folder: Path,
    bucket: str,
    *,
    conn_id: str,
    role_arn: str,
    environments: Iterable[str] = ("dev",),
    backends: Mapping[str, str] = ALL_AWS,
    **aws: Any,
) -> Path:
    """Copy ``include/conf`` to ``folder`` (which must not exist) and point ``environments`` at aws.

    ``backends`` are set over the file's own (the rest stay local); ``aws`` adds to or overrides the
    ``aws`` section (e.g. ``glue_database_prefix``, ``endpoint_wait_minutes``). Returns ``folder``.
    """
    shutil.copytree(REPO / "include" / "conf", folder)
    for env in environments:
        path = folder / f"{env}.yaml"
        conf = yaml.safe_load(path.read_text())
        conf["backends"] = {**conf["backends"], **backends}
        conf["storage"] = {"root": f"s3://{bucket}/mlops/{env}"}
        conf["aws"] = {
            "conn_id": conn_id,
            "sagemaker_role_arn": role_arn,
            "training_image": TRAINING_IMAGE,
            "inference_image": INFERENCE_IMAGE,
            **aws,
        }
        conf["dataset"]["contract"] = str(REPO / "include" / "contracts" / "churn.yaml")
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return folder
