"""The model: preprocessing + estimator as one scikit-learn ``Pipeline``, its metrics and its files.

Everything here is driven by the dataset contract: which columns are features, which are numeric
and which categorical. The fitted pipeline is saved with skops (no pickle) and loaded back only
with an explicit allowlist of types (``SKOPS_TRUSTED_TYPES``), which the registry code also hands
to ``mlflow.sklearn.log_model(..., serialization_format="skops", skops_trusted_types=...)``.

The first step of every pipeline casts its input by the contract (``cast_features``), so a model
behaves the same whether it gets a training DataFrame with pandas nullable dtypes (``Int64``,
``boolean``, ``string``), or the plain DataFrame MLflow's scoring server builds from JSON
(``{"dataframe_split": ...}``: ints/floats, ``true``/``false`` booleans, ``None`` for missing).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlops_core.atomic_files import write_atomic
from mlops_core.contract import DatasetContract

log = logging.getLogger(__name__)

MODEL_FILE = "model.skops"
META_FILE = "model_meta.json"

# task -> algorithm name -> (estimator class, defaults we set unless the user overrides them).
# random_state is fixed so that the same data and hyperparameters give the same model.
_ESTIMATORS: dict[str, dict[str, tuple[type[BaseEstimator], dict[str, Any]]]] = {
    "classification": {
        "hist_gradient_boosting": (HistGradientBoostingClassifier, {"random_state": 0}),
        "random_forest": (RandomForestClassifier, {"random_state": 0}),
        "logistic_regression": (LogisticRegression, {"max_iter": 1000}),
    },
    "regression": {
        "hist_gradient_boosting": (HistGradientBoostingRegressor, {"random_state": 0}),
        "random_forest": (RandomForestRegressor, {"random_state": 0}),
        "ridge": (Ridge, {}),
    },
}
_LINEAR_ALGORITHMS = frozenset({"logistic_regression", "ridge"})

#: Valid algorithm names per task.
ALGORITHMS: dict[str, tuple[str, ...]] = {task: tuple(algos) for task, algos in _ESTIMATORS.items()}

#: Every type a pipeline built by ``build_pipeline`` needs beyond skops' defaults, so loading it
#: is safe without ``trusted=True``. Exact names, no prefixes: a new type in a saved model is
#: rejected until someone reviews it and adds it here. ``numpy.dtype`` comes from the one-hot
#: encoder's ``dtype`` parameter; ``Tree`` (random forest) and ``TreePredictor`` (hist gradient
#: boosting) are fitted trees, which skops does not trust by default because a crafted file can
#: hold out-of-bounds node indices; we trust them because a model is only loaded after its files
#: match the digest recorded when our own training job logged it (``mlops_core.model_integrity``).
SKOPS_TRUSTED_TYPES: list[str] = [
    "mlops_core.training.model.cast_features",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]

_NONE_SPELLINGS = frozenset({"none", "null", "nil", ""})
_TRUE_SPELLINGS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE_SPELLINGS = frozenset({"false", "f", "no", "n", "0", "0.0"})


class UntrustedModelError(ValueError):
    """A saved model references types outside ``SKOPS_TRUSTED_TYPES``."""


# --------------------------------------------------------------------------- feature casting
def model_features(contract: DatasetContract) -> list[str]:
    """The feature columns a model uses, in contract order: numeric, category, string and bool ones.

    Timestamp columns other than the event time are not model inputs (absolute times do not
    generalize to the future); derive numeric features from them upstream if they matter.
    """
    return [n for n in contract.feature_columns if contract.column(n).is_numeric or contract.column(n).is_categorical]


def _feature_spec(contract: DatasetContract) -> dict[str, list[str]]:
    """The ``kw_args`` of ``cast_features`` for a contract (plain lists of names: skops-safe)."""
    columns = model_features(contract)
    boolean = [n for n in columns if contract.column(n).type == "bool"]
    return {
        "columns": columns,
        "numeric": [n for n in columns if contract.column(n).is_numeric],
        "boolean": boolean,
        "categorical": [n for n in columns if contract.column(n).is_categorical and n not in boolean],
    }


def _is_missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and other containers: not a scalar missing value
        return False


def _bool_token(value: Any) -> Any:
    """``True``/``"True"``/``1``/``"yes"`` -> ``"true"``; missing -> NaN; anything else -> its text."""
    if _is_missing(value):
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text in _TRUE_SPELLINGS:
        return "true"
    if text in _FALSE_SPELLINGS:
        return "false"
    return text  # an unknown value: the one-hot encoder ignores it


def _category_token(value: Any) -> Any:
    """A category as text; ``2.0`` and ``2`` give the same ``"2"``; missing -> NaN."""
    if _is_missing(value):
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def cast_features(
    X: Any,
    *,
    columns: Sequence[str],
    numeric: Sequence[str],
    boolean: Sequence[str],
    categorical: Sequence[str],
) -> pd.DataFrame:
    """Select ``columns`` in order and give them numpy-friendly dtypes.

    numeric -> ``float64`` (missing/unparseable -> NaN); boolean -> ``"true"``/``"false"`` text
    (object) whatever the spelling; categorical -> text (object). Missing values are always
    ``np.nan`` (never ``pd.NA``/``None``) so ``SimpleImputer`` sees them. Extra columns are
    dropped. This is the first step of every pipeline (a ``FunctionTransformer``), which is why it
    lives at module level: skops stores it by name.
    """
    columns = list(columns)
    if not isinstance(X, pd.DataFrame):
        array = np.asarray(X, dtype=object)
        if array.ndim != 2 or array.shape[1] != len(columns):
            raise ValueError(
                f"expected a DataFrame with columns {columns} or a 2-D array with {len(columns)} "
                f"columns in that order; got shape {array.shape}"
            )
        X = pd.DataFrame(array, columns=columns)
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(
            f"input is missing feature column(s) {missing}; the model expects {columns} "
            f"(got {list(map(str, X.columns))})"
        )
    numeric_set, boolean_set, categorical_set = set(numeric), set(boolean), set(categorical)
    out: dict[str, Any] = {}
    for name in columns:
        col = X[name]
        if name in numeric_set:
            if pd.api.types.is_bool_dtype(col.dtype):
                col = col.astype("float64")
            values = pd.to_numeric(col, errors="coerce")
            if isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
                out[name] = values.to_numpy(dtype="float64", na_value=np.nan)
            else:
                out[name] = values.to_numpy(dtype="float64")
        elif name in boolean_set:
            out[name] = np.array([_bool_token(v) for v in col.astype(object)], dtype=object)
        elif name in categorical_set:
            out[name] = np.array([_category_token(v) for v in col.astype(object)], dtype=object)
        else:  # not typed by the spec: pass it through unchanged
            out[name] = col.to_numpy()
    return pd.DataFrame(out, index=X.index, columns=columns)


def prepare_features(df: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """The model's feature columns of ``df`` (``model_features``), in contract order, numpy-friendly dtypes.

    ``Int64``/``float`` -> ``float64``; ``boolean`` -> object ``"true"``/``"false"``/NaN;
    ``string``/``category`` -> object text. Reserved columns (``_entity``, ...) and the target are
    dropped. The fitted pipeline applies the same cast itself, so this is only needed where the
    plain features are wanted (an MLflow input example, drift profiles, scoring).
    """
    return cast_features(df, **_feature_spec(contract))


def prepare_target(y: pd.Series, contract: DatasetContract) -> np.ndarray:
    """The target as a numpy array: nullable dtypes become plain ones; missing values are an error."""
    n_missing = int(pd.isna(y).sum())
    if n_missing:
        raise ValueError(
            f"target column {contract.target!r} has {n_missing} missing value(s); the contract declares "
            f"it non-nullable, so validate the dataset (ingest quarantines such rows) before training"
        )
    spec = contract.column(contract.target)
    if contract.task == "regression":
        return pd.to_numeric(y).to_numpy(dtype="float64")
    if spec.type == "int":
        return pd.to_numeric(y).to_numpy(dtype="int64")
    if spec.type == "float":
        return pd.to_numeric(y).to_numpy(dtype="float64")
    if spec.type == "bool":
        tokens = [_bool_token(v) for v in y]
        odd = sorted({t for t in tokens if t not in ("true", "false")})
        if odd:
            raise ValueError(f"bool target {contract.target!r} has values that are not booleans: {odd[:5]}")
        return np.array([t == "true" for t in tokens], dtype=bool)
    return np.array([str(v) for v in y], dtype=object)


# --------------------------------------------------------------------------- hyperparameters
def _parse_literal(text: str) -> Any:
    """A SageMaker hyperparameter string as a Python value: JSON first, then Python spellings."""
    stripped = text.strip()
    try:
        return json.loads(stripped)  # 150, 0.1, true, null, "quoted", [1, 2], {"a": 1}
    except ValueError:
        pass
    lowered = stripped.lower()
    if lowered in _NONE_SPELLINGS:
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return stripped


def coerce_hyperparameter(value: Any, default: Any) -> Any:
    """Convert one hyperparameter to the type of the estimator's default.

    Strings are parsed (``"150"`` -> 150, ``"0.1"`` -> 0.1, ``"true"`` -> True, ``"null"``/``"None"``
    -> None, ``"sqrt"`` stays ``"sqrt"``); then an int becomes a float where the default is a float,
    a whole float an int where the default is an int, and 0/1 a bool where the default is a bool.
    Anything else is left for scikit-learn's own parameter validation to judge.
    """
    parsed = _parse_literal(value) if isinstance(value, str) else value
    if isinstance(default, bool):
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and parsed in (0, 1):
            return bool(parsed)
        return parsed
    if isinstance(default, float) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if isinstance(default, int) and isinstance(parsed, float) and parsed.is_integer():
        return int(parsed)
    return parsed


def resolve_hyperparameters(task: str, algorithm: str, hyperparameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Our defaults for ``algorithm`` overlaid with ``hyperparameters``, coerced to the right types.

    Raises ``ValueError`` naming the valid algorithms or hyperparameters when one is unknown.
    """
    if task not in _ESTIMATORS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_ESTIMATORS)}")
    if algorithm not in _ESTIMATORS[task]:
        raise ValueError(
            f"unknown algorithm {algorithm!r} for a {task} task; valid algorithms: {', '.join(ALGORITHMS[task])}"
        )
    cls, ours = _ESTIMATORS[task][algorithm]
    defaults = cls().get_params(deep=False)
    given = dict(hyperparameters or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for {algorithm} ({cls.__name__}); "
            f"valid names: {', '.join(sorted(defaults))}"
        )
    resolved = dict(ours)
    for name, value in given.items():
        resolved[name] = coerce_hyperparameter(value, defaults[name])
    return resolved


