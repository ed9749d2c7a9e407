"""Settings: validated at load, defaults from the contract, overrides that replace leaves.

Every test reads real YAML files (the shipped ones, or copies written to ``tmp_path`` and found
through ``MLOPS_CONF_DIR``) and real contracts, through the public loader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlops_core.environments import ENVIRONMENTS, later_environments
from mlops_core.settings import (
    DEFAULT_CONF_DIR,
    METRIC_DIRECTIONS,
    TASK_ALGORITHMS,
    TASK_METRICS,
    SettingsError,
    load_settings,
    with_algorithm,
    with_overrides,
)

REGRESSION_CONTRACT = {
    "name": "house-prices",
    "task": "regression",
    "target": "price",
    "columns": [
        {"name": "rooms", "type": "int", "min": 1, "max": 12},
        {"name": "district", "type": "category", "allowed": ["centre", "suburb"]},
        {"name": "price", "type": "float", "min": 0},
    ],
}


def _conf_dir(tmp_path: Path, monkeypatch, env: str = "dev", **sections: dict) -> Path:
    """The shipped ``<env>.yaml`` with ``sections`` merged over it (one level deep), found via MLOPS_CONF_DIR."""
    raw = yaml.safe_load((DEFAULT_CONF_DIR / f"{env}.yaml").read_text(encoding="utf-8"))
    for name, values in sections.items():
        raw[name] = {**(raw.get(name) or {}), **values} if isinstance(values, dict) else values
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / f"{env}.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    return conf / f"{env}.yaml"


def _regression_contract(tmp_path: Path, monkeypatch, **changes) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump({**REGRESSION_CONTRACT, **changes}), encoding="utf-8")
    monkeypatch.setenv("MLOPS_CONTRACT", str(path))
    return path


# --------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_shipped_conf_files_load_for_the_churn_contract(mlops_home, env):
    settings = load_settings(env)
    assert settings.env == env and settings.home == mlops_home
    assert settings.contract.name == "churn" and settings.contract is settings.load_contract()
    # the demo's names come from its contract, not from the files
    assert settings.registered_model_name == f"{env}.churn"
    assert settings.features.project == f"churn_{env}"
    assert settings.registry.experiment == "mlops-churn"
    assert settings.dataset.drop_zone == mlops_home / "drop" / "churn"
    assert (settings.evaluation.primary_metric, dict(settings.evaluation.thresholds)) == ("roc_auc", {"roc_auc": 0.6})
    assert settings.evaluation.greater_is_better is True
    assert settings.storage_root == str(mlops_home / "store")
    assert settings.registry.tracking_uri == f"sqlite:///{mlops_home}/mlflow/mlflow.db"
    assert settings.dataset.file_patterns == ("*.csv", "*.csv.gz", "*.parquet")
    assert settings.dataset.max_file_mb == 256
    arrival = settings.dataset.arrival
    assert (arrival.rule, arrival.min_age_seconds, arrival.marker, arrival.poll_seconds) == (
        "stable",
        5,
        "{name}.done",
        5,
    )
    assert settings.promotion.next_env == dict(zip(ENVIRONMENTS, [*ENVIRONMENTS[1:], None], strict=True))[env]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_fresh_clone_sends_no_alert(mlops_home, env):
    """Every kind is on, but no channel names a connection: nothing is sent until someone configures one."""
    from mlops_core.settings import ALERT_KINDS

    alerts = load_settings(env).alerts
    assert alerts.kinds == ALERT_KINDS
    assert alerts.webhook_conn_id is None and alerts.smtp_conn_id is None and alerts.email_to == ()


def test_shipped_conf_files_name_nothing_of_the_demo():
    """Names and classification metrics come from the contract, so a user's dataset needs no edit."""
    for env in ENVIRONMENTS:
        raw = yaml.safe_load((DEFAULT_CONF_DIR / f"{env}.yaml").read_text(encoding="utf-8"))
        assert "project" not in raw["features"] and "model_name" not in raw["training"]
        assert "experiment" not in raw["registry"]
        assert not {"primary_metric", "thresholds"} & set(raw["evaluation"])


