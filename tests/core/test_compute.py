"""The local training-job service: real detached jobs, described and stopped from other processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlops_core.compute import (
    JobDescription,
    JobNameInUse,
    JobNotFound,
    JobSpec,
    LocalJobCompute,
    download_prefix,
    object_key,
    relative_key,
)
from mlops_core.processes import group_alive, pid_alive
from mlops_core.storage import LocalObjectStore

ENTRYPOINT = ("python", "-m", "mlops_core.training.entrypoint")


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter that runs ``body`` with the entrypoint's arguments (failure/timeout paths)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


SLEEPER = "import time\ntime.sleep(120)\n"


def spec(store: LocalObjectStore, name: str, **changes) -> JobSpec:
    values = {
        "name": name,
        "entrypoint": ENTRYPOINT,
        "inputs": {},
        "output_uri": store.uri("training_jobs"),
        "max_runtime_seconds": 120,
    }
    return JobSpec(**{**values, **changes})


def wait_until_terminal(compute: LocalJobCompute, name: str, timeout: float = 120) -> JobDescription:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = compute.describe(name)
        if job.terminal:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {name} still {compute.describe(name)} after {timeout}s")


def wait_for(predicate, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{message} not reached within {timeout}s")


def record(compute: LocalJobCompute, name: str, file: str = "status.json") -> dict:
    return json.loads((compute.state_dir / name / file).read_text())


def test_a_real_job_trains_and_leaves_its_model_and_metrics_in_the_store(tmp_path, store, churn):
    from mlops_core.demo_data import generate_day
    from mlops_core.training.entrypoint import job_hyperparameters

    buf = io.BytesIO()
    generate_day(0, rows=200).to_parquet(buf, index=False)
    store.put_bytes("sets/a/train.parquet", buf.getvalue())
    compute = LocalJobCompute(tmp_path / "jobs", store)
    submitted = compute.submit(
        spec(
            store,
            "job-real",
            inputs={"train": store.uri("sets/a/train.parquet")},
            hyperparameters=job_hyperparameters(churn, "logistic_regression", {}),
        )
    )
    assert submitted.status == "InProgress" and submitted.model_uri is None

    job = wait_until_terminal(compute, "job-real")
    assert job.status == "Completed", job
    assert job.model_uri == store.uri("training_jobs") + "/job-real/model/"
    metrics = json.loads(store.get_bytes(object_key(store, job.metrics_uri)))
    assert 0.5 < metrics["train_roc_auc"] <= 1.0
    files = download_prefix(store, job.model_uri, tmp_path / "model")
    assert sorted(p.name for p in files) == ["model.skops", "model_meta.json"]
    assert json.loads((tmp_path / "model" / "model_meta.json").read_text())["algorithm"] == "logistic_regression"
    lines = compute.log_lines("job-real")
    assert any(line.startswith("METRIC train_roc_auc=") for line in lines)
    assert compute.log_lines("job-real", skip=len(lines)) == []


def test_job_names_are_unique_forever(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, "pass\n"))
    compute.submit(spec(store, "job-once"))
    with pytest.raises(JobNameInUse, match="job-once"):
        compute.submit(spec(store, "job-once"))  # while it runs
    wait_until_terminal(compute, "job-once")
    with pytest.raises(JobNameInUse):
        compute.submit(spec(store, "job-once"))  # and after it ended
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["job-once"]  # no staging folder left


def test_unknown_jobs_and_bad_specs_are_refused(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store)
    with pytest.raises(JobNotFound):
        compute.describe("never-submitted")
    with pytest.raises(JobNotFound):
        compute.stop("never-submitted")
    with pytest.raises(JobNotFound):
        compute.describe("../escape")
    with pytest.raises(ValueError, match="job name"):
        spec(store, "under_score")
    with pytest.raises(ValueError, match="must be a string"):
        spec(store, "job-hp", hyperparameters={"max_iter": 3})
    with pytest.raises(ValueError, match="not an object of the store"):
        compute.submit(spec(store, "job-outside", inputs={"train": "file:///etc/passwd"}))
    with pytest.raises(ValueError, match="Python entrypoints"):
        compute.submit(spec(store, "job-shell", entrypoint=("sh", "-c", "true")))
    assert not (tmp_path / "jobs" / "job-outside").exists()


def test_failed_job_reports_the_entrypoints_failure_file(tmp_path, store):
    body = """
    import pathlib, sys
    root = pathlib.Path(sys.argv[sys.argv.index("--ml-root") + 1])
    (root / "output").mkdir(parents=True, exist_ok=True)
    (root / "output" / "failure").write_text("target has a single class")
    sys.exit(1)
    """
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, body))
    compute.submit(spec(store, "job-fail"))
    job = wait_until_terminal(compute, "job-fail")
    assert job.status == "Failed"
    assert job.failure_reason == "target has a single class"
    assert job.model_uri is None


def test_silent_job_is_stopped_at_its_max_runtime(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, SLEEPER))
    compute.submit(spec(store, "job-timeout", max_runtime_seconds=2))
    job = wait_until_terminal(compute, "job-timeout", timeout=60)
    assert job.status == "Stopped"
    assert "timed out after 2s" in job.failure_reason
    assert job.seconds < 20
    child = record(compute, "job-timeout")["entrypoint_pid"]
    wait_for(lambda: not group_alive(child), message="the entrypoint's process group gone")


def _in_another_process(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], check=True, timeout=60)


def test_submit_describe_and_stop_work_from_any_process(tmp_path, store):
    """A job outlives the process that submitted it; another process describes it, a third stops it."""
    python = fake_python(tmp_path, SLEEPER)
    _in_another_process(
        """
        import sys
        from mlops_core.compute import LocalJobCompute, JobSpec
        from mlops_core.storage import LocalObjectStore
        store = LocalObjectStore(sys.argv[2])
        spec = JobSpec(name="job-far", entrypoint=("python", "-m", "x"), inputs={}, output_uri=store.uri("out"))
        LocalJobCompute(sys.argv[1], store, python=sys.argv[3]).submit(spec)
        """,
        str(tmp_path / "jobs"),
        str(store.root),
        python,
    )
    compute = LocalJobCompute(tmp_path / "jobs", store)  # this process: never submitted anything
    wait_for(lambda: compute.describe("job-far").secondary_status == "Training", message="the job training")
    assert compute.describe("job-far").status == "InProgress"  # its submitter is gone; the job is not
    child = record(compute, "job-far")["entrypoint_pid"]
    assert pid_alive(child)

    _in_another_process(
        """
        import sys
        from mlops_core.compute import LocalJobCompute
        from mlops_core.storage import LocalObjectStore
        LocalJobCompute(sys.argv[1], LocalObjectStore(sys.argv[2])).stop("job-far")
        """,
        str(tmp_path / "jobs"),
        str(store.root),
    )
    assert compute.describe("job-far").status in ("Stopping", "Stopped")
    job = wait_until_terminal(compute, "job-far", timeout=30)
    assert job.status == "Stopped" and job.failure_reason == "stopped on request"
    wait_for(lambda: not group_alive(child), message="the entrypoint's process group gone")
    compute.stop("job-far")  # stopping a stopped job changes nothing
    assert compute.describe("job-far").status == "Stopped"


def test_a_job_whose_supervisor_was_killed_is_failed_with_nothing_left_running(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, SLEEPER))
    compute.submit(spec(store, "job-orphan"))
    wait_for(lambda: compute.describe("job-orphan").secondary_status == "Training", message="the job training")
    supervisor = record(compute, "job-orphan")["pid"]
    child = record(compute, "job-orphan")["entrypoint_pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not pid_alive(supervisor), message="the supervisor gone")

    job = compute.describe("job-orphan")
    assert job.status == "Failed"
    assert "supervisor" in job.failure_reason and "without recording an outcome" in job.failure_reason
    # A job reported ended has nothing running (or a next attempt would train beside it).
    wait_for(lambda: not group_alive(child), message="the orphaned entrypoint stopped")
    assert record(compute, "job-orphan")["status"] == "Failed"  # recorded once, by the first observer
    assert compute.describe("job-orphan") == job


def test_a_stop_before_the_supervisor_listens_still_ends_stopped(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, SLEEPER))
    compute.submit(spec(store, "job-early"))
    compute.stop("job-early")  # at once: the supervisor may not have installed its handler yet
    job = wait_until_terminal(compute, "job-early", timeout=30)
    assert job.status == "Stopped" and job.failure_reason == "stopped on request"
    assert "ended_at" in record(compute, "job-early")


def test_stop_all_stops_running_jobs_only(tmp_path, store):
    compute = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path, SLEEPER))
    compute.submit(spec(store, "job-running"))
    (tmp_path / "quick").mkdir()
    done = LocalJobCompute(tmp_path / "jobs", store, python=fake_python(tmp_path / "quick", "pass\n"))
    done.submit(spec(store, "job-done"))
    ended = wait_until_terminal(compute, "job-done")
    assert ended.status == "Failed" and "exited 0 but left no model" in ended.failure_reason
    assert LocalJobCompute.stop_all(tmp_path / "jobs") == ["job-running"]
    assert compute.describe("job-running").status == "Stopped"  # stop_all waited for it
    assert compute.describe("job-done") == ended  # an ended job is left as it was


def test_object_keys_follow_s3_prefix_semantics(tmp_path, store):
    assert object_key(store, store.uri("a/b.parquet")) == "a/b.parquet"
    assert object_key(store, store.uri("a") + "/") == "a/"
    spaced = LocalObjectStore(tmp_path / "with space")
    assert object_key(spaced, spaced.uri("x y/z")) == "x y/z"  # file URIs are percent-encoded
    with pytest.raises(ValueError, match="not an object of the store"):
        object_key(store, store.uri() + "/../outside")
    with pytest.raises(ValueError, match="not an object of the store"):
        object_key(store, "s3://bucket/a")
    assert relative_key("ts/k/train.parquet", "ts/k/train.parquet") == "train.parquet"
    assert relative_key("ts/k/train/part-0.parquet", "ts/k/train/") == "part-0.parquet"
    assert relative_key("ts/k/train/part-0.parquet", "ts/k/train") == "train/part-0.parquet"
