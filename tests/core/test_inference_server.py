"""The SageMaker serving container's scoring server, run locally under SageMaker's contract.

The `serve` script of the image (include/sagemaker/serve) starts the server with the model under a
model folder as SageMaker unpacks it, the recorded digest in MLOPS_MODEL_SHA256 and the port in
SAGEMAKER_BIND_TO_PORT; the tests talk HTTP to it like SageMaker and its clients do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TOY_FEATURES, register_toy_model, toy_frame

from mlops_core.model_integrity import _download_uri
from mlops_core.ports import free_port
from mlops_core.registry import ModelRegistry
from mlops_core.serving import dataframe_split_payload

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "include" / "sagemaker" / "serve"
MODEL = "dev.container"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A registered skops model: its files as SageMaker would unpack them, and its recorded digest."""
    import mlflow.artifacts

    root = tmp_path_factory.mktemp("container")
    registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", root / "artifacts", "container-tests")
    data = toy_frame(80, 3)
    labels = (data["tenure"] < 40).astype(int)
    version = register_toy_model(registry, MODEL, data, labels, run_name="container")
    # the model's own files, as the deployer packs them into model.tar.gz
    source = _download_uri(registry.model_uri(MODEL, version), registry.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(root / "opt-ml-model")))
    return {
        "folder": folder,
        "sha256": registry.model_sha256(MODEL, version),
        "rows": data[TOY_FEATURES].head(6),
        "expected": [int(p) for p in registry.load_model(MODEL, version).predict(data[TOY_FEATURES].head(6))],
    }


class Container:
    def __init__(self, model_dir: Path, sha256: str | None, **env: str) -> None:
        self.port = free_port()
        environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "LANG")}
        environ.update(PYTHON=sys.executable, SAGEMAKER_BIND_TO_PORT=str(self.port), **env)
        if sha256:
            environ["MLOPS_MODEL_SHA256"] = sha256
        self.proc = subprocess.Popen(
            [str(SERVE), "serve", "--model-dir", str(model_dir), "--host", "127.0.0.1"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        headers = {"Content-Type": content_type}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)  # noqa: S310 - loopback http
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310 - loopback http
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ping(self, until: int, timeout: float = 120) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            try:
                last = self.request("GET", "/ping")
                if last[0] == until:
                    return last
            except OSError:
                pass
            assert self.proc.poll() is None, self.proc.stdout.read().decode() if self.proc.stdout else ""
            time.sleep(0.2)
        raise AssertionError(f"/ping never answered {until}; last {last}")

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out.decode()


@pytest.fixture(scope="module")
def container(logged):
    box = Container(logged["folder"], logged["sha256"])
    try:
        box.wait_ping(200)
        yield box
    finally:
        box.stop()


def test_ping_and_invocations_score_like_the_registered_model(container, logged):
    status, body = container.request("POST", "/invocations", dataframe_split_payload(logged["rows"]))
    assert status == 200, body
    assert json.loads(body)["predictions"] == logged["expected"]
    csv = logged["rows"].to_csv(index=False).encode()
    status, body = container.request("POST", "/invocations", csv, "text/csv")
    assert status == 200 and json.loads(body)["predictions"] == logged["expected"]
    records = json.dumps({"dataframe_records": logged["rows"].to_dict(orient="records")}).encode()
    assert json.loads(container.request("POST", "/invocations", records)[1])["predictions"] == logged["expected"]


def test_bad_requests_get_clear_answers_and_the_server_stays_up(container, logged):
    status, body = container.request("POST", "/invocations", b"{not json")
    assert status == 400 and "message" in json.loads(body)
    missing = dataframe_split_payload(logged["rows"][["tenure"]])
    assert container.request("POST", "/invocations", missing)[0] == 400
    assert container.request("POST", "/invocations", b"x", "application/x-pickle")[0] == 415
    assert container.request("GET", "/nothing")[0] == 404
    huge = b"0" * (7 * 1024 * 1024)
    with _answer_or_reset():
        status, _ = container.request("POST", "/invocations", huge)
        assert status == 413
    assert container.request("GET", "/ping")[0] == 200


class _answer_or_reset:
    """A 413 sent before the body was read may reach the client as a reset instead: both are refusals."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (ConnectionError, urllib.error.URLError))


def test_a_changed_model_is_never_loaded(logged, tmp_path):
    changed = tmp_path / "model"
    shutil.copytree(logged["folder"], changed)
    (changed / "MLmodel").write_text((changed / "MLmodel").read_text() + "\n# changed\n")
    box = Container(changed, logged["sha256"])
    try:
        _, body = box.wait_ping(503)
        assert "do not match the digest recorded" in body
        assert box.request("POST", "/invocations", dataframe_split_payload(logged["rows"]))[0] == 503
    finally:
        log = box.stop()
    assert "Not serving" in log


def test_without_a_recorded_digest_nothing_is_served(logged):
    box = Container(logged["folder"], None)
    try:
        _, body = box.wait_ping(503)
        assert "has no recorded digest" in body
    finally:
        box.stop()
