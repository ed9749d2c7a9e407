"""What crosses into a child process: the allow-list, never a secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops_core.child_env import child_environment, is_secret_name

AIRFLOW_SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt",
    "AIRFLOW__CORE__FERNET_KEY": "fernet",
    "AIRFLOW__API__SECRET_KEY": "api",
    "AIRFLOW_CONN_CHURN_DB": "postgresql://app:hunter2@db/app",
    "AIRFLOW_VAR_TOKEN": "t",
    "MLFLOW_TRACKING_PASSWORD": "pw",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountKey=x",
    "MLOPS_API_KEY": "k",
}


def test_secrets_never_cross_and_settings_do() -> None:
    source = {**AIRFLOW_SECRETS, "PATH": "/usr/bin", "MLOPS_HOME": "/srv/mlops", "LC_ALL": "C.UTF-8", "OTHER": "x"}
    env = child_environment(source=source)
    assert env == {"PATH": "/usr/bin", "MLOPS_HOME": "/srv/mlops", "LC_ALL": "C.UTF-8"}


def test_allow_cannot_let_a_secret_through() -> None:
    env = child_environment(allow=["AIRFLOW__CORE__FERNET_KEY", "OTHER"], source={**AIRFLOW_SECRETS, "OTHER": "x"})
    assert env == {"OTHER": "x"}


@pytest.mark.parametrize("name", sorted(AIRFLOW_SECRETS))
def test_explicit_secret_is_refused(name: str) -> None:
    assert is_secret_name(name)
    with pytest.raises(ValueError, match="secret"):
        child_environment({name: "v"}, source={})


@pytest.mark.parametrize("name", ["PATH", "MLOPS_HOME", "MLFLOW_TRACKING_URI", "PYTHONPATH", "SSL_CERT_FILE"])
def test_ordinary_names_are_not_secrets(name: str) -> None:
    assert not is_secret_name(name)


def test_a_real_child_sees_only_what_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AIRFLOW_SECRETS.items():
        monkeypatch.setenv(name, value)
    env = child_environment({"MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    out = subprocess.run(
        [sys.executable, "-c", "import os, json; print(json.dumps(sorted(os.environ)))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = set(__import__("json").loads(out))
    assert "MLFLOW_TRACKING_URI" in seen
    assert not seen & set(AIRFLOW_SECRETS)