# --------------------------------------------------------------------------- the pipeline
def build_pipeline(
    contract: DatasetContract, algorithm: str, hyperparameters: Mapping[str, Any] | None = None
) -> Pipeline:
    """Preprocessing by the contract + the estimator named ``algorithm``, as one unfitted ``Pipeline``.

    Steps: ``cast`` (``cast_features`` by the contract), ``preprocess`` (numeric: median imputation,
    plus standard scaling for linear models; categorical/bool/string: most-frequent imputation and
    one-hot encoding that ignores unseen values), ``model`` (the estimator). ``hyperparameters``
    may be typed values or SageMaker-style strings. Unknown names raise ``ValueError`` listing the
    valid ones, and invalid values are reported here rather than at fit time.
    """
    params = resolve_hyperparameters(contract.task, algorithm, hyperparameters)
    cls, _ = _ESTIMATORS[contract.task][algorithm]
    estimator = cls(**params)
    try:
        estimator._validate_params()  # scikit-learn's own checks, before any data is read
    except AttributeError:  # pragma: no cover - private API moved: fit will validate instead
        pass
    except ValueError as exc:
        raise ValueError(f"invalid hyperparameters for {algorithm} ({cls.__name__}): {exc}") from exc

    spec = _feature_spec(contract)
    skipped = [n for n in contract.feature_columns if n not in spec["columns"]]
    if skipped:
        log.warning(
            "timestamp column(s) %s are not model features; derive numeric features from them upstream", skipped
        )
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if algorithm in _LINEAR_ALGORITHMS:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if spec["numeric"]:
        transformers.append(("numeric", Pipeline(numeric_steps), spec["numeric"]))
    categorical = spec["boolean"] + spec["categorical"]
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
    return Pipeline(
        [
            ("cast", FunctionTransformer(cast_features, kw_args=spec, validate=False)),
            ("preprocess", preprocess),
            ("model", estimator),
        ]
    )


