# The two commands a newcomer needs: `make demo` and `make test`. Every target bootstraps .venv
# from the lock files when it is missing or stale (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python
PORT ?= 8080
MLFLOW_PORT ?= 5000
PYTEST_ARGS ?=
# Bytecode caching makes every Airflow/MLflow process start seconds faster; some shells disable it.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv demo test test-fast lint format up up-distributed lock bench verify-aws ship clean

help:
	@echo "make demo   - run the whole ML lifecycle end to end on the local defaults and print a summary"
	@echo "make test   - lint, then the test suite (unit, DAG integrity, parse guard, SQL sources, end to end)"
	@echo "make lint   - ruff (lint + format check) and mypy; make format rewrites the files"
	@echo "make up     - Airflow UI on http://localhost:$(PORT) with these DAGs (credentials printed), MLflow UI on :$(MLFLOW_PORT)"
	@echo "make up-distributed [WORKERS=2] - the same on the CeleryExecutor: PostgreSQL, Redis, Celery workers, MLflow server"
	@echo "make lock   - regenerate requirements.lock from requirements.txt"
	@echo "make verify-aws ENV=prod [TRAIN=1] - check an environment's aws backends against the real account"
	@echo "make bench  - every benchmark, one table of results against their goals (QUICK=1: smaller sizes)"
	@echo "make ship TO=s3://bucket/prefix|azure://container/prefix|folder - copy dags/ include/ plugins/ to an environment (CI/CD)"
	@echo "make clean  - remove .venv and every local state folder"

venv:
	@scripts/bootstrap.sh

demo: venv
	$(PY) -m mlops_demo.run

test: venv lint
	@scripts/ensure_services.sh
	@scripts/ensure_browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: venv
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test-fast: venv
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

up: venv
	$(PY) -m mlops_demo.airflow_stack up --home .airflow --dags dags --plugins plugins --port $(PORT) --mlflow-port $(MLFLOW_PORT)

WORKERS ?= 2
CONCURRENCY ?= 2
up-distributed: venv
	@scripts/ensure_services.sh
	$(PY) -m mlops_demo.airflow_stack up --distributed --workers $(WORKERS) --concurrency $(CONCURRENCY) \
		--home .airflow-distributed --dags dags --plugins plugins --port $(PORT)

lock:
	scripts/lock.sh

verify-aws: venv
	$(PY) -m mlops_airflow.verify_aws --env $(or $(ENV),dev) $(if $(filter 1 yes true,$(TRAIN)),--train)

ship: venv
	@test -n "$(TO)" || { echo "make ship TO=s3://bucket/prefix | azure://container/prefix | /a/folder" >&2; exit 2; }
	$(PY) -m mlops_demo.ship "$(TO)"

bench: venv
	$(PY) bench/run_all.py $(if $(filter 1 yes true,$(QUICK)),--quick)

clean:
	rm -rf .venv .venv-lock .mlops .airflow .demo mlruns mlartifacts mlflow.db .pytest_cache .hypothesis \
		.ruff_cache .mypy_cache build include/*.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
