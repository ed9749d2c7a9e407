"""Backend selection and the local compute backend (a real subprocess)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from mlops_core.backends import BackendNotAvailable, LocalSubprocessCompute, compute_backend, object_store
from mlops_core.settings import load_settings, with_overrides
from mlops_core.storage import LocalObjectStore


def test_local_backends_are_chosen_from_settings(mlops_home):
    settings = load_settings("dev")
    assert isinstance(object_store(settings), LocalObjectStore)
    assert isinstance(compute_backend(settings), LocalSubprocessCompute)


def test_unbuilt_backend_fails_clearly(mlops_home):
    settings = with_overrides(load_settings("dev"), backends={"compute": "aws"})
    with pytest.raises(BackendNotAvailable, match=r"backends\.compute = 'aws'"):
        compute_backend(settings)


def _fake_python(tmp_path, body: str) -> str:
    """A stand-in interpreter that ignores its arguments and runs ``body`` (for timeout/failure paths)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_silent_job_is_stopped_at_its_deadline(tmp_path):
    compute = LocalSubprocessCompute(python=_fake_python(tmp_path, "import time\ntime.sleep(60)\n"))
    result = compute.run("job-timeout", tmp_path, timeout_seconds=1.5)
    assert result.status == "Stopped"
    assert "timed out" in result.failure_reason
    assert result.seconds < 20


def test_failed_job_reports_the_failure_file(tmp_path):
    body = """
    import pathlib, sys
    root = pathlib.Path(sys.argv[sys.argv.index("--ml-root") + 1])
    (root / "output").mkdir(parents=True, exist_ok=True)
    (root / "output" / "failure").write_text("target has a single class")
    sys.exit(1)
    """
    result = LocalSubprocessCompute(python=_fake_python(tmp_path, body)).run("job-fail", tmp_path, 60)
    assert result.status == "Failed"
    assert result.failure_reason == "target has a single class"