# --------------------------------------------------------------------------- metrics
def compute_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    y_score: Any = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Metrics of predictions, keyed by the names in ``settings.METRIC_DIRECTIONS``.

    classification: ``accuracy``, ``f1`` (binary for two classes, the positive one being the last of
    the sorted ``classes``; macro otherwise) and, when ``y_score`` (``predict_proba`` output, or the
    positive-class probability for binary) is given, ``roc_auc`` (macro one-vs-rest for multiclass)
    and ``log_loss``. regression: ``rmse``, ``mae``, ``r2``. ``classes`` is the model's
    ``classes_`` (the column order of ``y_score``); by default the sorted labels seen. A metric
    that is undefined on these rows (``roc_auc`` with one class present, ``r2`` on one row) is
    left out rather than reported as NaN; the promotion gate treats a missing metric as a failure.
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred).ravel()
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero rows")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    out: dict[str, float] = {}
    if task == "regression":
        y_true_f, y_pred_f = y_true.astype("float64"), y_pred.astype("float64")
        out["rmse"] = float(math.sqrt(skm.mean_squared_error(y_true_f, y_pred_f)))
        out["mae"] = float(skm.mean_absolute_error(y_true_f, y_pred_f))
        if len(y_true_f) >= 2:
            out["r2"] = float(skm.r2_score(y_true_f, y_pred_f))
        return out
    if task != "classification":
        raise ValueError(f"unknown task {task!r}; expected classification or regression")

    labels = list(classes) if classes is not None else sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    score = None if y_score is None else np.asarray(y_score, dtype="float64")
    if score is not None and score.ndim == 2 and classes is None and score.shape[1] != len(labels):
        raise ValueError(
            f"y_score has {score.shape[1]} columns but {len(labels)} labels were seen; pass classes=model.classes_"
        )
    binary = len(labels) <= 2
    out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    if binary and len(labels) == 2:
        out["f1"] = float(
            skm.f1_score(y_true, y_pred, labels=labels, pos_label=labels[-1], average="binary", zero_division=0)
        )
    else:
        out["f1"] = float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    if score is None:
        return out
    score_pos = score[:, -1] if binary and score.ndim == 2 else score
    present = set(y_true.tolist())
    if len(present) < 2:
        log.warning("only one class (%s) in y_true: roc_auc and log_loss are undefined and left out", present)
        return out
    try:
        if binary:
            out["roc_auc"] = float(skm.roc_auc_score(y_true == labels[-1], score_pos))
            out["log_loss"] = float(skm.log_loss(y_true, np.clip(score_pos, 1e-15, 1 - 1e-15), labels=labels))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, score, multi_class="ovr", average="macro", labels=labels))
            out["log_loss"] = float(skm.log_loss(y_true, score, labels=labels))
    except ValueError as exc:
        log.warning("roc_auc/log_loss left out: %s", exc)
    return out


