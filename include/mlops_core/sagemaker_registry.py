"""The SageMaker Model Registry as a mirror of MLflow (``backends.registry_mirror: sagemaker``).

MLflow stays the system of record. Each MLflow registered model (``<env>.<model>``) has a model
package group in SageMaker (``<env>-<model>``); each registered version becomes one model package
in it, pending approval, and then follows the promotion gate: ``Rejected`` with the gate's reasons,
``Approved`` when it becomes ``@champion``. What SageMaker keeps of a version:

- ``ModelPackageDescription``: ``MLflow <name> version <n>``, which is also how the mirror finds
  the package again, so every call is idempotent by (model, version) without a local record;
- ``CustomerMetadataProperties``: MLflow run id, model digest, git commit, training set, dataset
  versions, and the held-out metrics (values cleaned to the characters SageMaker accepts and cut to
  its 256-character limit);
- ``ModelMetrics``: the whole record (metrics and every lineage tag, uncut) as a JSON document in
  the environment's object store, linked as the model-quality statistics.

The boto3 SageMaker client is injected (``SageMakerHook(aws_conn_id).get_conn()`` in Airflow), so
this module never imports Airflow.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from mlops_core.aws_errors import is_missing as _is_missing
from mlops_core.registry_mirror import MirroredVersion

if TYPE_CHECKING:
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
_GROUP_NAME = re.compile(r"[^a-zA-Z0-9]+")
_METADATA_VALUE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)
_MAX_METADATA_VALUE = 256
_MAX_DESCRIPTION = 1024


def group_name(model_name: str) -> str:
    """The model package group of an MLflow registered model: ``dev.churn`` -> ``dev-churn``."""
    name = _GROUP_NAME.sub("-", model_name).strip("-")[:63].strip("-")
    if not name:
        raise ValueError(f"no SageMaker model package group name can be made from {model_name!r}")
    return name


def description(model_name: str, version: str) -> str:
    return f"MLflow {model_name} version {version}"


def metadata_value(text: str) -> str:
    """``text`` as SageMaker accepts a metadata value: its characters only, at most 256 of them."""
    cleaned = _METADATA_VALUE.sub("_", str(text))
    if len(cleaned) <= _MAX_METADATA_VALUE:
        return cleaned or "-"
    return cleaned[: _MAX_METADATA_VALUE - 12].rstrip() + " +truncated"


class SageMakerRegistryMirror:
    """Model packages in SageMaker that follow the MLflow registry (see the module docstring).

    :param client: a boto3 SageMaker client.
    :param store: the environment's object store; the full record of each version goes there.
    """

    def __init__(self, client: Any, store: ObjectStore) -> None:
        self.client = client
        self.store = store

    def __repr__(self) -> str:
        return f"SageMakerRegistryMirror(store={self.store!r})"

    # ----------------------------------------------------------------- finding
    def _ensure_group(self, group: str, model_name: str) -> None:
        try:
            self.client.describe_model_package_group(ModelPackageGroupName=group)
            return
        except Exception as exc:
            if not _is_missing(exc):
                raise
        log.info("Creating SageMaker model package group %s for %s", group, model_name)
        self.client.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription=f"Mirror of the MLflow registered model {model_name}",
        )

    def package_arn(self, model_name: str, version: str) -> str | None:
        """The package mirroring ``model_name`` version ``version``, or None when it was never mirrored."""
        wanted = description(model_name, str(version))
        paginator = self.client.get_paginator("list_model_packages")
        try:
            for page in paginator.paginate(ModelPackageGroupName=group_name(model_name)):
                for summary in page.get("ModelPackageSummaryList", []):
                    if summary.get("ModelPackageDescription") == wanted:
                        return str(summary["ModelPackageArn"])
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return None

    def _require(self, model_name: str, version: str) -> str:
        arn = self.package_arn(model_name, version)
        if arn is None:
            raise LookupError(
                f"{model_name} version {version} has no model package in SageMaker group {group_name(model_name)}; "
                "it is mirrored when evaluate_register (or promote) registers it"
            )
        return arn

    # ----------------------------------------------------------------- RegistryMirror
    def mirror(self, version: MirroredVersion) -> str | None:
        existing = self.package_arn(version.model_name, version.version)
        if existing is not None:
            log.info("%s version %s is already mirrored as %s", version.model_name, version.version, existing)
            return existing
        group = group_name(version.model_name)
        self._ensure_group(group, version.model_name)
        record_key = f"registry_mirror/{group}/{version.version}.json"
        record = {
            "model_name": version.model_name,
            "version": version.version,
            "model_uri": version.model_uri,
            "model_sha256": version.model_sha256,
            "metrics": version.metrics,
            "lineage": version.lineage,
        }
        self.store.put_bytes(record_key, json.dumps(record, indent=2, sort_keys=True).encode("utf-8"))
        answer = self.client.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=description(version.model_name, version.version),
            ModelApprovalStatus=PENDING,
            CustomerMetadataProperties=_metadata(version),
            ModelMetrics={
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": self.store.uri(record_key)}}
            },
        )
        arn = str(answer["ModelPackageArn"])
        log.info("Mirrored %s version %s as %s (pending approval)", version.model_name, version.version, arn)
        return arn

    def approve(self, model_name: str, version: str, *, approved_by: str | None, reason: str | None = None) -> None:
        why = reason or (f"@champion in MLflow; approved by {approved_by}" if approved_by else "@champion in MLflow")
        self._set_status(self._require(model_name, version), APPROVED, why)

    def reject(self, model_name: str, version: str, *, reason: str) -> None:
        self._set_status(self._require(model_name, version), REJECTED, reason)

    def _set_status(self, arn: str, status: str, why: str) -> None:
        """Set the package's approval status and description unless they are set already (a retry sends nothing)."""
        why = why[:_MAX_DESCRIPTION]
        described = self.client.describe_model_package(ModelPackageName=arn)
        before = str(described.get("ModelApprovalStatus", ""))
        if before == status and (described.get("ApprovalDescription") or "") == why:
            log.info("%s is %s already (%s)", arn, status, why)
            return
        self.client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=why)
        log.info("%s in SageMaker: %s -> %s (%s)", arn, before, status, why)


def _metadata(version: MirroredVersion) -> dict[str, str]:
    tags = version.lineage
    fields = {
        "mlflow_model": version.model_name,
        "mlflow_version": version.version,
        "mlflow_run_id": tags.get("mlops.run_id", ""),
        "model_sha256": version.model_sha256,
        "git_commit": tags.get("mlops.git_commit", ""),
        "training_set": tags.get("mlops.training_set", ""),
        "dataset_versions": " ".join(v for v in tags.get("mlops.dataset_versions", "").split(",") if v),
        "promoted_from": tags.get("mlops.promoted_from", ""),
        **{f"metric_{name}": repr(value) for name, value in sorted(version.metrics.items())},
    }
    return {key[:128]: metadata_value(value) for key, value in fields.items() if value}
