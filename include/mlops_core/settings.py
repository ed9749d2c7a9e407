"""Typed settings, one YAML file per environment (``include/conf/<env>.yaml``), validated at load.

Layers, lowest first:

1. defaults that follow from the dataset contract (``dataset.contract``): the model name, the
   Feast project, the MLflow experiment, the drop zone and the metrics of the contract's task;
2. the YAML file of the environment, with ``${VAR}`` / ``${VAR:-default}`` references to
   environment variables expanded (a value that is only ``${VAR:-}`` and expands to nothing
   leaves the key unset, so its default applies);
3. per-run overrides passed by the caller (for example a DAG run's ``Param``s), never expanded.

A layer replaces the leaves of the one below: a section (``training:``) merges key by key, any
other value, including a mapping-valued setting such as ``evaluation.thresholds`` or
``training.hyperparameters``, replaces the lower layer's value whole.

Everything is checked when the settings load (pydantic models, unknown keys rejected, frozen),
and against the contract: a metric the task cannot produce, an algorithm of the other task, a
name that would become a path or a registry name outside its allowed pattern. Errors name the
file, the full key, the bad value and what is allowed::

    include/conf/dev.yaml: training.window_days: must be >= 1 (got 0)

Secrets never live here: they are Airflow connections or a secrets backend, and settings only
name the connection id. A ``${VAR}`` whose name looks like a credential is refused.

Relative paths are resolved against ``MLOPS_HOME`` (default ``<repo>/.mlops``), where the local
backend keeps everything it writes; repository paths (the contract) against the repo root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mlops_core.child_env import is_secret_name
from mlops_core.environments import ENVIRONMENTS, current_env, later_environments
from mlops_core.errors import PermanentError

if TYPE_CHECKING:
    from mlops_core.contract import DatasetContract

__all__ = [
    "BACKENDS",
    "DEFAULT_CONF_DIR",
    "ENVIRONMENTS",
    "METRIC_DIRECTIONS",
    "REPO_ROOT",
    "TASK_ALGORITHMS",
    "TASK_METRICS",
    "Settings",
    "SettingsError",
    "current_env",
    "load_settings",
    "mlops_home",
    "with_algorithm",
    "with_overrides",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF_DIR = REPO_ROOT / "include" / "conf"
BACKENDS = ("local", "aws", "azure")
REGISTRY_MIRRORS = ("none", "sagemaker", "azure_ml")
CATALOGS = ("none", "glue")
ARRIVAL_RULES = ("stable", "marker", "rename")
ARRIVAL_VIA = ("sensor", "watcher")
SQS_QUEUE_URL = (re.compile(r"https?://[A-Za-z0-9.:-]+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?"), "an SQS queue URL")
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
LABELS_PREFIX = (
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,3}"),
    "a key prefix of the object store: 1-4 plain names joined by '/', no '..', e.g. 'labels'",
)
GLUE_NAME = (re.compile(r"[a-z][a-z0-9_]{0,127}"), "lowercase letters, digits and _, starting with a letter")
ROLE_ARN = (re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"), "an IAM role ARN")
INSTANCE_TYPE = (re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+"), "a SageMaker instance type such as ml.m5.large")
SAGEMAKER_NAME = (re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"), "letters, digits and -, at most 63")
S3_ROOT = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?")
S3_DROP_ZONE = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(\S+)")
MARK_CONSUMED = ("archive", "tag")
# What can alert (mlops_core.alerts decides which outcome is which kind; a test keeps the two in step)
ALERT_KINDS = ("drift", "decay", "quarantine", "rejected_challenger", "deployment_failed", "dag_failed")
EMAIL_ADDRESS = (re.compile(r"[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+"), "an address such as ops@example.com")

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
# What ``training.model.compute_metrics`` reports per task (a test keeps the two in step).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "accuracy", "f1", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
# The algorithms ``training.model.build_pipeline`` builds per task (a test keeps the two in step).
TASK_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "classification": ("hist_gradient_boosting", "random_forest", "logistic_regression"),
    "regression": ("hist_gradient_boosting", "random_forest", "ridge"),
}
# The gate's defaults per task: a classifier must beat chance ordering clearly; a regressor must
# beat predicting the mean (r2 > 0), whatever the unit of its target.
TASK_DEFAULT_METRICS: dict[str, tuple[str, dict[str, float]]] = {
    "classification": ("roc_auc", {"roc_auc": 0.6}),
    "regression": ("rmse", {"r2": 0.0}),
}
# Values a metric can take (None: unbounded); a threshold outside can never or always pass.
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "roc_auc": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "log_loss": (0.0, None),
    "rmse": (0.0, None),
    "mae": (0.0, None),
    "r2": (None, 1.0),
}

# Names that become paths or registry names. (pattern, what it allows)
MODEL_NAME = (
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"),
    "letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters",
)
FEAST_PROJECT = (
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,62}"),
    "letters, digits and '_', starting with a letter or digit, at most 63 characters (Feast on SQLite)",
)
EXPERIMENT_NAME = (
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"),
    "letters, digits, '_', '-' and '.', starting with a letter or digit, at most 128 characters",
)


class SettingsError(PermanentError, ValueError):
    """A settings file is missing, malformed, or names an unknown value."""


def mlops_home() -> Path:
    """Where the local backend keeps everything: ``$MLOPS_HOME``, default ``<repo>/.mlops``."""
    return Path(os.environ.get("MLOPS_HOME", REPO_ROOT / ".mlops")).expanduser().resolve()


# ============================================================================ field validators
@dataclass(frozen=True)
class _LoadContext:
    """What validators need beyond the values: handed to pydantic as the validation context."""

    env: str
    home: Path
    contract: DatasetContract
    layers: _Layers


def _load_context(info: ValidationInfo | Any) -> _LoadContext | None:
    context = getattr(info, "context", info)
    found = context.get("mlops_settings") if isinstance(context, Mapping) else None
    return found if isinstance(found, _LoadContext) else None


def _invalid(message: str, subkey: str | None = None) -> PydanticCustomError:
    """A validation error whose text is ``message`` (``subkey``: a key below the field, for the path)."""
    context: dict[str, Any] = {"message": message}
    if subkey is not None:
        context["subkey"] = subkey
    return PydanticCustomError("settings", "{message}", context)


def _quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _choice(allowed: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise _invalid(f"must be one of {_quoted(allowed)} (got {value!r})")
        return value

    return AfterValidator(check)


def _pattern(rule: tuple[re.Pattern[str], str]) -> AfterValidator:
    pattern, allows = rule

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise _invalid(f"must match {pattern.pattern} ({allows}) (got {value!r})")
        return value

    return AfterValidator(check)


def _not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise _invalid("must not be empty")
    return value


def _home_path(value: Path, info: ValidationInfo) -> Path:
    loaded = _load_context(info)
    path = value.expanduser()
    return path if path.is_absolute() else ((loaded.home if loaded else mlops_home()) / path).resolve()


def _cron(value: str) -> str:
    """A cron expression Airflow's ``CronTriggerTimetable`` takes: a preset or five fields."""
    text = " ".join(value.split())
    fields = text.split(" ")
    if text in CRON_PRESETS or (len(fields) == 5 and all(re.fullmatch(r"[0-9A-Za-z*/,?#L-]+", f) for f in fields)):
        return text
    raise _invalid(f"must be a cron expression (five fields, or one of {_quoted(CRON_PRESETS)}); got {value!r}")


