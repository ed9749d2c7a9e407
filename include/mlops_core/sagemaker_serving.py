"""A SageMaker real-time endpoint per environment: the ``Serving`` target of ``backends.serving: aws``.

Deploying registry version ``v`` (files with digest ``d``):

1. the model's own files are fetched from the registry and checked against ``d`` and the
   skops-only rules (:func:`mlops_core.model_integrity.check_model_files`), then packed as
   ``model.tar.gz`` into the store (``serving/<endpoint>/<config>/model.tar.gz``);
2. a SageMaker model (our serving image, ``aws.inference_image``, with ``MLOPS_MODEL_SHA256=d`` in its
   environment: the container checks the files again before loading them) and an endpoint config
   named after the endpoint, the version and the digest (``<endpoint>-v<v>-<d[:8]>``);
3. the endpoint is created (first deploy) or updated to that config (blue/green: SageMaker brings
   the new fleet up before it moves traffic; ``aws.deployment_config`` -- traffic shifting,
   auto-rollback alarms -- is passed through as given);
   With ``capture_destination`` set, the config carries a ``DataCaptureConfig`` (inputs and
   outputs, ``capture_sampling_percent`` of the requests, JSON and CSV recorded as text) writing
   under ``captures/<model>/<env>/sagemaker/`` of the store (:func:`mlops_core.capture.sagemaker_capture_uri`),
   which :func:`mlops_core.capture.read_captures` reads as capture records; the config's name then
   ends with a digest of that capture setting, so a changed setting is a new config;
4. the stage waits for ``InService`` and then checks that the endpoint really runs the config it
   asked for: SageMaker rolls an update back on its own (an alarm, a failed health check) and still
   ends ``InService``, so "the update succeeded" is only true when the live config is ours.

Nothing here names a process or a port: :class:`~mlops_core.serving_target.LiveModel.endpoint` is
the endpoint's name. What is live is read from SageMaker (the endpoint's current config) and the
record this target keeps per config in the store (``serving/<endpoint>/configs/<config>.json``:
version, digest, when), so any process can answer. Rolling back puts the config that was live
before the current one back (``serving/<endpoint>/history.json``). The boto3 clients are injected
(``SageMakerHook`` and a ``sagemaker-runtime`` client of the same connection in Airflow).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.aws_errors import already_exists as _exists_already
from mlops_core.aws_errors import aws_error as _error
from mlops_core.aws_errors import is_missing as _missing
from mlops_core.serving import DeploymentFailed, SmokeTestFailed, dataframe_split_payload
from mlops_core.serving_target import LiveModel, SmokeResult

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"[^a-zA-Z0-9]+")
HISTORY_LIMIT = 50


def sagemaker_name(*parts: str, limit: int = 63) -> str:
    """Parts joined as a SageMaker resource name: letters, digits and ``-``, at most ``limit`` characters."""
    name = _NAME.sub("-", "-".join(parts)).strip("-")
    return name[:limit].strip("-")


@dataclass(frozen=True)
class SageMakerEndpointSettings:
    """What an endpoint needs (``aws.*`` settings)."""

    endpoint_name: str
    role_arn: str
    image: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    deployment_config: dict[str, Any] = field(default_factory=dict)
    wait_seconds: int = 1800
    poll_seconds: float = 15.0
    capture_destination: str | None = None  # s3:// prefix of the endpoint's data capture; None: no capture
    capture_sampling_percent: int = 100

    def data_capture_config(self) -> dict[str, Any] | None:
        """The ``DataCaptureConfig`` of CreateEndpointConfig, or None without a capture destination."""
        if not self.capture_destination:
            return None
        return {
            "EnableCapture": True,
            "InitialSamplingPercentage": int(self.capture_sampling_percent),
            "DestinationS3Uri": self.capture_destination,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]},
        }


class SageMakerServing:
    """One SageMaker real-time endpoint serving an environment's champion.

    :param client: a boto3 SageMaker client.
    :param runtime: a boto3 ``sagemaker-runtime`` client (smoke tests).
    :param store: the environment's object store (model archives and this target's records).
    :param endpoint: names, role, image, instances, deployment config (:class:`SageMakerEndpointSettings`).
    :param tracking_uri: the MLflow registry the model files come from.
    """

    def __init__(
        self, client: Any, runtime: Any, store: ObjectStore, endpoint: SageMakerEndpointSettings, tracking_uri: str
    ) -> None:
        self.client = client
        self.runtime = runtime
        self.store = store
        self.endpoint = endpoint
        self.tracking_uri = tracking_uri
        self.name = endpoint.endpoint_name

    def __repr__(self) -> str:
        return f"SageMakerServing(endpoint={self.name!r})"

    # ----------------------------------------------------------------- records
    def _record_key(self, config: str) -> str:
        return f"serving/{self.name}/configs/{config}.json"

    def _history_key(self) -> str:
        return f"serving/{self.name}/history.json"

    def _history(self) -> list[str]:
        if not self.store.exists(self._history_key()):
            return []
        history: list[str] = json.loads(self.store.get_bytes(self._history_key()))
        return history

    def _remember(self, config: str) -> None:
        history = [c for c in self._history() if c != config] + [config]
        self.store.put_bytes(self._history_key(), json.dumps(history[-HISTORY_LIMIT:]).encode())

    def _describe(self) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.client.describe_endpoint(EndpointName=self.name)
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return answer

    def _live_from(self, described: dict[str, Any]) -> LiveModel | None:
        config = str(described["EndpointConfigName"])
        if not self.store.exists(self._record_key(config)):
            return None  # a config this target did not make: nothing it can vouch for
        record = json.loads(self.store.get_bytes(self._record_key(config)))
        return LiveModel(
            target=f"sagemaker:{self.name}",
            model_version=str(record["model_version"]),
            model_sha256=str(record["model_sha256"]),
            endpoint=self.name,
            deployed_at=str(record["deployed_at"]),
            healthy=described.get("EndpointStatus") == "InService",
        )

    # ----------------------------------------------------------------- Serving
    def live(self) -> LiveModel | None:
        described = self._describe()
        return None if described is None else self._live_from(described)

    def verify(self, expected_version: str, expected_sha256: str | None = None) -> bool:
        live = self.live()
        return (
            live is not None
            and live.healthy
            and live.model_version == str(expected_version)
            and (expected_sha256 is None or live.model_sha256 == expected_sha256)
        )

    def deploy(self, model_uri: str, model_version: str, *, expected_sha256: str, startup_timeout: int) -> LiveModel:
        model_version = str(model_version)
        live = self.live()
        if live and live.healthy and live.model_version == model_version and live.model_sha256 == expected_sha256:
            log.info("Endpoint %s already serves version %s", self.name, model_version)
            return live
        config = self._config_name(model_version, expected_sha256)
        archive = self._package(model_uri, model_version, expected_sha256, config)
        self._ensure_model(config, archive, expected_sha256)
        self._ensure_config(config)
        self.store.put_bytes(
            self._record_key(config),
            json.dumps(
                {
                    "model_version": model_version,
                    "model_sha256": expected_sha256,
                    "model_uri": model_uri,
                    "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            ).encode(),
        )
        live = self._switch_to(config)
        wanted = self.endpoint.data_capture_config()
        if wanted is not None and self.live_capture() != wanted:
            raise DeploymentFailed(
                f"endpoint {self.name} serves version {model_version} but its data capture is "
                f"{self.live_capture()}, not the one asked for {wanted}: delete endpoint config {config} "
                "(it was created with other capture settings) and deploy again"
            )
        return live

    def _config_name(self, model_version: str, expected_sha256: str) -> str:
        capture = self.endpoint.data_capture_config()
        if capture is None:
            return sagemaker_name(self.name, f"v{model_version}", expected_sha256[:8])
        digest = hashlib.sha256(json.dumps(capture, sort_keys=True).encode()).hexdigest()[:6]
        return sagemaker_name(
            sagemaker_name(self.name, limit=46), f"v{model_version}", expected_sha256[:8], f"c{digest}"
        )

    def live_capture(self) -> dict[str, Any] | None:
        """The ``DataCaptureConfig`` of the config the endpoint runs now (None: no endpoint or no capture)."""
        described = self._describe()
        if described is None:
            return None
        config = self.client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        capture: dict[str, Any] | None = config.get("DataCaptureConfig") or None
        return capture

    def _switch_to(self, config: str) -> LiveModel:
        described = self._describe()
        if described is None:
            log.info("Creating endpoint %s with config %s", self.name, config)
            self.client.create_endpoint(EndpointName=self.name, EndpointConfigName=config)
        else:
            log.info("Updating endpoint %s to config %s (was %s)", self.name, config, described["EndpointConfigName"])
            request: dict[str, Any] = {"EndpointName": self.name, "EndpointConfigName": config}
            if self.endpoint.deployment_config:
                request["DeploymentConfig"] = self.endpoint.deployment_config
            self.client.update_endpoint(**request)
        described = self._wait()
        if described["EndpointConfigName"] != config:
            raise DeploymentFailed(
                f"endpoint {self.name} is InService with config {described['EndpointConfigName']}, not {config}: "
                "SageMaker rolled the update back"
                + (f" ({described['FailureReason']})" if described.get("FailureReason") else "")
            )
        self._remember(config)
        live = self._live_from(described)
        if live is None:  # pragma: no cover - the record was written before the switch
            raise DeploymentFailed(f"endpoint {self.name}: no record of config {config}")
        return live

    def _wait(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.endpoint.wait_seconds
        while True:
            described = self._describe()
            if described is None:
                raise DeploymentFailed(f"endpoint {self.name} disappeared while deploying")
            status = described.get("EndpointStatus")
            if status == "InService":
                return described
            if status == "Failed":
                raise DeploymentFailed(f"endpoint {self.name} failed: {described.get('FailureReason')}")
            if time.monotonic() > deadline:
                raise DeploymentFailed(f"endpoint {self.name} still {status} after {self.endpoint.wait_seconds}s")
            time.sleep(self.endpoint.poll_seconds)

    def _package(self, model_uri: str, model_version: str, expected_sha256: str, config: str) -> str:
        """``model.tar.gz`` of the verified original files in the store; its S3 URI."""
        import mlflow.artifacts

        from mlops_core.model_integrity import check_model_files, download_uri

        key = f"serving/{self.name}/{config}/model.tar.gz"
        if not self.store.exists(key):
            with tempfile.TemporaryDirectory(prefix="mlops-sagemaker-model-") as tmp:
                source = download_uri(model_uri, self.tracking_uri)
                folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
                check_model_files(folder, expected_sha256, f"{model_uri} (version {model_version})", source=source)
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                        tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
                self.store.put_bytes(key, buffer.getvalue())
        return self.store.uri(key)

    def _ensure_model(self, name: str, archive: str, expected_sha256: str) -> None:
        try:
            self.client.create_model(
                ModelName=name,
                ExecutionRoleArn=self.endpoint.role_arn,
                PrimaryContainer={
                    "Image": self.endpoint.image,
                    "ModelDataUrl": archive,
                    "Environment": {"MLOPS_MODEL_SHA256": expected_sha256},
                },
            )
        except Exception as exc:
            if not _exists_already(exc):
                raise

    def _ensure_config(self, name: str) -> None:
        request: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "main",
                    "ModelName": name,
                    "InitialInstanceCount": self.endpoint.instance_count,
                    "InstanceType": self.endpoint.instance_type,
                }
            ],
        }
        capture = self.endpoint.data_capture_config()
        if capture is not None:
            request["DataCaptureConfig"] = capture
        try:
            self.client.create_endpoint_config(**request)
        except Exception as exc:
            if not _exists_already(exc):
                raise

    def smoke_test(self, rows: pd.DataFrame) -> SmokeResult:
        if len(rows) == 0:
            raise SmokeTestFailed("smoke test needs at least one row")
        live = self.live()
        if live is None:
            raise SmokeTestFailed(f"nothing is deployed on endpoint {self.name}; deploy a model first")
        started = time.perf_counter()
        try:
            answer = self.runtime.invoke_endpoint(
                EndpointName=self.name, ContentType="application/json", Body=dataframe_split_payload(rows)
            )
        except Exception as exc:
            code, message = _error(exc)
            raise SmokeTestFailed(f"endpoint {self.name} refused {len(rows)} row(s): {code} {message}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text = answer["Body"].read().decode("utf-8", errors="replace")
        try:
            predictions = json.loads(text)["predictions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SmokeTestFailed(
                f"endpoint {self.name} answered something else than predictions: {text[:2000]}"
            ) from exc
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            raise SmokeTestFailed(f"sent {len(rows)} row(s) to {self.name}, got: {text[:2000]}")
        return SmokeResult(predictions, round(latency_ms, 1), live.model_version, self.name)

    def rollback(self, *, startup_timeout: int) -> LiveModel | None:
        described = self._describe()
        current = None if described is None else described["EndpointConfigName"]
        earlier = [c for c in self._history() if c != current]
        if not earlier:
            return None
        log.warning("Rolling endpoint %s back from %s to %s", self.name, current, earlier[-1])
        return self._switch_to(earlier[-1])

    def stop(self) -> LiveModel | None:
        described = self._describe()
        if described is None:
            return None
        live = self._live_from(described)
        self.client.delete_endpoint(EndpointName=self.name)
        log.warning("Deleted endpoint %s", self.name)
        return live
