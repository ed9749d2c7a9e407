"""Typed settings, one YAML file per environment (``include/conf/<env>.yaml``).

Layers, lowest first: the YAML file of the environment, then ``${VAR}`` / ``${VAR:-default}``
references to environment variables inside it, then per-run overrides passed by the caller
(for example a DAG run's ``Param``s). Secrets never live here: they are Airflow connections or a
secrets backend, and settings only name the connection id.

Relative paths are resolved against ``MLOPS_HOME`` (default ``<repo>/.mlops``), where the local
backend keeps everything it writes; repository paths (the contract) against the repo root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF_DIR = REPO_ROOT / "include" / "conf"
ENVIRONMENTS = ("dev", "staging", "prod")
BACKENDS = ("local", "aws", "azure")

# Metric name -> True when larger is better. Used by the promotion gate.
METRIC_DIRECTIONS = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}


class SettingsError(ValueError):
    """A settings file is missing, malformed, or names an unknown value."""


@dataclass(frozen=True)
class BackendSettings:
    storage: str = "local"
    compute: str = "local"
    registry_mirror: str = "none"
    serving: str = "local"


@dataclass(frozen=True)
class SqlSourceSettings:
    conn_id: str
    table: str
    watermark_column: str
    batch_size: int = 50_000


@dataclass(frozen=True)
class ArrivalSettings:
    """When a file in the drop zone is complete (``mlops_core.dropzone`` explains the rules)."""

    rule: str = "stable"  # stable | marker | rename
    min_age_seconds: float = 5
    marker: str = "{name}.done"  # rule marker: per-file marker; a name without {name} marks the folder
    poll_seconds: float = 5


@dataclass(frozen=True)
class DatasetSettings:
    contract: Path
    drop_zone: Path
    file_patterns: tuple[str, ...] = ("*.csv", "*.csv.gz", "*.parquet")
    sql_source: SqlSourceSettings | None = None
    arrival: ArrivalSettings = field(default_factory=ArrivalSettings)


@dataclass(frozen=True)
class FeatureSettings:
    project: str
    ttl_days: int = 3650


@dataclass(frozen=True)
class TrainingSettings:
    model_name: str
    algorithm: str = "hist_gradient_boosting"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    window_days: int = 30
    holdout_days: int = 1
    timeout_minutes: int = 30
    min_rows: int = 200


@dataclass(frozen=True)
class EvaluationSettings:
    primary_metric: str = "roc_auc"
    thresholds: dict[str, float] = field(default_factory=dict)
    min_improvement: float = 0.0

    @property
    def greater_is_better(self) -> bool:
        return METRIC_DIRECTIONS[self.primary_metric]


@dataclass(frozen=True)
class RegistrySettings:
    tracking_uri: str
    artifact_root: Path
    experiment: str = "mlops"


@dataclass(frozen=True)
class ServingSettings:
    host: str = "127.0.0.1"
    port: int = 5101
    smoke_rows: int = 5
    startup_timeout_seconds: int = 120


@dataclass(frozen=True)
class MonitoringSettings:
    drift_share_threshold: float = 0.3
    column_p_value: float = 0.05
    min_rows: int = 100
    reference_rows: int = 20_000
    max_metric_drop: float = 0.05


@dataclass(frozen=True)
class PromotionSettings:
    next_env: str | None = None
    require_approval: bool = False


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    backends: BackendSettings
    dataset: DatasetSettings
    storage_root: str
    features: FeatureSettings
    training: TrainingSettings
    evaluation: EvaluationSettings
    registry: RegistrySettings
    serving: ServingSettings
    monitoring: MonitoringSettings
    promotion: PromotionSettings

    @property
    def registered_model_name(self) -> str:
        """Each environment has its own registry namespace: ``<env>.<model_name>``."""
        return f"{self.env}.{self.training.model_name}"

    def load_contract(self):
        from mlops_core.contract import DatasetContract

        return DatasetContract.from_yaml(self.dataset.contract)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise SettingsError(f"environment variable {name} is referenced in settings but not set")
            return default

        expanded = _VAR.sub(sub, value)
        if expanded != value and _VAR.fullmatch(value):
            # A value that is one reference takes the YAML type of what it expands to (a port -> int).
            import yaml

            parsed = yaml.safe_load(expanded) if expanded else expanded
            return parsed if isinstance(parsed, (int, float, bool)) else expanded
        return expanded
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def mlops_home() -> Path:
    return Path(os.environ.get("MLOPS_HOME", REPO_ROOT / ".mlops")).expanduser().resolve()


def current_env() -> str:
    return os.environ.get("MLOPS_ENV", "dev")


def load_settings(env: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``<conf dir>/<env>.yaml`` (conf dir: ``MLOPS_CONF_DIR``, env: ``MLOPS_ENV``, default dev).

    ``overrides`` is a nested dict merged over the file, e.g. ``{"evaluation": {"min_improvement": 0.01}}``.
    """
    import yaml

    env = env or current_env()
    if env not in ENVIRONMENTS:
        raise SettingsError(f"unknown environment {env!r}; expected one of {ENVIRONMENTS}")
    conf_dir = Path(os.environ.get("MLOPS_CONF_DIR", DEFAULT_CONF_DIR))
    path = conf_dir / f"{env}.yaml"
    if not path.is_file():
        raise SettingsError(f"settings file not found: {path} (set MLOPS_CONF_DIR or create it)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    raw = _deep_merge(raw, overrides or {})
    raw = _expand(raw)
    try:
        return _build(env, raw, path)
    except (KeyError, TypeError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _section(cls, raw: dict | None, where: str, **extra):
    raw = dict(raw or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {unknown}; allowed: {sorted(names)}")
    return cls(**{**raw, **extra})


def _build(env: str, raw: dict, path: Path) -> Settings:
    home = mlops_home()

    def home_path(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (home / q).resolve()

    def repo_path(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (REPO_ROOT / q).resolve()

    backends = _section(BackendSettings, raw.get("backends"), f"{path}: backends")
    for name, value in (("storage", backends.storage), ("compute", backends.compute), ("serving", backends.serving)):
        if value not in BACKENDS:
            raise SettingsError(f"{path}: backends.{name} must be one of {BACKENDS}, got {value!r}")

    ds_raw = dict(raw["dataset"])
    sql = ds_raw.pop("sql_source", None)
    arrival = ds_raw.pop("arrival", None)
    dataset = _section(
        DatasetSettings,
        {k: v for k, v in ds_raw.items() if k not in ("contract", "drop_zone", "file_patterns")},
        f"{path}: dataset",
        contract=repo_path(ds_raw["contract"]),
        drop_zone=home_path(ds_raw.get("drop_zone", "drop")),
        file_patterns=tuple(ds_raw.get("file_patterns", ("*.csv", "*.csv.gz", "*.parquet"))),
        sql_source=_section(SqlSourceSettings, sql, f"{path}: dataset.sql_source") if sql else None,
        arrival=_section(ArrivalSettings, arrival, f"{path}: dataset.arrival"),
    )
    storage_root = str(raw.get("storage", {}).get("root", "store"))
    if backends.storage == "local" and "://" not in storage_root:
        storage_root = str(home_path(storage_root))

    reg_raw = dict(raw.get("registry") or {})
    tracking_uri = reg_raw.pop("tracking_uri", "sqlite:///mlflow/mlflow.db")
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        tracking_uri = f"sqlite:///{home_path(tracking_uri[len('sqlite:///') :])}"
    registry = _section(
        RegistrySettings,
        {k: v for k, v in reg_raw.items() if k != "artifact_root"},
        f"{path}: registry",
        tracking_uri=tracking_uri,
        artifact_root=home_path(reg_raw.get("artifact_root", "mlflow/artifacts")),
    )

    evaluation = _section(EvaluationSettings, raw.get("evaluation"), f"{path}: evaluation")
    for metric in (evaluation.primary_metric, *evaluation.thresholds):
        if metric not in METRIC_DIRECTIONS:
            raise SettingsError(f"{path}: unknown metric {metric!r}; known: {sorted(METRIC_DIRECTIONS)}")

    promotion = _section(PromotionSettings, raw.get("promotion"), f"{path}: promotion")
    if promotion.next_env is not None and promotion.next_env not in ENVIRONMENTS:
        raise SettingsError(f"{path}: promotion.next_env must be one of {ENVIRONMENTS}")

    return Settings(
        env=env,
        home=home,
        backends=backends,
        dataset=dataset,
        storage_root=storage_root,
        features=_section(FeatureSettings, raw.get("features"), f"{path}: features"),
        training=_section(TrainingSettings, raw.get("training"), f"{path}: training"),
        evaluation=evaluation,
        registry=registry,
        serving=_section(ServingSettings, raw.get("serving"), f"{path}: serving"),
        monitoring=_section(MonitoringSettings, raw.get("monitoring"), f"{path}: monitoring"),
        promotion=promotion,
    )


def with_overrides(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """Return a copy with some fields of some sections replaced (typed, no YAML round trip)."""
    changes = {}
    for name, values in sections.items():
        current = getattr(settings, name)
        if not is_dataclass(current):
            raise SettingsError(f"cannot override {name!r}")
        changes[name] = replace(current, **values)
    return replace(settings, **changes)


def with_algorithm(settings: Settings, algorithm: str | None) -> Settings:
    """Settings that train ``algorithm``. The configured hyperparameters belong to the configured
    algorithm, so another algorithm starts from its own defaults."""
    if not algorithm or algorithm == settings.training.algorithm:
        return settings
    return with_overrides(settings, training={"algorithm": algorithm, "hyperparameters": {}})