# --------------------------------------------------------------------------- contract defaults
def test_regression_contract_needs_no_settings_edit(mlops_home, tmp_path, monkeypatch):
    """MLOPS_CONTRACT + MLOPS_DROP_ZONE and nothing else: names and the gate follow the contract."""
    contract = _regression_contract(tmp_path, monkeypatch)
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(tmp_path / "incoming"))
    settings = load_settings("staging")
    assert settings.dataset.contract == contract and settings.contract.task == "regression"
    assert settings.training.model_name == "house-prices"
    assert settings.registered_model_name == "staging.house-prices"
    assert settings.features.project == "house_prices_staging"  # Feast: '-' becomes '_'
    assert settings.registry.experiment == "mlops-house-prices"
    assert settings.evaluation.primary_metric == "rmse" and settings.evaluation.greater_is_better is False
    assert dict(settings.evaluation.thresholds) == {"r2": 0.0}
    assert settings.dataset.drop_zone == tmp_path / "incoming"


def test_default_drop_zone_follows_the_contract(mlops_home, tmp_path, monkeypatch):
    _regression_contract(tmp_path, monkeypatch)
    assert load_settings("dev").dataset.drop_zone == mlops_home / "drop" / "house-prices"


def test_settings_file_wins_over_contract_defaults(mlops_home, tmp_path, monkeypatch):
    _regression_contract(tmp_path, monkeypatch)
    _conf_dir(
        tmp_path,
        monkeypatch,
        training={"model_name": "houses"},
        features={"project": "houses_x"},
        registry={"experiment": "team.houses"},
        evaluation={"primary_metric": "mae"},
    )
    settings = load_settings("dev")
    assert (settings.training.model_name, settings.features.project, settings.registry.experiment) == (
        "houses",
        "houses_x",
        "team.houses",
    )
    # the primary metric is set, the thresholds still follow the task
    assert settings.evaluation.primary_metric == "mae" and dict(settings.evaluation.thresholds) == {"r2": 0.0}


def test_bad_name_derived_from_the_contract_says_where_it_came_from(mlops_home, tmp_path, monkeypatch):
    """A contract name the contract allows can still make a Feast project name that is too long."""
    name = "h" * 60  # a valid dataset name; "<name>_staging" is over Feast's 63 characters
    _regression_contract(tmp_path, monkeypatch, name=name)
    with pytest.raises(SettingsError) as info:
        load_settings("staging")
    message = str(info.value)
    assert "features.project: must match [A-Za-z0-9][A-Za-z0-9_]{0,62}" in message
    assert f"(got '{name}_staging'); this default follows from the contract" in message
    assert "set features.project in include/conf/staging.yaml" in message


def test_contract_names_that_make_unsafe_defaults_are_refused_where_they_are_written(mlops_home, tmp_path, monkeypatch):
    _regression_contract(tmp_path, monkeypatch, name="_houses")
    with pytest.raises(SettingsError, match=r"dataset\.contract: .*ASCII letters"):
        load_settings("dev")


def test_contract_is_read_once_and_kept(mlops_home):
    settings = load_settings("dev")
    assert settings.load_contract() is settings.contract
    assert with_overrides(settings, training={"window_days": 7}).contract is settings.contract


def test_missing_or_invalid_contract_names_the_key(mlops_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_CONTRACT", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsError, match=r"include/conf/dev\.yaml: dataset\.contract: no contract file at .*nope"):
        load_settings("dev")
    _regression_contract(tmp_path, monkeypatch, task="ranking")
    with pytest.raises(SettingsError, match=r"dataset\.contract: .*task must be one of"):
        load_settings("dev")


# --------------------------------------------------------------------------- overrides
def test_override_replaces_a_mapping_and_merges_a_section(mlops_home, tmp_path, monkeypatch):
    _conf_dir(
        tmp_path,
        monkeypatch,
        evaluation={"thresholds": {"roc_auc": 0.7, "accuracy": 0.6}, "min_improvement": 0.01},
    )
    settings = load_settings("dev", overrides={"evaluation": {"thresholds": {"roc_auc": 0.8}}})
    assert dict(settings.evaluation.thresholds) == {"roc_auc": 0.8}  # replaced, not merged
    assert settings.evaluation.min_improvement == 0.01  # the section merged key by key

    settings = load_settings("dev", overrides={"training": {"hyperparameters": {"max_iter": 10}}})
    assert dict(settings.training.hyperparameters) == {"max_iter": 10}
    assert settings.training.window_days == 30


def test_with_overrides_replaces_and_keeps_earlier_overrides(mlops_home):
    base = load_settings("dev", overrides={"training": {"window_days": 9}})
    settings = with_overrides(base, evaluation={"thresholds": {"f1": 0.5}}, training={"min_rows": 50})
    assert dict(settings.evaluation.thresholds) == {"f1": 0.5}
    assert (settings.training.window_days, settings.training.min_rows) == (9, 50)
    assert dict(settings.training.hyperparameters) == dict(base.training.hyperparameters)
    assert with_overrides(base, training={"model_name": "other"}).registered_model_name == "dev.other"
    assert dict(base.evaluation.thresholds) == {"roc_auc": 0.6}  # the original is untouched


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"training": {"window_days": 0}}, "training.window_days: must be >= 1 (got 0)"),
        ({"backends": {"compute": "gpu"}}, "backends.compute: must be one of 'local', 'aws', 'azure' (got 'gpu')"),
        ({"evaluation": {"primary_metric": "rmse"}}, "evaluation.primary_metric: must be one of 'roc_auc',"),
        ({"training": {"algorithm": "ridge"}}, "training.algorithm: must be one of 'hist_gradient_boosting',"),
    ],
)
def test_with_overrides_validates_again(mlops_home, sections, expected):
    """Per-run overrides get the checks a file gets (pydantic's model_copy(update=...) would not)."""
    with pytest.raises(SettingsError) as info:
        with_overrides(load_settings("dev"), **sections)
    assert str(info.value).startswith(f"include/conf/dev.yaml (per-run override): {expected}"), str(info.value)