def _drop_zone(value: Any, info: ValidationInfo) -> Path | str:
    """A local folder (relative to ``MLOPS_HOME``) or ``s3://<bucket>/<prefix>/`` (kept as text, ending in ``/``)."""
    if isinstance(value, str) and "://" in value:
        match = S3_DROP_ZONE.fullmatch(value) if value.isprintable() else None
        prefix = match.group(2).strip("/") if match else ""
        if match is None or not prefix or any(part in ("", ".", "..") for part in prefix.split("/")):
            raise _invalid(
                "must be a folder or s3://<bucket>/<prefix>/ with a prefix that is not empty and has no '.', "
                f"'..' or '//' parts (got {value!r})"
            )
        return f"s3://{match.group(1)}/{prefix}/"
    if not isinstance(value, (str, Path)):
        raise _invalid(f"must be a folder or s3://<bucket>/<prefix>/ (got {value!r})")
    _not_blank(value)
    return _home_path(Path(value), info)


def is_s3_uri(location: object) -> bool:
    """Whether a location setting (``dataset.drop_zone``) names S3 rather than a local folder."""
    return isinstance(location, str) and location.startswith("s3://")


def _repo_path(value: Path) -> Path:
    path = value.expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
HomePath = Annotated[Path, BeforeValidator(_not_blank), AfterValidator(_home_path)]
RepoPath = Annotated[Path, BeforeValidator(_not_blank), AfterValidator(_repo_path)]
DropZoneLocation = Annotated[Path | str, PlainValidator(_drop_zone), PlainSerializer(str, return_type=str)]
Backend = Annotated[str, _choice(BACKENDS)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Read-only after load (a frozen model with a plain dict inside could still be changed in place).
Hyperparameters = Annotated[
    Mapping[str, str | int | float | bool | None], AfterValidator(_freeze), PlainSerializer(dict, return_type=dict)
]
Thresholds = Annotated[Mapping[str, FiniteFloat], AfterValidator(_freeze), PlainSerializer(dict, return_type=dict)]


def _file_pattern(value: str) -> str:
    if not value or "/" in value or "\\" in value:
        raise _invalid(f"a pattern matches file names, so it must be non-empty and have no '/' or '\\' (got {value!r})")
    return value


def _marker_name(value: str) -> str:
    rest = value.replace("{name}", "x")
    if not value or "/" in rest or "\\" in rest or "{" in rest or "}" in rest or rest in (".", ".."):
        raise _invalid(
            "must be a file name, optionally with the placeholder {name} (the data file's name), "
            f"without '/', '\\' or other placeholders, e.g. '{{name}}.done' or '_SUCCESS' (got {value!r})"
        )
    return value


def _none_as_text(value: Any) -> Any:
    return "none" if value is None else value


# ============================================================================ sections
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class BackendSettings(_Section):
    """Which implementation serves each concern (``backends:``)."""

    storage: Backend = "local"
    compute: Backend = "local"
    registry_mirror: Annotated[str, BeforeValidator(_none_as_text), _choice(REGISTRY_MIRRORS)] = "none"
    serving: Backend = "local"
    # Where committed dataset versions are registered for query engines: none | glue (needs storage aws)
    catalog: Annotated[str, BeforeValidator(_none_as_text), _choice(CATALOGS)] = "none"


class SqlSourceSettings(_Section):
    """A SQL table read incrementally by a watermark column (``dataset.sql_source:``)."""

    conn_id: NonEmptyStr
    table: NonEmptyStr
    watermark_column: NonEmptyStr
    batch_size: int = Field(default=50_000, ge=1)


class ArrivalSettings(_Section):
    """When a file in the drop zone counts as completely written (``dataset.arrival:``)."""

    rule: Annotated[str, _choice(ARRIVAL_RULES)] = "stable"
    min_age_seconds: FiniteFloat = Field(default=5.0, ge=0)
    marker: Annotated[str, AfterValidator(_marker_name)] = "{name}.done"
    poll_seconds: FiniteFloat = Field(default=5.0, gt=0)
    # How ingest hears of new files: sensor (the watch_drop_zone DAG) or watcher (AssetWatchers on landed_files)
    via: Annotated[str, _choice(ARRIVAL_VIA)] = "sensor"
    sqs_queue: Annotated[str, _pattern(SQS_QUEUE_URL)] | None = None  # watcher on S3: the notifications' queue
    reconcile_schedule: Annotated[str, AfterValidator(_cron)] | None = "@hourly"  # watcher: also ingest on this cron


class DatasetSettings(_Section):
    """Where data comes from and what it must look like (``dataset:``)."""

    contract: RepoPath
    drop_zone: DropZoneLocation = Path("drop")  # a folder (Path), or "s3://bucket/prefix/" (str)
    mark_consumed: Annotated[str, _choice(MARK_CONSUMED)] = "archive"
    file_patterns: tuple[Annotated[str, AfterValidator(_file_pattern)], ...] = Field(
        default=("*.csv", "*.csv.gz", "*.parquet"), min_length=1
    )
    max_file_mb: int = Field(default=256, ge=1)
    ingest_batch_mb: int = Field(default=64, ge=1)  # text parsed at a time (validated in 4 slices); 1/4 of it staged
    ingest_scratch_dir: HomePath | None = None  # local scratch of ingest (file copies, spilled rows); None: TMPDIR
    arrival: ArrivalSettings = Field(default_factory=ArrivalSettings)
    sql_source: SqlSourceSettings | None = None

    @field_validator("mark_consumed")
    @classmethod
    def _tags_need_s3(cls, value: str, info: ValidationInfo) -> str:
        if value == "tag" and not is_s3_uri(info.data.get("drop_zone")):
            raise _invalid("tag marks consumed objects of an s3:// drop zone; a local drop zone archives (got 'tag')")
        return value

    @field_validator("arrival")
    @classmethod
    def _rule_fits_the_drop_zone(cls, value: ArrivalSettings, info: ValidationInfo) -> ArrivalSettings:
        s3 = is_s3_uri(info.data.get("drop_zone"))
        if value.rule == "marker" and s3:
            raise _invalid("marker is not offered for an s3:// drop zone: use stable or rename", "rule")
        if value.via == "watcher" and s3 and value.sqs_queue is None:
            raise _invalid(
                "a watcher on an s3:// drop zone reads the bucket's event notifications: set the SQS queue they go to",
                "sqs_queue",
            )
        if value.sqs_queue is not None and not s3:
            raise _invalid(
                "an SQS queue carries the notifications of an s3:// drop zone; this one is a folder", "sqs_queue"
            )
        return value


class StorageSettings(_Section):
    """Root of the object store (``storage:``); ``Settings.storage_root`` is its resolved form.

    ``local``: a folder (relative to ``MLOPS_HOME``); ``aws``: ``s3://<bucket>/<prefix>``.
    """

    root: NonEmptyStr = "store"


class AwsSettings(_Section):
    """How the aws backends reach AWS (``aws:``); credentials live in the Airflow connection, never here."""

    conn_id: NonEmptyStr = "aws_default"
    glue_database_prefix: Annotated[str, _pattern(GLUE_NAME)] | None = None  # default: mlops_<env>
    multipart_threshold_mb: int = Field(default=64, ge=5)
    multipart_chunk_mb: int = Field(default=16, ge=5)
    # SageMaker training (backends.compute: aws)
    sagemaker_role_arn: Annotated[str, _pattern(ROLE_ARN)] | None = None
    training_image: NonEmptyStr | None = None
    training_instance_type: Annotated[str, _pattern(INSTANCE_TYPE)] = "ml.m5.large"
    training_instance_count: int = Field(default=1, ge=1)
    training_volume_gb: int = Field(default=30, ge=1)
    training_spot: bool = False
    training_max_wait_minutes: int | None = Field(default=None, ge=1)
    # SageMaker real-time endpoint (backends.serving: aws)
    inference_image: NonEmptyStr | None = None
    endpoint_name: Annotated[str, _pattern(SAGEMAKER_NAME)] | None = None  # default: <env>-<model name>
    serving_instance_type: Annotated[str, _pattern(INSTANCE_TYPE)] = "ml.m5.large"
    serving_instance_count: int = Field(default=1, ge=1)
    deployment_config: dict[str, Any] = Field(default_factory=dict)  # UpdateEndpoint's DeploymentConfig, as given
    endpoint_wait_minutes: int = Field(default=30, ge=1)


class FeatureSettings(_Section):
    """The Feast project (``features:``)."""

    project: Annotated[str, _pattern(FEAST_PROJECT)]
    ttl_days: int = Field(default=3650, ge=1)
    # Where Feast serves online features from: sqlite (a file under MLOPS_HOME), redis (the URL comes
    # from the Airflow connection redis_conn_id, never from here), dynamodb (region below).
    online_store: Literal["sqlite", "redis", "dynamodb"] = "sqlite"
    redis_conn_id: NonEmptyStr = "mlops_feature_redis"
    dynamodb_region: NonEmptyStr | None = None
    dynamodb_endpoint_url: NonEmptyStr | None = None  # a VPC endpoint or a local emulator; default: AWS's


class TrainingSettings(_Section):
    """What is trained on which rows (``training:``)."""

    model_name: Annotated[str, _pattern(MODEL_NAME)]
    algorithm: str = "hist_gradient_boosting"
    hyperparameters: Hyperparameters = Field(default_factory=dict)
    window_days: int = Field(default=30, ge=1)
    holdout_days: int = Field(default=1, ge=1)
    timeout_minutes: int = Field(default=30, ge=1)
    min_rows: int = Field(default=200, ge=1)
    poll_seconds: FiniteFloat = Field(default=5.0, gt=0)  # how often a waiting task asks the job's status
    validation_days: int = Field(default=0, ge=0)  # the days before the holdout: the validation channel

    @field_validator("algorithm")
    @classmethod
    def _algorithm_fits_task(cls, value: str, info: ValidationInfo) -> str:
        loaded = _load_context(info)
        if loaded is None:
            allowed = tuple(dict.fromkeys(a for algos in TASK_ALGORITHMS.values() for a in algos))
            where = ""
        else:
            allowed = TASK_ALGORITHMS[loaded.contract.task]
            where = f" for a {loaded.contract.task} contract ({loaded.contract.name!r})"
        if value not in allowed:
            raise _invalid(f"must be one of {_quoted(allowed)}{where} (got {value!r})")
        return value

    @field_validator("holdout_days")
    @classmethod
    def _holdout_inside_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("window_days")
        if isinstance(window, int) and value >= window:
            raise _invalid(
                f"must be less than training.window_days ({window}), or nothing is left to train on (got {value})"
            )
        return value

    @field_validator("validation_days")
    @classmethod
    def _validation_inside_window(cls, value: int, info: ValidationInfo) -> int:
        window, holdout = info.data.get("window_days"), info.data.get("holdout_days")
        if isinstance(window, int) and isinstance(holdout, int) and value and holdout + value >= window:
            raise _invalid(
                f"training.holdout_days + validation_days must be less than training.window_days ({window}), "
                f"or nothing is left to train on (got {holdout} + {value})"
            )
        return value


class EvaluationSettings(_Section):
    """The promotion gate (``evaluation:``)."""

    primary_metric: str = "roc_auc"
    thresholds: Thresholds = Field(default_factory=dict)
    min_improvement: FiniteFloat = Field(default=0.0, ge=0)

    @property
    def greater_is_better(self) -> bool:
        """Direction of the primary metric."""
        return METRIC_DIRECTIONS[self.primary_metric]

    @staticmethod
    def _metrics(info: ValidationInfo) -> tuple[tuple[str, ...], str]:
        loaded = _load_context(info)
        if loaded is None:
            return tuple(METRIC_DIRECTIONS), ""
        task = loaded.contract.task
        return TASK_METRICS[task], f" for a {task} contract ({loaded.contract.name!r})"

    @field_validator("primary_metric")
    @classmethod
    def _primary_fits_task(cls, value: str, info: ValidationInfo) -> str:
        allowed, where = cls._metrics(info)
        if value not in allowed:
            raise _invalid(f"must be one of {_quoted(allowed)}{where} (got {value!r})")
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds_fit_task(cls, value: Mapping[str, float], info: ValidationInfo) -> Mapping[str, float]:
        allowed, where = cls._metrics(info)
        for metric, bound in value.items():
            if metric not in allowed:
                raise _invalid(
                    f"a threshold on {metric!r}, which the model does not report; metrics{where}: "
                    f"{_quoted(allowed)} (remove it or use one of them)",
                    subkey=metric,
                )
            low, high = METRIC_RANGES[metric]
            if (low is not None and bound < low) or (high is not None and bound > high):
                span = (
                    f"between {low:g} and {high:g}"
                    if low is not None and high is not None
                    else (f">= {low:g}" if low is not None else f"<= {high:g}")
                )
                raise _invalid(
                    f"{metric} is always {span}, so this threshold would reject (or pass) every model (got {bound:g})",
                    subkey=metric,
                )
        return value


class RegistrySettings(_Section):
    """MLflow (``registry:``)."""

    tracking_uri: NonEmptyStr = "sqlite:///mlflow/mlflow.db"
    artifact_root: HomePath = Path("mlflow/artifacts")
    experiment: Annotated[str, _pattern(EXPERIMENT_NAME)]

    @field_validator("tracking_uri")
    @classmethod
    def _sqlite_under_home(cls, value: str, info: ValidationInfo) -> str:
        prefix = "sqlite:///"
        if value.startswith(prefix) and not value.startswith(prefix + "/"):
            return f"{prefix}{_home_path(Path(value[len(prefix) :]), info)}"
        return value


class ServingSettings(_Section):
    """Where and how the champion is served (``serving:``)."""

    host: NonEmptyStr = "127.0.0.1"
    port: int = Field(default=5101, ge=1, le=65535)
    smoke_rows: int = Field(default=5, ge=1)
    startup_timeout_seconds: int = Field(default=120, ge=1)


class CaptureSettings(_Section):
    """Prediction capture on every serving target (``capture:``): see :mod:`mlops_core.capture`."""

    enabled: bool = True
    sampling_percent: int = Field(default=100, ge=1, le=100)  # share of requests recorded
    flush_records: int = Field(default=100, ge=1)  # local proxy: write a part file every N records ...
    flush_seconds: FiniteFloat = Field(default=10.0, gt=0, le=3600)  # ... or every T seconds, and on SIGTERM
    max_request_mb: FiniteFloat = Field(default=6.0, gt=0, le=1024)  # local proxy: larger bodies get 413


class ServingHealthSettings(_Section):
    """When the captured requests say serving is unhealthy (``serving_health:``)."""

    min_requests: int = Field(default=20, ge=1)  # fewer requests in the window: no verdict
    max_error_rate: FiniteFloat = Field(default=0.05, ge=0, le=1)  # share of requests answered non-2xx
    max_p95_latency_ms: FiniteFloat = Field(default=500.0, gt=0)


class MonitoringSettings(_Section):
    """When new data counts as drifted or the champion as decayed (``monitoring:``)."""

    drift_share_threshold: FiniteFloat = Field(default=0.3, gt=0, le=1)
    column_p_value: FiniteFloat = Field(default=0.05, gt=0, lt=1)
    min_rows: int = Field(default=100, ge=1)
    reference_rows: int = Field(default=20_000, ge=1)
    max_metric_drop: FiniteFloat = Field(default=0.05, ge=0)
    # the reference profile made at training time, and the streaming drift decision against it
    profile_bins: int = Field(default=20, ge=2, le=1000)
    profile_top_categories: int = Field(default=20, ge=1, le=10_000)
    numeric_drift_method: Literal["wasserstein", "psi"] = "wasserstein"
    wasserstein_threshold: FiniteFloat = Field(default=0.1, gt=0)
    psi_threshold: FiniteFloat = Field(default=0.2, gt=0)
    jensenshannon_threshold: FiniteFloat = Field(default=0.1, gt=0)
    missing_rate_change: FiniteFloat = Field(default=0.1, gt=0, le=1)
    drift_batch_rows: int = Field(default=65_536, ge=1_000)
    report_sample_rows: int = Field(default=20_000, ge=100)

    # --- delayed labels, live decay, staleness (mlops_core.labels, mlops_core.decay) ---
    labels_prefix: Annotated[str, _pattern(LABELS_PREFIX)] = "labels"  # label drop: <prefix>/<dataset>/ of the store
    label_join_days: FiniteFloat = Field(default=7.0, gt=0)  # a label joins the latest prediction at most this old
    decay_window_days: FiniteFloat = Field(default=7.0, gt=0)  # labels of the last N days make the live metric
    min_labelled_pairs: int = Field(default=500, ge=1)  # fewer joined (prediction, label) pairs: no decay verdict
    health_window_hours: FiniteFloat = Field(default=24.0, gt=0)  # captures judged by serving_health
    schedule: Annotated[str, AfterValidator(_cron)] | None = None  # also run the monitor on this cron (no new data)
    max_staleness_hours: FiniteFloat = Field(default=48.0, gt=0)  # newest dataset version / capture older: stale


class PromotionSettings(_Section):
    """Where this environment's champion goes next (``promotion:``)."""

    next_env: str | None = None
    require_approval: bool = False

    @field_validator("next_env")
    @classmethod
    def _later_environment(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        loaded = _load_context(info)
        allowed = later_environments(loaded.env) if loaded else ENVIRONMENTS
        if value not in allowed:
            where = f" after {loaded.env!r} (order: {' -> '.join(ENVIRONMENTS)})" if loaded else ""
            choices = _quoted(allowed) + ", or null" if allowed else "null"
            raise _invalid(f"must be {'one of ' if len(allowed) > 1 else ''}{choices}{where} (got {value!r})")
        return value


class AlertSettings(_Section):
    """Who is told what, and through which Airflow connections (``alerts:``). Nothing is sent until a
    channel names its connection; secrets (the webhook's token, the SMTP password) live in the
    connections, never here."""

    kinds: tuple[Annotated[str, _choice(ALERT_KINDS)], ...] = ALERT_KINDS
    webhook_conn_id: NonEmptyStr | None = None  # an HTTP connection (URL, auth, headers); None: no webhook
    webhook_endpoint: str = ""  # path after the connection's URL
    smtp_conn_id: NonEmptyStr | None = None  # an SMTP connection; None: no email
    email_to: tuple[Annotated[str, _pattern(EMAIL_ADDRESS)], ...] = ()
    email_from: Annotated[str, _pattern(EMAIL_ADDRESS)] | None = None  # None: the connection's from_email
    timeout_seconds: FiniteFloat = Field(default=10.0, gt=0, le=300)

    @field_validator("email_to")
    @classmethod
    def _recipients_for_smtp(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("smtp_conn_id") and not value:
            raise _invalid("alerts.smtp_conn_id is set, so email needs at least one recipient (got none)")
        return value

    @field_validator("webhook_endpoint")
    @classmethod
    def _relative_endpoint(cls, value: str) -> str:
        if "://" in value or not value.isprintable() or any(c.isspace() for c in value):
            raise _invalid(
                "must be a path after the connection's URL, without a scheme or spaces; the URL itself belongs "
                f"in the connection (got {value!r})"
            )
        return value


# ============================================================================ settings
class Settings(_Section):
    """All settings of one environment. Built only by :func:`load_settings` / :func:`with_overrides`."""

    backends: BackendSettings = Field(default_factory=BackendSettings)
    dataset: DatasetSettings
    storage: StorageSettings = Field(default_factory=StorageSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    features: FeatureSettings
    training: TrainingSettings
    evaluation: EvaluationSettings
    registry: RegistrySettings
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    serving_health: ServingHealthSettings = Field(default_factory=ServingHealthSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    _loaded: _LoadContext = PrivateAttr()
    _storage_root: str = PrivateAttr()

    @field_validator("aws")
    @classmethod
    def _sagemaker_training_is_configured(cls, value: AwsSettings, info: ValidationInfo) -> AwsSettings:
        backends = info.data.get("backends")
        if backends is not None and backends.compute == "aws":
            for key in ("sagemaker_role_arn", "training_image"):
                if getattr(value, key) is None:
                    raise _invalid("is required when backends.compute is aws (SageMaker training)", key)
            if backends.storage != "aws":
                raise _invalid("backends.compute aws needs backends.storage aws: SageMaker reads and writes S3")
        if backends is not None and backends.compute == "local" and backends.storage != "local":
            raise _invalid(
                f"backends.compute local runs jobs on this machine against a local store, not backends.storage "
                f"{backends.storage}: set backends.compute to {backends.storage} too"
            )
        if backends is not None and backends.serving == "aws":
            for key in ("sagemaker_role_arn", "inference_image"):
                if getattr(value, key) is None:
                    raise _invalid("is required when backends.serving is aws (SageMaker endpoint)", key)
            if backends.storage != "aws":
                raise _invalid("backends.serving aws needs backends.storage aws: the endpoint's model is on S3")
        return value

    @field_validator("storage")
    @classmethod
    def _root_fits_the_backend(cls, value: StorageSettings, info: ValidationInfo) -> StorageSettings:
        backends = info.data.get("backends")
        if backends is not None and backends.storage == "aws" and not S3_ROOT.fullmatch(value.root):
            raise _invalid(f"must be s3://<bucket>/<prefix> when backends.storage is aws (got {value.root!r})", "root")
        if backends is not None and backends.catalog == "glue" and backends.storage != "aws":
            raise _invalid(
                "backends.catalog glue registers dataset versions stored on S3: set backends.storage to aws "
                "(or backends.catalog to none)"
            )
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Keep what the loader knew (environment, home, contract, layers); resolve the store root."""
        loaded = _load_context(context)
        if loaded is None:
            raise TypeError("Settings are built by mlops_core.settings.load_settings() (and with_overrides())")
        self._loaded = loaded
        root = self.storage.root
        if self.backends.storage == "local" and "://" not in root:
            root = str(_home_path(Path(root), context))
        self._storage_root = root

    @property
    def env(self) -> str:
        """The environment these settings belong to (``dev``, ``staging``, ``prod``)."""
        return self._loaded.env

    @property
    def home(self) -> Path:
        """``MLOPS_HOME`` when the settings were loaded."""
        return self._loaded.home

    @property
    def storage_root(self) -> str:
        """``storage.root`` resolved: a folder under ``MLOPS_HOME`` for the local backend, else a URI."""
        return self._storage_root

    @property
    def source(self) -> Path:
        """The settings file these settings were read from."""
        return self._loaded.layers.source

    @property
    def contract(self) -> DatasetContract:
        """The dataset contract of ``dataset.contract``, read once when the settings loaded."""
        return self._loaded.contract

    def load_contract(self) -> DatasetContract:
        """The dataset contract (the same object as :attr:`contract`)."""
        return self._loaded.contract

    @property
    def registered_model_name(self) -> str:
        """Each environment has its own registry namespace: ``<env>.<model_name>``."""
        return f"{self.env}.{self.training.model_name}"


# ============================================================================ loading
@dataclass(frozen=True)
class _Layers:
    """The inputs of one build: the file (expanded) and the per-run overrides given so far."""

    source: Path
    file: dict[str, Any]
    overrides: dict[str, Any]


_PARSED_FILES: dict[tuple[str, int, int, int], Any] = {}
_CONTRACTS: dict[tuple[str, int, int, int], DatasetContract] = {}
_CACHE_LIMIT = 64
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNSET = object()


def _file_key(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _shown(path: Path | str) -> str:
    """A path as errors show it: relative to the repository when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> Any:
    key = _file_key(path)
    if key not in _PARSED_FILES:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            parsed = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise SettingsError(f"{_shown(path)}: not valid YAML: {exc}") from exc
        _remember(_PARSED_FILES, key, parsed)
    return _PARSED_FILES[key]


def _key(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _expand(value: Any, loc: tuple[Any, ...], source: Path) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of ``value`` (new containers; input untouched)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            expanded = _expand(v, (*loc, k), source)
            if expanded is not _UNSET:
                out[k] = expanded
        return out
    if isinstance(value, list):
        return [("" if (x := _expand(v, (*loc, i), source)) is _UNSET else x) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if is_secret_name(name):
            raise SettingsError(
                f"{_shown(source)}: {_key(loc)}: ${{{name}}} names a credential; settings never hold secrets "
                "(they are logged and recorded): keep it in an Airflow connection and name the connection here"
            )
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise SettingsError(
                f"{_shown(source)}: {_key(loc)}: environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-value}})"
            )
        return default

    expanded = _VAR.sub(substitute, value)
    if _VAR.fullmatch(value):
        if expanded == "":
            return _UNSET  # `${VAR:-}` with VAR unset or empty: the key's default applies
        # A value that is one reference takes the YAML type of what it expands to (a port -> int).
        try:
            parsed = yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
        return parsed if isinstance(parsed, int | float | bool) else expanded
    return expanded


def _section_model(model: type[BaseModel] | None, key: Any) -> type[BaseModel] | None:
    """The model of the section ``key`` of ``model`` (unwrapping ``X | None``), or None for a leaf."""
    if model is None or not isinstance(key, str) or key not in model.model_fields:
        return None
    annotation = model.model_fields[key].annotation
    candidates = get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _merge(model: type[BaseModel] | None, base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: sections (sub-models) merge key by key, every other value replaces."""
    out = dict(base)
    for key, value in over.items():
        sub = _section_model(model, key)
        if sub is not None and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(sub, out[key], value)
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    """A private copy of caller-given overrides (mappings -> dicts, lists/tuples -> lists)."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _has(tree: Any, loc: tuple[Any, ...] | list[Any]) -> bool:
    for part in loc:
        in_mapping = isinstance(tree, Mapping) and part in tree
        in_list = isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree)
        if not (in_mapping or in_list):
            return False
        tree = tree[part]
    return True


def _contract_defaults(contract: DatasetContract, env: str) -> dict[str, Any]:
    """The defaults that follow from the contract: its name and its task."""
    metric, thresholds = TASK_DEFAULT_METRICS[contract.task]
    return {
        "dataset": {"drop_zone": f"drop/{contract.name}"},
        "features": {"project": f"{contract.name}_{env}".replace("-", "_")},
        "training": {"model_name": contract.name},
        "evaluation": {"primary_metric": metric, "thresholds": dict(thresholds)},
        "registry": {"experiment": f"mlops-{contract.name}"},
    }


def _load_contract(raw: Mapping[str, Any], layers: _Layers, previous: DatasetContract | None) -> DatasetContract:
    from mlops_core.contract import ContractDefinitionError, DatasetContract

    where = f"{_shown(layers.source)}{' (per-run override)' if _has(layers.overrides, ('dataset', 'contract')) else ''}"
    dataset = raw.get("dataset")
    value = dataset.get("contract") if isinstance(dataset, Mapping) else None
    if value is None:
        raise SettingsError(
            f"{where}: dataset.contract: required: the path of the dataset contract, e.g. "
            "${MLOPS_CONTRACT:-include/contracts/churn.yaml}"
        )
    if not isinstance(value, str | Path) or not str(value).strip():
        raise SettingsError(f"{where}: dataset.contract: must be the path of a contract file (got {value!r})")
    path = _repo_path(Path(value))
    if previous is not None and previous.source_path == str(path):
        return previous
    try:
        key = _file_key(path)
    except OSError:
        raise SettingsError(
            f"{where}: dataset.contract: no contract file at {path} (got {value!r}; set MLOPS_CONTRACT or "
            "dataset.contract; relative paths are relative to the repository)"
        ) from None
    if key not in _CONTRACTS:
        try:
            contract = DatasetContract.from_yaml(path)
        except ContractDefinitionError as exc:
            raise SettingsError(f"{where}: dataset.contract: {exc}") from exc
        _remember(_CONTRACTS, key, contract)
    return _CONTRACTS[key]


def _build(env: str, home: Path, layers: _Layers, previous: DatasetContract | None = None) -> Settings:
    raw = _merge(Settings, layers.file, layers.overrides)
    contract = _load_contract(raw, layers, previous)
    derived = _contract_defaults(contract, env)
    loaded = _LoadContext(env=env, home=home, contract=contract, layers=layers)
    try:
        return Settings.model_validate(_merge(Settings, derived, raw), context={"mlops_settings": loaded})
    except ValidationError as exc:
        lines = [_describe(error, layers, derived, contract) for error in exc.errors(include_url=False)]
        raise SettingsError("\n".join(lines)) from None


def _model_at(loc: tuple[Any, ...] | list[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        model = _section_model(model, part)
    return model


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MESSAGES: dict[str, Callable[[dict[str, Any], str], str]] = {
    "greater_than_equal": lambda c, got: f"must be >= {c['ge']:g} (got {got})",
    "greater_than": lambda c, got: f"must be > {c['gt']:g} (got {got})",
    "less_than_equal": lambda c, got: f"must be <= {c['le']:g} (got {got})",
    "less_than": lambda c, got: f"must be < {c['lt']:g} (got {got})",
    "int_parsing": lambda c, got: f"must be a whole number (got {got})",
    "int_type": lambda c, got: f"must be a whole number (got {got})",
    "int_from_float": lambda c, got: f"must be a whole number (got {got})",
    "float_parsing": lambda c, got: f"must be a number (got {got})",
    "float_type": lambda c, got: f"must be a number (got {got})",
    "finite_number": lambda c, got: f"must be a finite number (got {got})",
    "bool_parsing": lambda c, got: f"must be true or false (got {got})",
    "bool_type": lambda c, got: f"must be true or false (got {got})",
    "string_type": lambda c, got: f"must be text (got {got})",
    "path_type": lambda c, got: f"must be a path (got {got})",
    "dict_type": lambda c, got: f"must be a mapping of key: value (got {got})",
    "mapping_type": lambda c, got: f"must be a mapping of key: value (got {got})",
    "model_type": lambda c, got: f"must be a mapping of key: value (got {got})",
    "model_attributes_type": lambda c, got: f"must be a mapping of key: value (got {got})",
    "tuple_type": lambda c, got: f"must be a list (got {got})",
    "list_type": lambda c, got: f"must be a list (got {got})",
    "too_short": lambda c, got: f"must not be empty (got {got})",
    "missing": lambda c, got: "required",
}


def _describe(error: Any, layers: _Layers, derived: dict[str, Any], contract: DatasetContract) -> str:
    """One line per validation error: file, full key, what is wrong, the bad value, what is allowed."""
    ctx = dict(error.get("ctx") or {})
    loc = [part for part in error["loc"] if part != "[key]"]
    if "subkey" in ctx:
        loc.append(ctx["subkey"])
    kind = error["type"]
    got = _got(error.get("input"))
    if kind == "settings":
        text = str(ctx["message"])
    elif kind == "extra_forbidden":
        import difflib

        parent = _model_at(loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        text = f"unknown setting{f' (did you mean {close[0]!r}?)' if close else ''}; allowed here: {', '.join(allowed)}"
    elif kind in _MESSAGES:
        text = _MESSAGES[kind](ctx, got)
    else:
        text = f"{error['msg']} (got {got})"
    where = _shown(layers.source)
    if _has(layers.overrides, loc):
        where += " (per-run override)"
    elif not _has(layers.file, loc) and _has(derived, loc):
        text += (
            f"; this default follows from the contract {_shown(contract.source_path or '')} "
            f"(name {contract.name!r}, task {contract.task!r}): set {_key(loc)} in {_shown(layers.source)}"
        )
    return f"{where}: {_key(loc)}: {text}"


def load_settings(env: str | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read and validate ``<conf dir>/<env>.yaml`` (conf dir: ``MLOPS_CONF_DIR``; env: ``MLOPS_ENV``, default dev).

    ``overrides`` (per-run, e.g. a DAG run's Params) is a nested mapping laid over the file:
    sections merge key by key, every other value replaces the file's, so
    ``{"evaluation": {"thresholds": {"rmse": 3}}}`` leaves ``rmse`` as the only threshold.
    Raises :class:`SettingsError` naming the file, the key, the bad value and what is allowed.
    """
    env = env or current_env()
    if env not in ENVIRONMENTS:
        raise SettingsError(
            f"unknown environment {env!r}; expected one of {_quoted(ENVIRONMENTS)} (MLOPS_ENV or the run's env Param)"
        )
    conf_dir = Path(os.environ.get("MLOPS_CONF_DIR") or DEFAULT_CONF_DIR).expanduser()
    path = (conf_dir / f"{env}.yaml").resolve()
    if not path.is_file():
        raise SettingsError(f"settings file not found: {path} (set MLOPS_CONF_DIR or create it)")
    parsed = _read_yaml(path)
    if parsed is None:
        parsed = {}
    if not isinstance(parsed, dict):
        raise SettingsError(f"{_shown(path)}: must be a mapping of sections (backends:, dataset:, ...)")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise SettingsError("overrides must be a mapping of sections, e.g. {'training': {'window_days': 7}}")
    layers = _Layers(source=path, file=_expand(parsed, (), path), overrides=_plain(overrides or {}))
    return _build(env, mlops_home(), layers)


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """Settings with some sections overridden, validated again like a load (contract checks included).

    ``with_overrides(s, evaluation={"thresholds": {"rmse": 3}})`` replaces the thresholds whole and
    keeps the other evaluation keys; earlier overrides of ``s`` stay in effect.
    """
    unknown = sorted(set(sections) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"cannot override {_quoted(unknown)}: sections are {_quoted(list(Settings.model_fields))}")
    for name, values in sections.items():
        if not isinstance(values, Mapping):
            raise SettingsError(f"override of {name!r} must be a mapping of its keys (got {_got(values)})")
    loaded = settings._loaded
    layers = replace(loaded.layers, overrides=_merge(Settings, loaded.layers.overrides, _plain(sections)))
    return _build(loaded.env, loaded.home, layers, previous=loaded.contract)


def with_algorithm(settings: Settings, algorithm: str | None) -> Settings:
    """Settings that train ``algorithm``. The configured hyperparameters belong to the configured
    algorithm, so another algorithm starts from its own defaults."""
    if not algorithm or algorithm == settings.training.algorithm:
        return settings
    return with_overrides(settings, training={"algorithm": algorithm, "hyperparameters": {}})
