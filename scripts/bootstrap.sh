#!/usr/bin/env bash
# Create or refresh .venv from the repository's pinned files. Idempotent and cheap when nothing
# changed: the venv records a fingerprint of the lock files and is only rebuilt when they change.
#   PYTHON=python3.12 scripts/bootstrap.sh     # choose the interpreter (3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bootstrap-fingerprint
fingerprint=$(cat requirements.lock scripts/bootstrap.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

"$PYTHON" - <<'PY' || { echo "bootstrap: Python 3.11+ is required (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

echo "bootstrap: building $VENV from requirements.lock (first run takes a few minutes)"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r scripts/bootstrap.lock
# `uv pip sync` installs exactly what the lock lists (and removes anything else): no resolution.
"$VENV/bin/uv" pip sync --quiet --compile-bytecode --python "$VENV/bin/python" --require-hashes requirements.lock
# Our own packages (include/mlops_core, include/mlops_airflow), editable, without dependencies.
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps --no-build-isolation -e .
echo "$fingerprint" > "$STAMP"
echo "bootstrap: $VENV ready in $(( $(date +%s) - start ))s"