def test_with_overrides_rejects_unknown_sections(mlops_home):
    settings = load_settings("dev")
    with pytest.raises(SettingsError, match="cannot override 'trainig'"):
        with_overrides(settings, trainig={"window_days": 3})


def test_with_algorithm_starts_from_the_algorithms_defaults(mlops_home):
    settings = with_algorithm(load_settings("dev"), "random_forest")
    assert settings.training.algorithm == "random_forest" and dict(settings.training.hyperparameters) == {}


def test_overrides_are_not_expanded(mlops_home, monkeypatch):
    """Run conf is untrusted: ``${VAR}`` in an override stays text, it never reads our environment."""
    monkeypatch.setenv("MLOPS_TEST_TABLE", "events")
    source = {"conn_id": "db", "table": "${MLOPS_TEST_TABLE}", "watermark_column": "t"}
    settings = load_settings("dev", overrides={"dataset": {"sql_source": source}})
    assert settings.dataset.sql_source is not None and settings.dataset.sql_source.table == "${MLOPS_TEST_TABLE}"


# --------------------------------------------------------------------------- error messages
@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        pytest.param(
            {"training": {"windw_days": 3}},
            "training.windw_days: unknown setting (did you mean 'window_days'?); allowed here: model_name, "
            "algorithm, hyperparameters, window_days, holdout_days, timeout_minutes, min_rows",
            id="unknown-key",
        ),
        pytest.param({"telemetry": {"on": True}}, "telemetry: unknown setting; allowed here: backends,", id="section"),
        pytest.param({"serving": {"port": "abc"}}, "serving.port: must be a whole number (got 'abc')", id="type"),
        pytest.param({"dataset": {"file_patterns": "*.csv"}}, "dataset.file_patterns: must be a list", id="list"),
        pytest.param({"training": {"window_days": 0}}, "training.window_days: must be >= 1 (got 0)", id="range"),
        pytest.param({"serving": {"port": 70000}}, "serving.port: must be <= 65535 (got 70000)", id="port"),
        pytest.param(
            {"monitoring": {"column_p_value": 1.5}}, "monitoring.column_p_value: must be < 1 (got 1.5)", id="p-value"
        ),
        pytest.param(
            {"backends": {"compute": "gpu"}},
            "backends.compute: must be one of 'local', 'aws', 'azure' (got 'gpu')",
            id="enum",
        ),
        pytest.param(
            {"dataset": {"arrival": {"rule": "magic"}}},
            "dataset.arrival.rule: must be one of 'stable', 'marker', 'rename' (got 'magic')",
            id="nested-enum",
        ),
        pytest.param(
            {"features": {"project": "../../x"}},
            "features.project: must match [A-Za-z0-9][A-Za-z0-9_]{0,62} (letters, digits and '_', starting with a "
            "letter or digit, at most 63 characters (Feast on SQLite)) (got '../../x')",
            id="project-name",
        ),
        pytest.param({"training": {"model_name": "a/b"}}, "training.model_name: must match", id="model-name"),
        pytest.param({"registry": {"experiment": "../x"}}, "registry.experiment: must match", id="experiment"),
        pytest.param(
            {"evaluation": {"thresholds": {"rmse": 3}}},
            "evaluation.thresholds.rmse: a threshold on 'rmse', which the model does not report; metrics for a "
            "classification contract ('churn'): 'roc_auc', 'accuracy', 'f1', 'log_loss'",
            id="metric-task",
        ),
        pytest.param(
            {"evaluation": {"thresholds": {"roc_auc": 65}}},
            "evaluation.thresholds.roc_auc: roc_auc is always between 0 and 1",
            id="metric-range",
        ),
        pytest.param(
            {"training": {"algorithm": "ridge"}},
            "training.algorithm: must be one of 'hist_gradient_boosting', 'random_forest', 'logistic_regression' "
            "for a classification contract ('churn') (got 'ridge')",
            id="algorithm-task",
        ),
        pytest.param(
            {"training": {"holdout_days": 30}},
            "training.holdout_days: must be less than training.window_days (30)",
            id="cross-field",
        ),
        pytest.param(
            {"promotion": {"next_env": "dev"}},
            "promotion.next_env: must be one of 'staging', 'prod', or null after 'dev'",
            id="next-env",
        ),
        pytest.param(
            {"dataset": {"arrival": {"marker": "../{name}.done"}}},
            "dataset.arrival.marker: must be a file name",
            id="marker",
        ),
        pytest.param(
            {"dataset": {"sql_source": {"conn_id": "db", "table": "t"}}},
            "dataset.sql_source.watermark_column: required",
            id="missing",
        ),
        pytest.param(
            {"alerts": {"smtp_conn_id": "smtp_default"}},
            "alerts.email_to: alerts.smtp_conn_id is set, so email needs at least one recipient (got none)",
            id="alerts-no-recipient",
        ),
        pytest.param(
            {"alerts": {"kinds": ["drift", "pager"]}},
            "alerts.kinds[1]: must be one of 'drift', 'decay', 'quarantine', 'rejected_challenger', "
            "'deployment_failed', 'dag_failed' (got 'pager')",
            id="alerts-kind",
        ),
        pytest.param(
            {"alerts": {"email_to": ["ops@example.com\nBcc: all@example.com"]}},
            "alerts.email_to[0]: must match",
            id="alerts-recipient-header",
        ),
        pytest.param(
            {"alerts": {"webhook_endpoint": "https://elsewhere.example/hook"}},
            "alerts.webhook_endpoint: must be a path after the connection's URL",
            id="alerts-endpoint-url",
        ),
        pytest.param(
            {"alerts": {"timeout_seconds": 0}}, "alerts.timeout_seconds: must be > 0 (got 0)", id="alerts-timeout"
        ),
    ],
)
def test_errors_name_file_key_value_and_allowed_values(mlops_home, tmp_path, monkeypatch, sections, expected):
    path = _conf_dir(tmp_path, monkeypatch, **sections)
    with pytest.raises(SettingsError) as info:
        load_settings("dev")
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_every_error_is_reported_at_once(mlops_home, tmp_path, monkeypatch):
    path = _conf_dir(tmp_path, monkeypatch, training={"window_days": 0, "min_rows": -1})
    with pytest.raises(SettingsError) as info:
        load_settings("dev")
    assert str(info.value).splitlines() == [
        f"{path}: training.window_days: must be >= 1 (got 0)",
        f"{path}: training.min_rows: must be >= 1 (got -1)",
    ]


