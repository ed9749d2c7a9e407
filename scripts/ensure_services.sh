#!/usr/bin/env bash
# Make sure the servers the tests use answer on loopback: PostgreSQL on 127.0.0.1:5432 (the SQL-source
# tests, the Celery stack's metadata DB and MLflow server) and Redis on 127.0.0.1:6379 (the Celery
# broker, the Redis online store). A missing one is installed from Debian's packages and started
# (needs root or sudo); PostgreSQL with trust authentication for 127.0.0.1 only: a throw-away test
# server, not a production setup.
# Override the PostgreSQL server the SQL-source tests use with MLOPS_TEST_PG_URL (e.g. postgresql://u:p@host:5432/db).
set -euo pipefail

SUDO=""
need_root() {
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "ensure_services: $1 is not running and I cannot install it without root." >&2
      echo "Install and start it ($2)." >&2
      exit 1
    fi
  fi
}

ensure_postgres() {
  if [ -n "${MLOPS_TEST_PG_URL:-}" ]; then return 0; fi
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
  need_root "PostgreSQL on 127.0.0.1:5432" "apt-get install postgresql, or set MLOPS_TEST_PG_URL"
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
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  echo "ensure_services: PostgreSQL did not come up on 127.0.0.1:5432" >&2
  exit 1
}

redis_answers() {
  # PING without redis-cli: bash's /dev/tcp
  { exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && read -r -t 2 reply <&3 && [[ "$reply" == +PONG* ]]; } \
    2>/dev/null
  local rc=$?
  exec 3>&- 2>/dev/null || true
  return $rc
}

ensure_redis() {
  if redis_answers; then return 0; fi
  need_root "Redis on 127.0.0.1:6379" "apt-get install redis-server"
  if ! command -v redis-server >/dev/null; then
    echo "ensure_services: installing Redis from Debian's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  echo "ensure_services: starting Redis on 127.0.0.1:6379"
  $SUDO redis-server --bind 127.0.0.1 --port 6379 --daemonize yes >/dev/null
  for _ in $(seq 1 30); do
    redis_answers && return 0
    sleep 1
  done
  echo "ensure_services: Redis did not come up on 127.0.0.1:6379" >&2
  exit 1
}

ensure_postgres
ensure_redis
