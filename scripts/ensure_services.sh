#!/usr/bin/env bash
# Make sure the PostgreSQL server the SQL-source tests use answers on 127.0.0.1:5432.
# If it is missing, install it from Debian's packages and start it (needs root or sudo), with
# trust authentication for 127.0.0.1 only: a throw-away test server, not a production setup.
# Override the server the tests use with MLOPS_TEST_PG_URL (e.g. postgresql://u:p@host:5432/db).
set -euo pipefail
if [ -n "${MLOPS_TEST_PG_URL:-}" ]; then exit 0; fi
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then exit 0; fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "ensure_services: PostgreSQL is not running on 127.0.0.1:5432 and I cannot install it without root." >&2
    echo "Install it (apt-get install postgresql) and start it, or set MLOPS_TEST_PG_URL." >&2
    exit 1
  fi
fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure_services: installing PostgreSQL from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    $SUDO sed -i -E 's#^(host\s+all\s+all\s+127\.0\.0\.1/32\s+)\S+#\1trust#' "$hba"
  done
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "ensure_services: starting PostgreSQL $version"
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "ensure_services: PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
