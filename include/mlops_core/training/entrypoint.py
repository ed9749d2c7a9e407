"""Training entrypoint: the same script trains locally, in a SageMaker training job and in an Azure ML command job.

It follows SageMaker's ``/opt/ml`` directory contract::

    <root>/input/config/hyperparameters.json   string values: algorithm, contract (JSON), estimator params
    <root>/input/data/train/*.parquet           training channel (required; searched recursively)
    <root>/input/data/test/*.parquet            test channel (optional)
    <root>/input/data/contract/contract.json    the dataset contract, when not a hyperparameter (any size)
    <root>/model/model.skops, model_meta.json   the fitted pipeline and what it was trained on
    <root>/output/data/metrics.json             test_* metrics (train_* when there is no test channel)
    <root>/output/failure                       the reason, when training fails (exit code 1)

``<root>`` is ``--ml-root``, else ``$MLOPS_ML_ROOT``, else ``/opt/ml``. SageMaker's environment
variables override the layout when set (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_TEST``,
``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_OUTPUT_DIR``), and Azure ML style arguments
override both::

    python -m mlops_core.training.entrypoint --train DIR [--test DIR] --model-dir DIR \\
        --output-dir DIR --hyperparameters JSON_FILE_OR_STRING

Every metric is also printed as ``METRIC <name>=<value>`` so a SageMaker metric definition
(``METRIC test_roc_auc=([0-9.eE+-]+)``) picks it up. Hyperparameter keys starting with
``sagemaker_`` or ``_`` (added by SageMaker's SDK and tuner) are ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.atomic_files import write_atomic
from mlops_core.contract import DatasetContract

if TYPE_CHECKING:  # pandas and scikit-learn load at run time: a bad job fails fast, before heavy imports
    import pandas as pd

log = logging.getLogger("mlops_core.training")

DEFAULT_ML_ROOT = Path("/opt/ml")
DEFAULT_ALGORITHM = "hist_gradient_boosting"
METRICS_FILE = "metrics.json"
FAILURE_FILE = "failure"
META_FORMAT_VERSION = 1
# SageMaker rejects a hyperparameter value longer than this.
SAGEMAKER_MAX_HYPERPARAMETER_CHARS = 2500
CONTRACT_CHANNEL = "contract"  # the channel that carries contract.json (any size)
CONTRACT_FILE = "contract.json"
MAX_CONTRACT_BYTES = 4 * 1024 * 1024
_LIBRARIES = ("numpy", "pandas", "pyarrow", "scikit-learn", "skops")


class TrainingInputError(ValueError):
    """The training job's inputs (hyperparameters, channels, data) are unusable."""


