"""deploy/helm/values.yaml for the official Airflow chart (KubernetesExecutor): parsed and checked, not run.

The image is the one ./Dockerfile builds; the behaviour settings are the compose stack's (which
tests/deploy/test_compose.py holds to the native stack's); no secret is written in the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text(encoding="utf-8"))
COMPOSE_ENV = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["x-airflow-env"]
AIRFLOW_OPTION = re.compile(r"^AIRFLOW__(?P<section>[A-Z0-9_]+?)__(?P<key>[A-Z0-9_]+)$")


def test_kubernetes_executor_on_the_repositorys_image():
    assert VALUES["executor"] == "KubernetesExecutor"
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    assert re.search(rf"^apache-airflow=={re.escape(VALUES['airflowVersion'])} ", lock, re.M)
    image = VALUES["images"]["airflow"]
    assert (image["repository"], image["tag"]) == (VALUES["defaultAirflowRepository"], VALUES["defaultAirflowTag"])
    # DAGs and plugins are baked into the image (no git-sync, no DAG volume)
    assert VALUES["dags"]["gitSync"]["enabled"] is False and VALUES["dags"]["persistence"]["enabled"] is False


def test_no_secret_in_the_values_only_names_of_kubernetes_secrets():
    assert VALUES["data"] == {"metadataSecretName": "airflow-metadata"}
    for key in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"):
        assert VALUES[key]
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert key not in VALUES
    assert VALUES["webserver"]["defaultUser"]["enabled"] is False  # its password would live in the values
    assert VALUES["postgresql"]["enabled"] is False and VALUES["redis"]["enabled"] is False
    text = (REPO / "deploy" / "helm" / "values.yaml").read_text(encoding="utf-8")
    assert not re.search(r"://[^/\s:@<]+:[^/\s@<]+@", text)  # no URL with a password (placeholders are <...>)


def test_behaviour_settings_are_the_compose_stacks():
    config = VALUES["config"]
    compared = 0
    for name, value in COMPOSE_ENV.items():
        option = AIRFLOW_OPTION.match(name)
        if not option:
            continue
        section, key = option["section"].lower(), option["key"].lower()
        if key in config.get(section, {}):
            assert str(config[section][key]) == str(value), f"[{section}] {key}"
            compared += 1
    assert compared >= 10
    assert config["core"]["auth_manager"] == COMPOSE_ENV["AIRFLOW__CORE__AUTH_MANAGER"]
    env = {item["name"]: item["value"] for item in VALUES["env"]}
    assert env["MLFLOW_CONFIGURE_LOGGING"] == COMPOSE_ENV["MLFLOW_CONFIGURE_LOGGING"]
    assert env["MLOPS_HOME"] == COMPOSE_ENV["MLOPS_HOME"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
