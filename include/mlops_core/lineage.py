"""Where a model came from: the git commit of this repository, recorded as a tag."""

from __future__ import annotations

import os
import shutil
import subprocess

from mlops_core.settings import REPO_ROOT


def git_commit() -> str:
    """``MLOPS_GIT_COMMIT`` if set (container images), else ``git rev-parse HEAD``, else "unknown"."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return os.environ["MLOPS_GIT_COMMIT"]
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        out = subprocess.run([git, "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