# --------------------------------------------------------------------------- files
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, pd.Timestamp)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def import_skops_io() -> Any:
    """``skops.io``, imported without the FutureWarning flood it causes inside an Airflow task.

    At import, skops names every scipy ufunc it trusts by probing ``getattr(module, name)`` on
    every loaded module (``skops.io._utils.whichmodule``). In a task process Airflow has loaded its
    deprecated-import shims (``airflow.utils.timezone``, ``airflow.utils.trigger_rule``, ...), which
    answer each probe with a ``DeprecatedImportWarning`` (a FutureWarning): ~1,150 log lines
    before the useful ones. Every import of ``skops.io`` in this project, and every MLflow call
    that imports it, goes through here first; the filter covers only skops' own probing.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.io\._utils")
        import skops.io
    return skops.io


def save_model(pipeline: Pipeline, model_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``model.skops`` (skops, no pickle) and ``model_meta.json`` into ``model_dir``.

    Both files are written to temporary names and renamed, so a crash never leaves a half-written
    model. Returns ``model_dir``.
    """
    skops_io = import_skops_io()

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(model_dir / MODEL_FILE, skops_io.dumps(pipeline))
    write_atomic(model_dir / META_FILE, json.dumps(dict(meta), indent=2, sort_keys=True, default=_json_default))
    log.info("saved model to %s (%s, %s)", model_dir, MODEL_FILE, META_FILE)
    return model_dir


def check_trusted_types(untrusted: Sequence[str], where: str = "model") -> list[str]:
    """Return ``untrusted`` if every name is in ``SKOPS_TRUSTED_TYPES``, else raise ``UntrustedModelError``."""
    unexpected = sorted(set(untrusted) - set(SKOPS_TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError(
            f"{where} references type(s) outside the allowlist: {unexpected}. Refusing to load it. "
            f"If the model comes from this project's training and the types are safe, review them and "
            f"add them to mlops_core.training.model.SKOPS_TRUSTED_TYPES"
        )
    return list(untrusted)


def load_model(model_dir: str | Path) -> tuple[Pipeline, dict[str, Any]]:
    """Load ``(pipeline, meta)`` saved by ``save_model``, trusting only ``SKOPS_TRUSTED_TYPES``."""
    model_dir = Path(model_dir)
    model_path, meta_path = model_dir / MODEL_FILE, model_dir / META_FILE
    for path in (model_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; is {model_dir} a directory written by save_model?")
    pipeline = load_skops_pipeline(model_path)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return pipeline, meta


def load_skops_pipeline(path: str | Path) -> Pipeline:
    """Load one skops file, trusting only ``SKOPS_TRUSTED_TYPES`` (``UntrustedModelError`` otherwise).

    The one way this project turns model bytes into an object: the trust list comes from this
    module, never from the file or from metadata next to it.
    """
    skops_io = import_skops_io()
    data = Path(path).read_bytes()
    trusted = check_trusted_types(skops_io.get_untrusted_types(data=data), where=str(path))
    pipeline: Pipeline = skops_io.loads(data, trusted=trusted)
    return pipeline