def test_unknown_environment_and_missing_file(mlops_home, tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match=r"unknown environment 'qa'; expected one of 'dev', 'staging', 'prod'"):
        load_settings("qa")
    monkeypatch.setenv("MLOPS_CONF_DIR", str(tmp_path))
    with pytest.raises(SettingsError, match=r"settings file not found: .*prod\.yaml"):
        load_settings("prod")


def test_settings_are_frozen(mlops_home):
    settings = load_settings("dev")
    with pytest.raises(ValueError, match="frozen"):
        settings.training.window_days = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.evaluation.thresholds["f1"] = 0.1  # type: ignore[index]


# --------------------------------------------------------------------------- ${VAR} expansion
def test_environment_variables_are_expanded_with_types_and_defaults(mlops_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_DAYS", "12")
    monkeypatch.setenv("MLOPS_TEST_HOST", "10.0.0.5")
    monkeypatch.delenv("MLOPS_TEST_UNSET", raising=False)
    _conf_dir(
        tmp_path,
        monkeypatch,
        training={"window_days": "${MLOPS_TEST_DAYS}", "hyperparameters": {"max_iter": "${MLOPS_TEST_DAYS}"}},
        serving={"host": "${MLOPS_TEST_HOST}", "smoke_rows": "${MLOPS_TEST_UNSET:-3}"},
        storage={"root": "data/${MLOPS_TEST_UNSET:-store}-${MLOPS_TEST_DAYS}"},
        features={"ttl_days": "${MLOPS_TEST_UNSET:-}"},  # unset and no default: the key's default
    )
    settings = load_settings("dev")
    assert settings.training.window_days == 12
    assert settings.training.hyperparameters["max_iter"] == 12  # one reference takes the YAML type
    assert (settings.serving.host, settings.serving.smoke_rows) == ("10.0.0.5", 3)
    assert settings.storage_root == str(mlops_home / "data" / "store-12")
    assert settings.features.ttl_days == 3650
    assert settings.serving.port != 5101  # the shipped ${MLOPS_SERVING_PORT_DEV:-5101}, set by the fixture


def test_unset_variable_without_default_names_the_key(mlops_home, tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_TEST_UNSET", raising=False)
    path = _conf_dir(tmp_path, monkeypatch, registry={"tracking_uri": "${MLOPS_TEST_UNSET}"})
    with pytest.raises(SettingsError) as info:
        load_settings("dev")
    assert str(info.value) == (
        f"{path}: registry.tracking_uri: environment variable MLOPS_TEST_UNSET is not set "
        "(set it, or give a default: ${MLOPS_TEST_UNSET:-value})"
    )


def test_credential_variables_are_refused(mlops_home, tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    _conf_dir(tmp_path, monkeypatch, registry={"tracking_uri": "postgresql://app:${DB_PASSWORD}@db/mlflow"})
    with pytest.raises(SettingsError, match=r"registry\.tracking_uri: \$\{DB_PASSWORD\} names a credential") as info:
        load_settings("dev")
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------------------- one source of truth
def test_task_tables_match_what_training_builds_and_reports():
    """settings' per-task algorithms and metrics are what training.model really builds and reports."""
    from mlops_core.training.model import ALGORITHMS, compute_metrics

    assert {task: tuple(algos) for task, algos in ALGORITHMS.items()} == TASK_ALGORITHMS
    y = np.array([0, 1, 0, 1])
    reported = {
        "classification": compute_metrics("classification", y, y, y_score=np.array([0.2, 0.8, 0.3, 0.9])),
        "regression": compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.1, 2.9])),
    }
    assert {task: set(metrics) for task, metrics in reported.items()} == {t: set(m) for t, m in TASK_METRICS.items()}
    assert set(METRIC_DIRECTIONS) == {m for metrics in TASK_METRICS.values() for m in metrics}


