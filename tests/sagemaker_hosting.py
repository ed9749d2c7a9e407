"""SageMaker hosting, played by the tests: moto's InvokeEndpoint forwarded to our serving container, run locally.

moto records endpoints but serves nothing: its ``InvokeEndpoint`` answers canned bytes for any
name. :func:`install` replaces it with what SageMaker does: find the endpoint (unknown or not
``InService``: ``ValidationError``), its endpoint config's first production variant and that
variant's model; start the model's container once -- our ``serve`` script
(``include/sagemaker/serve``) with the model's ``model.tar.gz`` unpacked as its ``/opt/ml/model``
and the model's container ``Environment`` (``MLOPS_MODEL_SHA256``) -- and forward the request to
its ``/invocations``. A container answer other than 200 becomes SageMaker's ``ModelError`` with
the original status and message. So the deploy stage's smoke test scores real rows with the real
model through the real container contract.

Not reproduced: several variants and traffic weights (the first variant takes every request),
instance counts, autoscaling, data capture.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlops_core.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "include" / "sagemaker" / "serve"
ACCOUNT = "123456789012"
_containers: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}  # model name -> (process, url, folder)
_lock = threading.Lock()


def _model_container(region: str, endpoint_name: str) -> tuple[str, dict[str, Any]]:
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[ACCOUNT][region]
    endpoint = backend.endpoints.get(endpoint_name)
    if endpoint is None:
        raise ValidationError(message=f"Endpoint {endpoint_name} of account {ACCOUNT} not found.")
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f"Endpoint {endpoint_name} is {endpoint.endpoint_status}, not InService.")
    variant = backend.endpoint_configs[endpoint.endpoint_config_name].production_variants[0]
    model = backend._models[variant["ModelName"]]
    return model.model_name, dict(model.primary_container or {})


def _start(model_name: str, container: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str, str]:
    from moto.s3.models import s3_backends

    bucket, _, key = container["ModelDataUrl"][len("s3://") :].partition("/")
    data = s3_backends[ACCOUNT]["global"].get_object(bucket, key).value
    folder = tempfile.mkdtemp(prefix=f"sagemaker-model-{model_name}-")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "LANG")}
    env.update({str(k): str(v) for k, v in (container.get("Environment") or {}).items()})
    env.update(PYTHON=sys.executable, SAGEMAKER_BIND_TO_PORT=str(port))
    proc = subprocess.Popen(
        [str(SERVE), "serve", "--model-dir", folder, "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}", folder


def _request(url: str, data: bytes | None, content_type: str, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 - loopback http
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            last = _request(f"{url}/ping", None, "text/plain", 5)
            if last[0] in (200, 503) and last[1] != b"not serving: loading":
                return last
        except OSError:
            pass
        time.sleep(0.2)
    return last


def invoke(region: str, endpoint_name: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    """SageMaker's InvokeEndpoint: the model container's answer (status, body)."""
    model_name, container = _model_container(region, endpoint_name)
    with _lock:
        if model_name not in _containers or _containers[model_name][0].poll() is not None:
            _containers[model_name] = _start(model_name, container)
        proc, url, _ = _containers[model_name]
    status, answer = _ready(url, proc)
    if status != 200:
        return status, answer
    return _request(f"{url}/invocations", body, content_type, 60)


def install() -> None:
    from urllib.parse import unquote

    from moto.core.exceptions import ServiceException
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    class ModelError(ServiceException):
        code = "ModelError"

    def invoke_endpoint(self: Any) -> Any:
        name = unquote(self.path.split("/")[2])  # POST /endpoints/<name>/invocations
        content_type = self.headers.get("Content-Type", "application/json")
        body = self.raw_body if isinstance(self.raw_body, bytes) else str(self.body).encode("utf-8")
        status, answer = invoke(self.region, name, body, content_type)  # ValidationError propagates
        if status != 200:
            message = answer.decode(errors="replace")[:1000]
            error = ModelError(f'Received client error ({status}) from primary with message "{message}"')
            error.OriginalStatusCode = status  # type: ignore[attr-defined]
            error.OriginalMessage = message  # type: ignore[attr-defined]
            raise error
        return 200, {"Content-Type": "application/json", "x-Amzn-Invoked-Production-Variant": "main"}, answer

    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint  # type: ignore[method-assign]


def stop_all() -> None:
    import shutil

    with _lock:
        for proc, _url, folder in _containers.values():
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(folder, ignore_errors=True)
        _containers.clear()