@dataclass(frozen=True)
class TrainingPaths:
    """Where one training run reads and writes, after arguments and environment are applied."""

    root: Path
    hyperparameters: Path
    contract: Path
    train: Path
    test: Path
    model: Path
    output_data: Path
    failure: Path

    @classmethod
    def resolve(
        cls,
        ml_root: str | Path | None = None,
        *,
        train: str | Path | None = None,
        test: str | Path | None = None,
        model_dir: str | Path | None = None,
        output_dir: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TrainingPaths:
        """Explicit arguments first, then SageMaker's ``SM_*`` variables, then the ``<root>`` layout."""
        env = os.environ if environ is None else environ
        root = Path(ml_root or env.get("MLOPS_ML_ROOT") or DEFAULT_ML_ROOT)

        def pick(explicit: str | Path | None, variable: str, default: Path) -> Path:
            return Path(explicit or env.get(variable) or default)

        output_dir_env = pick(None, "SM_OUTPUT_DIR", root / "output")
        return cls(
            root=root,
            hyperparameters=root / "input" / "config" / "hyperparameters.json",
            contract=pick(None, "SM_CHANNEL_CONTRACT", root / "input" / "data" / CONTRACT_CHANNEL) / CONTRACT_FILE,
            train=pick(train, "SM_CHANNEL_TRAIN", root / "input" / "data" / "train"),
            test=pick(test, "SM_CHANNEL_TEST", root / "input" / "data" / "test"),
            model=pick(model_dir, "SM_MODEL_DIR", root / "model"),
            output_data=pick(output_dir, "SM_OUTPUT_DATA_DIR", root / "output" / "data"),
            failure=output_dir_env / FAILURE_FILE,
        )


# --------------------------------------------------------------------------- inputs
def load_hyperparameters(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Hyperparameters from a dict, a JSON file, or a JSON string (Azure ML passes either)."""
    if isinstance(source, Mapping):
        return dict(source)
    text: str
    where: str
    candidate = Path(source) if isinstance(source, Path) or not str(source).lstrip().startswith("{") else None
    if candidate is not None:
        if not candidate.is_file():
            raise TrainingInputError(
                f"hyperparameters file {candidate} not found; pass --hyperparameters with a JSON file or "
                f"a JSON object string, or lay out the directory with prepare_ml_root"
            )
        text, where = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        text, where = str(source), "--hyperparameters"
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise TrainingInputError(f"{where}: hyperparameters are not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise TrainingInputError(f"{where}: hyperparameters must be a JSON object, got {type(raw).__name__}")
    return raw


def _unquote(value: Any) -> Any:
    """SageMaker framework estimators JSON-encode every value: ``"\\"ridge\\""`` -> ``"ridge"``."""
    if isinstance(value, str) and len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def with_contract_file(raw: Mapping[str, Any], contract_file: Path) -> dict[str, Any]:
    """``raw`` with ``contract`` read from the job's ``contract`` channel when the hyperparameters lack it.

    SageMaker limits a hyperparameter value to 2,500 characters, which a contract of a few dozen
    columns exceeds; jobs built from a training set therefore get the contract as a channel.
    """
    if "contract" in raw or not contract_file.is_file():
        return dict(raw)
    if contract_file.stat().st_size > MAX_CONTRACT_BYTES:
        raise TrainingInputError(f"{contract_file} is larger than {MAX_CONTRACT_BYTES} bytes; not a contract")
    return {**raw, "contract": contract_file.read_text(encoding="utf-8")}


def split_hyperparameters(raw: Mapping[str, Any]) -> tuple[DatasetContract, str, dict[str, Any]]:
    """``(contract, algorithm, estimator hyperparameters)`` from the job's hyperparameters."""
    if "contract" not in raw:
        raise TrainingInputError(
            "the job has no contract: neither a 'contract' hyperparameter (the dataset contract as JSON, "
            "contract.to_dict()) nor a contract channel with contract.json; lay out the job with "
            "prepare_ml_root, which writes it"
        )
    contract_raw: Any = _unquote(raw["contract"])
    for _ in range(2):  # a JSON string, possibly JSON-encoded once more by a SageMaker SDK
        if isinstance(contract_raw, str):
            try:
                contract_raw = json.loads(contract_raw)
            except ValueError as exc:
                raise TrainingInputError(f"hyperparameter 'contract' is not valid JSON: {exc}") from exc
    contract = DatasetContract.from_dict(contract_raw, source="hyperparameter 'contract'")
    algorithm = str(_unquote(raw.get("algorithm", DEFAULT_ALGORITHM)))
    estimator_params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("contract", "algorithm"):
            continue
        if key.startswith(("sagemaker_", "_")):
            log.info("ignoring platform hyperparameter %s", key)
            continue
        estimator_params[key] = value
    return contract, algorithm, estimator_params


def read_channel(directory: Path, name: str, required: bool) -> pd.DataFrame | None:
    """Concatenate every ``*.parquet`` file under ``directory`` (sorted, recursive; hidden files skipped)."""
    files = (
        sorted(p for p in directory.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
        if directory.is_dir()
        else []
    )
    if not files:
        if required:
            raise TrainingInputError(
                f"the {name} channel {directory} has no *.parquet files; the training set is empty or was "
                f"written elsewhere (check the channel's S3/Blob path or SM_CHANNEL_{name.upper()})"
            )
        log.info("no %s channel at %s", name, directory)
        return None
    import pandas as pd

    frames = [pd.read_parquet(f) for f in files]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    log.info("read %s rows from %s file(s) in the %s channel %s", len(df), len(files), name, directory)
    return df


def _check_frame(df: pd.DataFrame, contract: DatasetContract, name: str) -> None:
    from mlops_core.training.model import model_features

    needed = [*model_features(contract), contract.target]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TrainingInputError(
            f"the {name} data lacks column(s) {missing} required by contract {contract.name!r} "
            f"(it has {list(map(str, df.columns))}); rebuild the training set with this contract"
        )


# --------------------------------------------------------------------------- the run
def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "unknown"
    return versions


def _json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_training(
    ml_root: str | Path | None = None,
    *,
    train_dir: str | Path | None = None,
    test_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    hyperparameters: Mapping[str, Any] | str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Train, evaluate and save one model; return the metrics written to ``metrics.json``.

    Paths resolve as in ``TrainingPaths.resolve``; ``hyperparameters`` (a dict, a JSON string or
    file) replaces ``<root>/input/config/hyperparameters.json``. Raises ``TrainingInputError`` (a
    ``ValueError``) with what to fix when the inputs are unusable.
    """
    paths = TrainingPaths.resolve(
        ml_root, train=train_dir, test=test_dir, model_dir=model_dir, output_dir=output_dir, environ=environ
    )
    raw = load_hyperparameters(paths.hyperparameters if hyperparameters is None else hyperparameters)
    contract, algorithm, params = split_hyperparameters(with_contract_file(raw, paths.contract))
    train = read_channel(paths.train, "train", required=True)
    if train is None:  # pragma: no cover - read_channel raises for a required channel
        raise TrainingInputError(f"no training data in {paths.train}")

    # heavy imports only once the inputs are known to exist
    from mlops_core.evaluation import score_model
    from mlops_core.training.model import (
        SKOPS_TRUSTED_TYPES,
        build_pipeline,
        model_features,
        prepare_features,
        prepare_target,
        resolve_hyperparameters,
        save_model,
    )

    resolved = resolve_hyperparameters(contract.task, algorithm, params)
    log.info(
        "contract %s (%s, target %s), algorithm %s, hyperparameters %s",
        contract.name,
        contract.task,
        contract.target,
        algorithm,
        resolved,
    )
    _check_frame(train, contract, "train")
    if len(train) == 0:
        raise TrainingInputError(f"the train channel {paths.train} has 0 rows; there is nothing to train on")
    test = read_channel(paths.test, "test", required=False)
    if test is not None:
        _check_frame(test, contract, "test")
        if len(test) == 0:
            log.warning("the test channel %s has 0 rows; metrics are computed on the training data", paths.test)
            test = None

    X = prepare_features(train, contract)
    y = prepare_target(train[contract.target], contract)
    if contract.task == "classification":
        classes_seen = sorted(set(y.tolist()), key=str)
        if len(classes_seen) < 2:
            raise TrainingInputError(
                f"target {contract.target!r} has a single class {classes_seen} in all {len(train)} training rows; "
                f"a classifier needs at least two: widen the training window or check the labels"
            )

    pipeline = build_pipeline(contract, algorithm, resolved)
    log.info("fitting %s on %s rows x %s features", algorithm, len(X), X.shape[1])
    pipeline.fit(X, y)

    evaluated_on, eval_df = ("test", test) if test is not None else ("train", train)
    metrics = {f"{evaluated_on}_{k}": v for k, v in score_model(pipeline, eval_df, contract).items()}
    log.info("metrics on the %s data (%s rows): %s", evaluated_on, len(eval_df), metrics)

    from mlops_core.training.model import import_skops_io

    skops_io = import_skops_io()
    untrusted_types = sorted(skops_io.get_untrusted_types(data=skops_io.dumps(pipeline)))
    meta = {
        "format_version": META_FORMAT_VERSION,
        "contract": contract.to_dict(),
        "contract_fingerprint": contract.fingerprint,
        "task": contract.task,
        "target": contract.target,
        "feature_columns": model_features(contract),
        "algorithm": algorithm,
        "hyperparameters": resolved,
        "classes": [_json_scalar(c) for c in getattr(pipeline, "classes_", [])] or None,
        "train_rows": len(train),
        "test_rows": 0 if test is None else len(test),
        "evaluated_on": evaluated_on,
        "metrics": metrics,
        "library_versions": _library_versions(),
        "skops_trusted_types": untrusted_types,
    }
    unexpected = sorted(set(untrusted_types) - set(SKOPS_TRUSTED_TYPES))
    if unexpected:  # would make the model unloadable: fail here, not at registration
        raise RuntimeError(f"the fitted model references types outside SKOPS_TRUSTED_TYPES: {unexpected}")
    save_model(pipeline, paths.model, meta)
    write_atomic(paths.output_data / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True))
    for name, value in sorted(metrics.items()):
        print(f"METRIC {name}={value:.10g}", flush=True)
    log.info("model written to %s, metrics to %s", paths.model, paths.output_data / METRICS_FILE)
    return metrics


# --------------------------------------------------------------------------- job layout
def _sagemaker_string(value: Any) -> str:
    """SageMaker passes hyperparameters as strings: text as is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    write_atomic(path, df.to_parquet(index=False), mode=0o644)


def job_hyperparameters(
    contract: DatasetContract,
    algorithm: str,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    contract_as_channel: bool = False,
) -> dict[str, str]:
    """A training job's hyperparameters as SageMaker passes them: ``algorithm``, ``contract`` (JSON;
    left out with ``contract_as_channel``: the job reads it from its contract channel) and the
    estimator's parameters, every value a string.

    Unknown algorithms or hyperparameters fail here, before any job starts; a value longer than
    SageMaker accepts is logged (the SageMaker compute refuses such a job before submitting it).
    """
    from mlops_core.training.model import resolve_hyperparameters

    hyperparameters = dict(hyperparameters or {})
    resolve_hyperparameters(contract.task, algorithm, hyperparameters)  # fail fast on bad names
    clash = sorted({"algorithm", "contract"} & set(hyperparameters))
    if clash:
        raise ValueError(f"hyperparameter name(s) {clash} are reserved by the entrypoint; rename them")
    strings = {"algorithm": algorithm}
    if not contract_as_channel:
        strings["contract"] = contract_json(contract)
    strings.update({str(k): _sagemaker_string(v) for k, v in hyperparameters.items()})
    too_long = sorted(k for k, v in strings.items() if len(v) > SAGEMAKER_MAX_HYPERPARAMETER_CHARS)
    if too_long:
        log.warning(
            "hyperparameter(s) %s exceed SageMaker's %s characters per value; a SageMaker job would reject them",
            too_long,
            SAGEMAKER_MAX_HYPERPARAMETER_CHARS,
        )
    return strings


def contract_json(contract: DatasetContract) -> str:
    """The contract as the entrypoint reads it (``DatasetContract.from_dict`` of this JSON)."""
    return json.dumps(contract.to_dict(), separators=(",", ":"), default=str)


def prepare_ml_root(
    ml_root: str | Path,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame | None,
    contract: DatasetContract,
    algorithm: str,
    hyperparameters: Mapping[str, Any] | None = None,
) -> TrainingPaths:
    """Lay out ``ml_root`` as SageMaker would for a training job; return its (environment-free) paths.

    Writes ``input/data/train/train.parquet``, ``input/data/test/test.parquet`` (when ``test_df`` has
    rows) and ``input/config/hyperparameters.json`` with string values (:func:`job_hyperparameters`),
    replacing what an earlier attempt left in the channels and removing a stale ``output/failure``.
    A compute backend's job gets the same layout from the job spec (the local job's supervisor, or
    SageMaker itself). Unknown algorithms or hyperparameters fail here, before anything is written.
    """
    strings = job_hyperparameters(contract, algorithm, hyperparameters)
    _check_frame(train_df, contract, "train")
    if len(train_df) == 0:
        raise TrainingInputError("the training set has 0 rows; there is nothing to train on")
    if test_df is not None:
        _check_frame(test_df, contract, "test")

    paths = TrainingPaths.resolve(ml_root, environ={})
    for channel in (paths.train, paths.test):
        shutil.rmtree(channel, ignore_errors=True)
    paths.failure.unlink(missing_ok=True)
    _write_parquet(train_df, paths.train / "train.parquet")
    if test_df is not None and len(test_df):
        _write_parquet(test_df, paths.test / "test.parquet")
    write_atomic(paths.hyperparameters, json.dumps(strings, indent=2, sort_keys=True))
    log.info(
        "laid out %s: %s train rows, %s test rows", paths.root, len(train_df), 0 if test_df is None else len(test_df)
    )
    return paths


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_core.training.entrypoint",
        description="Train a model following SageMaker's /opt/ml contract (Azure ML style arguments override).",
    )
    parser.add_argument("--ml-root", help="root of the /opt/ml layout (default: $MLOPS_ML_ROOT or /opt/ml)")
    parser.add_argument("--train", help="directory with the training parquet files")
    parser.add_argument("--test", help="directory with the test parquet files (optional)")
    parser.add_argument("--model-dir", help="where model.skops and model_meta.json go")
    parser.add_argument("--output-dir", help="where metrics.json goes")
    parser.add_argument("--hyperparameters", help="a JSON file or a JSON object string")
    return parser


def _write_failure(path: Path, message: str) -> None:
    try:
        write_atomic(path, message + "\n")
    except OSError as exc:  # e.g. no writable /opt/ml on Azure ML: the exit code and stderr still tell
        log.warning("could not write the failure reason to %s: %s", path, exc)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0 success, 1 failure with ``output/failure`` written)."""
    args = _parser().parse_args(argv)
    # progress goes to stdout (SageMaker and Azure ML stream it to their logs); a host process
    # that already configured logging (a test, an embedding caller) keeps its own handlers
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    paths = TrainingPaths.resolve(
        args.ml_root, train=args.train, test=args.test, model_dir=args.model_dir, output_dir=args.output_dir
    )
    with contextlib.suppress(OSError):
        paths.failure.unlink(missing_ok=True)
    try:
        run_training(
            args.ml_root,
            train_dir=args.train,
            test_dir=args.test,
            model_dir=args.model_dir,
            output_dir=args.output_dir,
            hyperparameters=args.hyperparameters,
        )
    except Exception as exc:
        message = f"training failed: {type(exc).__name__}: {exc}"
        _write_failure(paths.failure, message)
        traceback.print_exc(file=sys.stderr)
        print(message, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
