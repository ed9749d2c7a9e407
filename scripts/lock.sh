#!/usr/bin/env bash
# Regenerate the complete lock (every transitive package, exact version, sha256 hashes) from
# requirements.txt. Run it after editing requirements.txt:  make lock
# The lock is universal (one file for Linux and macOS, Python 3.11 to 3.13), so an install on a
# fresh machine resolves nothing and gets the same versions every time.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
if [ ! -x "$UV" ]; then
  python3 -m venv .venv-lock
  .venv-lock/bin/pip install -q --require-hashes -r scripts/bootstrap.lock
  UV=.venv-lock/bin/uv
fi
common=(--universal --python-version 3.11 --generate-hashes --no-header --quiet)
"$UV" pip compile "${common[@]}" scripts/bootstrap.in -o scripts/bootstrap.lock
"$UV" pip compile "${common[@]}" requirements.txt -o requirements.lock
echo "wrote requirements.lock ($(grep -c '^[a-zA-Z]' requirements.lock) packages) and scripts/bootstrap.lock"