def test_environments_module_is_light_and_ordered():
    """DAG files import the environment list on every parse: it must not pull pydantic or YAML in."""
    code = "import sys, mlops_core.environments; print(sorted({'pydantic', 'yaml'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    assert later_environments("dev") == ("staging", "prod") and later_environments("prod") == ()
    with pytest.raises(ValueError, match="unknown environment 'qa'"):
        later_environments("qa")


def test_the_drop_zone_may_be_an_s3_prefix(mlops_home):
    s3 = load_settings("dev", {"dataset": {"drop_zone": "s3://my-bucket/drop/churn", "mark_consumed": "tag"}})
    assert s3.dataset.drop_zone == "s3://my-bucket/drop/churn/"  # text, always ending in '/'
    assert s3.dataset.mark_consumed == "tag"
    assert load_settings("dev").dataset.mark_consumed == "archive"
    for bad in ("s3://my-bucket", "s3://my-bucket/", "s3://my-bucket/a/../b", "s3://My_Bucket/a", "https://h/a"):
        with pytest.raises(SettingsError, match=r"dataset\.drop_zone: must be a folder or s3://"):
            load_settings("dev", {"dataset": {"drop_zone": bad}})
    with pytest.raises(SettingsError, match=r"dataset\.mark_consumed: tag marks consumed objects of an s3://"):
        load_settings("dev", {"dataset": {"mark_consumed": "tag"}})  # a local folder archives
    with pytest.raises(SettingsError, match=r"dataset\.arrival\.rule: marker is not offered"):
        load_settings("dev", {"dataset": {"drop_zone": "s3://my-bucket/d", "arrival": {"rule": "marker"}}})


def test_mlops_core_builds_only_the_local_drop_zone(mlops_home):
    from mlops_core.backends import BackendNotAvailable, drop_source
    from mlops_core.delivered_files import DropZone

    assert isinstance(drop_source(load_settings("dev")), DropZone)
    with pytest.raises(BackendNotAvailable, match="drop_source_for"):
        drop_source(load_settings("dev", {"dataset": {"drop_zone": "s3://my-bucket/drop/churn/"}}))
