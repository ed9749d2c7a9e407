"""What reaches the Airflow components from the caller's environment, and the per-start secrets."""

from __future__ import annotations

from pathlib import Path

from mlops_demo.airflow_stack.component_env import (
    JWT_SECRET_VARIABLE,
    StartSecrets,
    component_environment,
    passes_through,
)

CALLER = {
    "HOME": "/home/me",
    "PATH": "/usr/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "AWS_PROFILE": "dev",
    "AIRFLOW_HOME": "/home/me/airflow",  # another Airflow of the caller: never ours
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://prod",
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "_AIRFLOW_PROCESS_CONTEXT": "server",
    "AIRFLOW_CONN_CHURN_DB": '{"conn_type": "generic", "password": "pw"}',
    "AIRFLOW_VAR_THRESHOLD": "0.3",
    "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
    "AIRFLOW__SECRETS__BACKEND_KWARGS": '{"connections_file_path": "/etc/conns.json"}',
}


def test_connections_variables_and_secrets_backend_pass_airflow_config_does_not():
    env = component_environment(CALLER, {"AIRFLOW_HOME": "/stack/home"}, pycache_prefix=None)
    passed = {k for k in CALLER if k in env and env[k] == CALLER[k]}
    assert passed == {
        "HOME",
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "AWS_PROFILE",
        "AIRFLOW_CONN_CHURN_DB",
        "AIRFLOW_VAR_THRESHOLD",
        "AIRFLOW__SECRETS__BACKEND",
        "AIRFLOW__SECRETS__BACKEND_KWARGS",
    }
    assert env["AIRFLOW_HOME"] == "/stack/home"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
    assert "_AIRFLOW_PROCESS_CONTEXT" not in env


def test_stack_settings_win_over_the_caller_and_bytecode_goes_to_the_cache():
    stack_env = {"AIRFLOW_VAR_THRESHOLD": "0.5", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    env = component_environment(CALLER, stack_env, pycache_prefix=None)
    assert env["AIRFLOW_VAR_THRESHOLD"] == "0.5"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    cached = component_environment(CALLER, {}, pycache_prefix=Path("/cache"))
    assert "PYTHONDONTWRITEBYTECODE" not in cached
    assert cached["PYTHONPYCACHEPREFIX"] == "/cache"


def test_passes_through():
    assert passes_through("AIRFLOW_CONN_X") and passes_through("AIRFLOW_VAR_X") and passes_through("LANG")
    assert not passes_through("AIRFLOW__CORE__FERNET_KEY")
    assert not passes_through(JWT_SECRET_VARIABLE)  # used as the JWT secret, not passed as it is


def test_start_secrets_are_new_each_time_unless_the_caller_configured_them():
    first, second = StartSecrets.create({}), StartSecrets.create({})
    assert first.jwt_secret != second.jwt_secret
    assert first.api_secret_key != second.api_secret_key
    assert len(first.jwt_secret) >= 48
    configured = StartSecrets.create({JWT_SECRET_VARIABLE: "from-the-caller"})
    assert configured.jwt_secret == "from-the-caller"
    assert configured.jwt_secret_from_caller
    assert "from-the-caller" not in repr(configured) and first.jwt_secret not in repr(first)
