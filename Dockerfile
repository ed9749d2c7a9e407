# The image of every Airflow component, Celery worker and the MLflow server of docker-compose.yml.
# It holds what `make venv` builds natively: the packages of requirements.lock (hash-checked, nothing
# resolved at build time), then this project with --no-deps, plus the DAGs and the plugin.
#
#   docker build -t airflow-mlops:latest .
#
# Upgrading Airflow or a library: edit requirements.txt, `make lock`, rebuild (README, "Production
# deployment").
FROM python:3.11-slim-bookworm

# curl: the compose health checks; nothing else from the distribution
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/mlops/.venv \
    PATH=/opt/mlops/.venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    MLOPS_HOME=/var/lib/mlops

WORKDIR /opt/mlops

# The dependencies first (their layer is rebuilt only when a lock changes): the bootstrap tools
# (uv) and then requirements.lock, both with --require-hashes, exactly as scripts/bootstrap.sh.
COPY scripts/bootstrap.lock scripts/bootstrap.lock
COPY requirements.lock requirements.lock
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/python" -m pip install --no-cache-dir --require-hashes --no-deps -r scripts/bootstrap.lock \
    && "$VIRTUAL_ENV/bin/uv" pip sync --no-cache --compile-bytecode --python "$VIRTUAL_ENV/bin/python" \
        --require-hashes requirements.lock

# The project: its packages (include/), the DAGs and the plugin; installed with --no-deps
COPY pyproject.toml pyproject.toml
COPY include/ include/
COPY dags/ dags/
COPY plugins/ plugins/
RUN "$VIRTUAL_ENV/bin/uv" pip install --no-cache --python "$VIRTUAL_ENV/bin/python" --no-deps \
        --no-build-isolation -e . \
    && useradd --create-home --uid 50000 --gid 0 airflow \
    && mkdir -p "$AIRFLOW_HOME/logs" "$MLOPS_HOME" \
    && chown -R airflow:0 "$AIRFLOW_HOME" "$MLOPS_HOME"

USER airflow
# No ENTRYPOINT: compose names the program of each service, and the Helm chart (and the pods of the
# KubernetesExecutor) pass full commands such as `bash -c "exec airflow scheduler"`.
CMD ["airflow", "version"]
