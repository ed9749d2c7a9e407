"""Tests of the training pipeline (mlops_core.training.model) and the training entrypoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_core.contract import DatasetContract
from mlops_core.settings import REPO_ROOT
from mlops_core.training import entrypoint
from mlops_core.training.entrypoint import TrainingInputError, TrainingPaths, prepare_ml_root, run_training
from mlops_core.training.model import (
    ALGORITHMS,
    SKOPS_TRUSTED_TYPES,
    UntrustedModelError,
    build_pipeline,
    coerce_hyperparameter,
    compute_metrics,
    load_model,
    model_features,
    prepare_features,
    prepare_target,
    resolve_hyperparameters,
    save_model,
)

CONTRACT_PATH = REPO_ROOT / "include" / "contracts" / "churn.yaml"
FAST = {  # small models so the whole file runs in seconds
    "hist_gradient_boosting": {"max_iter": 20},
    "random_forest": {"n_estimators": 10},
    "logistic_regression": {},
    "ridge": {},
}


@pytest.fixture(scope="module")
def contract() -> DatasetContract:
    return DatasetContract.from_yaml(CONTRACT_PATH)


@pytest.fixture(scope="module")
def regression_contract(contract: DatasetContract) -> DatasetContract:
    """The churn columns with monthly_charges as a regression target."""
    raw = contract.to_dict()
    raw.update(name="charges", task="regression", target="monthly_charges")
    return DatasetContract.from_dict(raw)


def make_churn_frame(n: int = 300, seed: int = 0, days: int = 10) -> pd.DataFrame:
    """Synthetic churn rows with pandas nullable dtypes and the pipeline's reserved columns."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 120, n)
    usage = rng.uniform(0, 300, n)
    calls = rng.poisson(2, n)
    plan = rng.choice(["basic", "standard", "premium"], n)
    base = np.select([plan == "basic", plan == "standard"], [30.0, 60.0], 90.0)
    charges = (base + 0.1 * usage + rng.normal(0, 3, n)).clip(0, 1000).round(2)  # learnable for regression
    region = rng.choice(["north", "south", "east", "west"], n)
    autopay = rng.random(n) < 0.6
    delay = np.where(rng.random(n) < 0.25, np.nan, rng.exponential(5, n))
    logit = -0.02 * tenure + 0.5 * calls - 1.0 * autopay + (plan == "basic") * 0.8 + 0.01 * charges - 1.0
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    event_time = start + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    ids = [f"c{i:05d}" for i in range(n)]
    df = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="string"),
            "event_time": event_time,
            "tenure_months": pd.array(tenure, dtype="Int64"),
            "monthly_charges": charges,
            "usage_hours": usage,
            "support_calls": pd.array(calls, dtype="Int64"),
            "plan": pd.array(plan, dtype="string"),
            "region": pd.Categorical(region),
            "autopay": pd.array(autopay, dtype="boolean"),
            "last_payment_delay_days": delay,
            "churned": pd.array(churned, dtype="Int64"),
            "_entity": ids,
            "_event_time": event_time,
            "_row_key": [f"{i}|{t.isoformat()}" for i, t in zip(ids, event_time, strict=True)],
        }
    )
    # a few missing values in nullable columns
    df.loc[[i for i in (3, 17) if i < n], "tenure_months"] = pd.NA
    df.loc[[i for i in (5, 40) if i < n], "autopay"] = pd.NA
    df.loc[[i for i in (8,) if i < n], "plan"] = pd.NA
    return df


def jsonish(df: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """The feature rows as MLflow's scoring server rebuilds them from a ``dataframe_split`` JSON body."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    features = df[contract.feature_columns]
    records = [
        [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in row]
        for row in features.astype(object).itertuples(index=False)
    ]
    body = json.loads(json.dumps({"dataframe_split": {"columns": list(features.columns), "data": records}}))
    return infer_and_parse_data(body)


def fit(contract: DatasetContract, algorithm: str, df: pd.DataFrame):
    pipeline = build_pipeline(contract, algorithm, FAST[algorithm])
    return pipeline.fit(prepare_features(df, contract), prepare_target(df[contract.target], contract))


# --------------------------------------------------------------------------- features
def test_prepare_features_gives_numpy_dtypes_in_contract_order(contract: DatasetContract) -> None:
    df = make_churn_frame(50)
    X = prepare_features(df, contract)
    assert list(X.columns) == contract.feature_columns
    assert "_entity" not in X and "churned" not in X and "customer_id" not in X
    for name in contract.numeric_features:
        assert X[name].dtype == np.float64, name
    for name in contract.categorical_features:
        assert X[name].dtype == object, name
    assert np.isnan(X.loc[3, "tenure_months"])
    assert set(X["autopay"].dropna()) <= {"true", "false"}
    assert isinstance(X.loc[5, "autopay"], float) and np.isnan(X.loc[5, "autopay"])
    assert isinstance(X.loc[8, "plan"], float) and np.isnan(X.loc[8, "plan"])
    assert X.index.equals(df.index)


def test_json_ish_rows_cast_like_nullable_rows(contract: DatasetContract) -> None:
    df = make_churn_frame(60)
    from_json = jsonish(df, contract)
    assert from_json["autopay"].dropna().map(type).eq(bool).all()  # JSON true/false arrived as bools
    pd.testing.assert_frame_equal(prepare_features(from_json, contract), prepare_features(df, contract))


def test_cast_features_accepts_spellings_and_rejects_missing_columns(contract: DatasetContract) -> None:
    frame = pd.DataFrame(
        {
            "tenure_months": ["12", 3, None],
            "monthly_charges": [1, 2.5, "x"],
            "usage_hours": [1, 2, 3],
            "support_calls": [0, 1, 2],
            "plan": ["basic", None, "premium"],
            "region": ["north", "east", 2.0],
            "autopay": ["True", 0, "yes"],
            "last_payment_delay_days": [None, 1, 2],
        }
    )
    X = prepare_features(frame, contract)
    assert X["tenure_months"].tolist()[:2] == [12.0, 3.0] and np.isnan(X["tenure_months"].iloc[2])
    assert np.isnan(X["monthly_charges"].iloc[2])  # unparseable -> missing, imputed later
    assert X["autopay"].tolist() == ["true", "false", "true"]
    assert X["region"].tolist() == ["north", "east", "2"]
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['plan'\]"):
        prepare_features(frame.drop(columns="plan"), contract)


def test_timestamp_features_are_not_model_inputs(contract: DatasetContract) -> None:
    raw = contract.to_dict()
    raw["columns"].insert(3, {"name": "signup_time", "type": "timestamp"})
    with_time = DatasetContract.from_dict(raw)
    df = make_churn_frame(80).assign(signup_time=pd.Timestamp("2024-01-01", tz="UTC"))
    assert "signup_time" in with_time.feature_columns
    assert model_features(with_time) == contract.feature_columns
    assert list(prepare_features(df, with_time).columns) == contract.feature_columns
    pipeline = build_pipeline(with_time, "logistic_regression", {})
    pipeline.fit(df, prepare_target(df["churned"], with_time))
    assert pipeline.predict(df.drop(columns="signup_time")).shape == (80,)  # serving needs no timestamp


def test_prepare_target_by_contract_type(contract: DatasetContract) -> None:
    y = prepare_target(pd.Series(pd.array([0, 1, 1], dtype="Int64")), contract)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="missing value"):
        prepare_target(pd.Series(pd.array([0, None], dtype="Int64")), contract)
    raw = contract.to_dict()
    raw["columns"] = [c for c in raw["columns"] if c["name"] != "churned"] + [{"name": "churned", "type": "bool"}]
    as_bool = DatasetContract.from_dict(raw)
    assert prepare_target(pd.Series(["true", "False", True]), as_bool).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="not booleans"):
        prepare_target(pd.Series(["maybe", "true"]), as_bool)


# --------------------------------------------------------------------------- pipelines
ALL_ALGORITHMS = [(task, algo) for task, algos in ALGORITHMS.items() for algo in algos]


@pytest.mark.parametrize(("task", "algorithm"), ALL_ALGORITHMS)
def test_each_algorithm_trains_predicts_and_round_trips(
    task: str, algorithm: str, contract: DatasetContract, regression_contract: DatasetContract, tmp_path: Path
) -> None:
    import skops.io

    c = contract if task == "classification" else regression_contract
    df = make_churn_frame(300)
    pipeline = fit(c, algorithm, df)
    assert pipeline.steps[0][0] == "cast" and pipeline.steps[-1][0] == "model"
    scaled = "scale" in str(pipeline.named_steps["preprocess"].transformers)
    assert scaled == (algorithm in ("logistic_regression", "ridge"))

    # the raw training frame (nullable dtypes, extra columns), the plain one and the JSON one agree
    plain = prepare_features(df, c)
    from_json = jsonish(df, c)
    expected = pipeline.predict(plain)
    np.testing.assert_array_equal(pipeline.predict(df), expected)
    np.testing.assert_array_equal(pipeline.predict(from_json), expected)
    np.testing.assert_array_equal(pipeline.predict(from_json[c.feature_columns[::-1]]), expected)  # column order
    metrics = compute_metrics(
        task,
        prepare_target(df[c.target], c),
        expected,
        pipeline.predict_proba(plain) if task == "classification" else None,
        classes=getattr(pipeline, "classes_", None),
    )
    if task == "classification":
        assert set(expected) <= {0, 1}
        assert metrics["roc_auc"] > 0.7, metrics  # the label depends on the features
    else:
        assert metrics["r2"] > 0.8, metrics  # charges follow plan and usage
    # skops: only allowlisted types, and a faithful round trip
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES)
    save_model(pipeline, tmp_path / "m", {"algorithm": algorithm, "classes": [np.int64(0), np.int64(1)]})
    loaded, meta = load_model(tmp_path / "m")
    assert meta["algorithm"] == algorithm and meta["classes"] == [0, 1]
    np.testing.assert_array_equal(loaded.predict(from_json), expected)


def test_multiclass_string_target_round_trips_with_allowlisted_types(contract: DatasetContract, tmp_path: Path) -> None:
    raw = contract.to_dict()
    raw.update(name="plans", target="plan")  # predict the plan (3 string classes) from the rest
    plans = DatasetContract.from_dict(raw)
    df = make_churn_frame(240).dropna(subset=["plan"])
    pipeline = fit(plans, "hist_gradient_boosting", df)
    assert list(pipeline.classes_) == ["basic", "premium", "standard"]
    save_model(pipeline, tmp_path, {"classes": list(pipeline.classes_)})
    loaded, _ = load_model(tmp_path)
    X = prepare_features(df, plans)
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))
    metrics = compute_metrics(
        "classification",
        prepare_target(df["plan"], plans),
        loaded.predict(X),
        loaded.predict_proba(X),
        classes=loaded.classes_,
    )
    assert metrics["roc_auc"] > 0.8 and set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}


def test_load_model_rejects_types_outside_the_allowlist(contract: DatasetContract, tmp_path: Path) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    foreign = Pipeline([("step", FunctionTransformer(textwrap.dedent))])  # a function we never trusted
    save_model(foreign, tmp_path, {})
    with pytest.raises(UntrustedModelError, match=r"textwrap\.dedent"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_model"):
        load_model(tmp_path / "nowhere")


# --------------------------------------------------------------------------- hyperparameters
def test_sagemaker_string_hyperparameters_are_coerced_by_default_types() -> None:
    hgb = resolve_hyperparameters(
        "classification",
        "hist_gradient_boosting",
        {
            "max_iter": "150",
            "learning_rate": "0.1",
            "max_depth": "null",
            "early_stopping": "true",
            "l2_regularization": "1",
            "max_leaf_nodes": "None",
        },
    )
    assert hgb == {
        "random_state": 0,
        "max_iter": 150,
        "learning_rate": 0.1,
        "max_depth": None,
        "early_stopping": True,
        "l2_regularization": 1.0,
        "max_leaf_nodes": None,
    }
    assert isinstance(hgb["l2_regularization"], float) and isinstance(hgb["max_iter"], int)
    rf = resolve_hyperparameters(
        "regression",
        "random_forest",
        {"n_estimators": "50.0", "max_features": '"sqrt"', "bootstrap": "False", "min_samples_split": "0.5"},
    )
    assert rf["n_estimators"] == 50 and isinstance(rf["n_estimators"], int)
    assert rf["max_features"] == "sqrt" and rf["bootstrap"] is False and rf["min_samples_split"] == 0.5
    # typed values (local settings YAML) pass through
    assert resolve_hyperparameters("regression", "ridge", {"alpha": 2, "fit_intercept": True}) == {
        "alpha": 2.0,
        "fit_intercept": True,
    }
    assert coerce_hyperparameter("1", False) is True and coerce_hyperparameter("[1, 2]", None) == [1, 2]


def test_unknown_algorithm_or_hyperparameter_lists_valid_names(contract: DatasetContract) -> None:
    with pytest.raises(
        ValueError, match=r"unknown algorithm 'xgboost'.*hist_gradient_boosting, random_forest, logistic_regression"
    ):
        build_pipeline(contract, "xgboost", {})
    with pytest.raises(ValueError, match=r"unknown algorithm 'ridge' for a classification task"):
        build_pipeline(contract, "ridge", {})
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['learning_rte'\].*learning_rate"):
        build_pipeline(contract, "hist_gradient_boosting", {"learning_rte": "0.1"})
    with pytest.raises(ValueError, match=r"invalid hyperparameters for hist_gradient_boosting.*max_iter"):
        build_pipeline(contract, "hist_gradient_boosting", {"max_iter": "-3"})


# --------------------------------------------------------------------------- metrics
def test_compute_metrics_known_values() -> None:
    reg = compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert reg == pytest.approx({"rmse": (1 / 3) ** 0.5, "mae": 1 / 3, "r2": 0.5})
    clf = compute_metrics("classification", [0, 0, 1, 1], [0, 1, 1, 1], [0.1, 0.6, 0.7, 0.9])
    assert clf["accuracy"] == 0.75 and clf["f1"] == pytest.approx(0.8) and clf["roc_auc"] == 1.0
    assert clf["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.9])))
    # string labels: the positive class is the last of the sorted classes ("yes"); 2-D scores work too
    s = compute_metrics(
        "classification",
        np.array(["no", "yes", "yes"], dtype=object),
        ["no", "yes", "no"],
        [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]],
        classes=["no", "yes"],
    )
    assert s["f1"] == pytest.approx(2 / 3) and s["roc_auc"] == 1.0
    # undefined metrics are left out, not NaN
    one_class = compute_metrics("classification", [1, 1], [1, 0], [0.9, 0.2], classes=[0, 1])
    assert set(one_class) == {"accuracy", "f1"}
    assert "r2" not in compute_metrics("regression", [1.0], [2.0])
    with pytest.raises(ValueError, match="zero rows"):
        compute_metrics("regression", [], [])


# --------------------------------------------------------------------------- entrypoint
def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "MLOPS_ML_ROOT"))}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "include"), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mlops_core.training.entrypoint", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=240,
        cwd=REPO_ROOT,
    )


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df.iloc[: int(len(df) * 0.75)], df.iloc[int(len(df) * 0.75) :]


def test_prepare_ml_root_lays_out_sagemaker_inputs(contract: DatasetContract, tmp_path: Path) -> None:
    train, test = _split(make_churn_frame(120))
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("stale")
    (tmp_path / "input" / "data" / "train").mkdir(parents=True)
    (tmp_path / "input" / "data" / "train" / "old.parquet").write_text("stale")
    paths = prepare_ml_root(
        tmp_path, train, test, contract, "random_forest", {"n_estimators": 10, "max_depth": None, "bootstrap": True}
    )
    hps = json.loads(paths.hyperparameters.read_text())
    assert all(isinstance(v, str) for v in hps.values())
    assert hps["n_estimators"] == "10" and hps["max_depth"] == "null" and hps["bootstrap"] == "true"
    assert hps["algorithm"] == "random_forest"
    assert DatasetContract.from_dict(json.loads(hps["contract"])) == contract
    assert sorted(p.name for p in paths.train.iterdir()) == ["train.parquet"]  # stale file replaced
    assert not paths.failure.exists()
    back = pd.read_parquet(paths.test / "test.parquet")
    assert len(back) == len(test) and str(back["tenure_months"].dtype) == "Int64"
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        prepare_ml_root(tmp_path, train, test, contract, "random_forest", {"trees": 3})
    with pytest.raises(TrainingInputError, match=r"lacks column\(s\) \['plan'\]"):
        prepare_ml_root(tmp_path, train.drop(columns="plan"), None, contract, "random_forest", {})


def test_cli_trains_end_to_end_on_an_ml_root(contract: DatasetContract, tmp_path: Path) -> None:
    train, test = _split(make_churn_frame(400))
    prepare_ml_root(tmp_path, train, test, contract, "hist_gradient_boosting", {"max_iter": 30, "learning_rate": 0.1})
    result = _run_cli("--ml-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())
    assert set(metrics) == {"test_roc_auc", "test_accuracy", "test_f1", "test_log_loss"}
    assert metrics["test_roc_auc"] > 0.65
    printed = dict(re.findall(r"^METRIC (\w+)=([0-9.eE+-]+)$", result.stdout, flags=re.M))
    assert set(printed) == set(metrics)
    assert all(float(printed[k]) == pytest.approx(v, rel=1e-9) for k, v in metrics.items())
    assert "fitting hist_gradient_boosting on 300 rows" in result.stdout  # progress logs on stdout
    assert not (tmp_path / "output" / "failure").exists()

    pipeline, meta = load_model(tmp_path / "model")
    assert meta["algorithm"] == "hist_gradient_boosting" and meta["hyperparameters"]["max_iter"] == 30
    assert meta["train_rows"] == 300 and meta["test_rows"] == 100 and meta["classes"] == [0, 1]
    assert meta["feature_columns"] == contract.feature_columns and meta["metrics"] == metrics
    assert DatasetContract.from_dict(meta["contract"]) == contract
    assert {"python", "scikit-learn", "skops", "pandas"} <= set(meta["library_versions"])
    assert set(meta["skops_trusted_types"]) <= set(SKOPS_TRUSTED_TYPES)
    assert pipeline.predict(jsonish(test, contract)).shape == (100,)


def test_cli_failure_writes_reason_and_exits_1(contract: DatasetContract, tmp_path: Path) -> None:
    train = make_churn_frame(50)
    prepare_ml_root(tmp_path, train, None, contract, "logistic_regression", {})
    for f in (tmp_path / "input" / "data" / "train").iterdir():
        f.unlink()  # the training data never arrived
    result = _run_cli("--ml-root", str(tmp_path))
    assert result.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "train channel" in reason and "no *.parquet files" in reason
    assert "training failed" in result.stderr
    assert not (tmp_path / "model" / "model.skops").exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.iloc[0:0], "0 rows"),
        (lambda df: df.assign(churned=pd.array([1] * len(df), dtype="Int64")), "single class"),
        (lambda df: df.drop(columns=["usage_hours"]), r"lacks column\(s\) \['usage_hours'\]"),
    ],
    ids=["empty", "single-class", "missing-column"],
)
def test_bad_training_data_gives_clear_errors(contract: DatasetContract, tmp_path: Path, mutate, message: str) -> None:
    paths = prepare_ml_root(tmp_path, make_churn_frame(40), None, contract, "logistic_regression", {})
    mutate(make_churn_frame(40)).to_parquet(paths.train / "train.parquet", index=False)
    with pytest.raises(TrainingInputError, match=message):
        run_training(tmp_path, environ={})


def test_sagemaker_environment_variables_are_honored(
    contract: DatasetContract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # the layout under the ml root holds a decoy; SageMaker's variables point elsewhere
    prepare_ml_root(tmp_path / "root", make_churn_frame(60, seed=9), None, contract, "logistic_regression", {})
    train, test = _split(make_churn_frame(200))
    channels = prepare_ml_root(tmp_path / "channels", train, test, contract, "logistic_regression", {})
    sm = {
        "SM_CHANNEL_TRAIN": channels.train,
        "SM_CHANNEL_TEST": channels.test,
        "SM_MODEL_DIR": tmp_path / "sm-model",
        "SM_OUTPUT_DATA_DIR": tmp_path / "sm-output",
    }
    for key, value in sm.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MLOPS_ML_ROOT", str(tmp_path / "root"))  # and no --ml-root argument
    # SageMaker framework estimators JSON-encode string hyperparameters: "\"logistic_regression\""
    hps = json.loads((tmp_path / "root" / "input" / "config" / "hyperparameters.json").read_text())
    hps.update(algorithm='"logistic_regression"', C="0.5", sagemaker_program='"train.py"', _tuning_objective_metric="x")
    (tmp_path / "root" / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))

    assert entrypoint.main([]) == 0
    _, meta = load_model(tmp_path / "sm-model")
    assert meta["train_rows"] == 150 and meta["test_rows"] == 50 and meta["hyperparameters"]["C"] == 0.5
    assert set(json.loads((tmp_path / "sm-output" / "metrics.json").read_text())) >= {"test_roc_auc", "test_f1"}
    assert "METRIC test_roc_auc=" in capsys.readouterr().out
    assert not (tmp_path / "root" / "model").exists()


def test_azure_ml_arguments_are_honored(
    contract: DatasetContract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_TEST", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_OUTPUT_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLOPS_ML_ROOT", str(tmp_path / "root"))  # where a failure file would go
    train, _ = _split(make_churn_frame(200))
    staged = prepare_ml_root(tmp_path / "staged", train, None, contract, "random_forest", {"n_estimators": 5})
    hps_string = staged.hyperparameters.read_text()
    args = [
        "--train",
        str(staged.train),
        "--model-dir",
        str(tmp_path / "outputs" / "model"),
        "--output-dir",
        str(tmp_path / "outputs" / "metrics"),
        "--hyperparameters",
        hps_string,
    ]
    assert entrypoint.main(args) == 0
    metrics = json.loads((tmp_path / "outputs" / "metrics" / "metrics.json").read_text())
    assert set(metrics) == {"train_roc_auc", "train_accuracy", "train_f1", "train_log_loss"}  # no test channel
    _, meta = load_model(tmp_path / "outputs" / "model")
    assert meta["algorithm"] == "random_forest" and meta["hyperparameters"]["n_estimators"] == 5
    # the hyperparameters may also be a file; a broken one fails with exit code 1 and a reason
    assert entrypoint.main([*args[:-1], str(staged.hyperparameters)]) == 0
    assert entrypoint.main([*args[:-1], "{not json"]) == 1
    assert "not valid JSON" in (tmp_path / "root" / "output" / "failure").read_text()


def test_training_paths_resolution_order(tmp_path: Path) -> None:
    env = {"MLOPS_ML_ROOT": str(tmp_path / "env-root"), "SM_MODEL_DIR": "/sm/model", "SM_OUTPUT_DIR": "/sm/out"}
    paths = TrainingPaths.resolve(None, environ=env)
    assert paths.root == tmp_path / "env-root" and paths.train == tmp_path / "env-root" / "input" / "data" / "train"
    assert paths.model == Path("/sm/model") and paths.failure == Path("/sm/out/failure")
    explicit = TrainingPaths.resolve(tmp_path, model_dir=tmp_path / "m", environ=env)
    assert explicit.root == tmp_path and explicit.model == tmp_path / "m"
    assert TrainingPaths.resolve(None, environ={}).root == Path("/opt/ml")


# --------------------------------------------------------------------------- MLflow
def test_saved_model_logs_to_mlflow_with_skops_and_serves_the_same(
    contract: DatasetContract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    df = make_churn_frame(200)
    pipeline = fit(contract, "hist_gradient_boosting", df)
    save_model(pipeline, tmp_path / "model", {"algorithm": "hist_gradient_boosting"})
    loaded, _ = load_model(tmp_path / "model")

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # mlflow gates skops loading behind it
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sklearn.log_model(
                loaded,
                name="model",
                serialization_format="skops",
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],  # skip slow requirement inference
            )
        served = mlflow.pyfunc.load_model(info.model_uri)
        rows = jsonish(df.iloc[:25], contract)
        np.testing.assert_array_equal(np.asarray(served.predict(rows)), pipeline.predict(rows))
        assert set(np.asarray(served.predict(rows))) <= {0, 1}
        # the gate scores a pyfunc champion like the pipeline itself (probabilities via get_raw_model)
        from mlops_core.evaluation import score_model

        assert score_model(served, df, contract) == score_model(pipeline, df, contract)
        assert "roc_auc" in score_model(served, df, contract)
    finally:
        mlflow.set_tracking_uri(None)


def test_the_contract_can_travel_as_a_channel_of_any_size(contract: DatasetContract, tmp_path: Path) -> None:
    """SageMaker refuses hyperparameter values over 2,500 characters; a wide contract goes as a channel."""
    from mlops_core.compute import JobSpec
    from mlops_core.sagemaker_compute import SageMakerCompute
    from mlops_core.training.entrypoint import CONTRACT_FILE, contract_json, job_hyperparameters

    raw = contract.to_dict()
    raw["columns"] = [
        *raw["columns"],
        *({"name": f"sensor_reading_{i:03d}", "type": "float", "nullable": True} for i in range(120)),
    ]
    wide = DatasetContract.from_dict(raw)
    assert len(contract_json(wide)) > 2500
    inline = job_hyperparameters(wide, "logistic_regression", {})
    as_channel = job_hyperparameters(wide, "logistic_regression", {}, contract_as_channel=True)
    assert "contract" in inline and "contract" not in as_channel
    spec = JobSpec(name="wide-1", entrypoint=("python",), inputs={"train": "s3://b/p/train/"}, output_uri="s3://b/p/o")
    with pytest.raises(ValueError, match=r"\['contract'\] of job wide-1 exceed SageMaker's 2500"):
        SageMakerCompute(None, None, None).submit(  # type: ignore[arg-type]  # refused before any call
            JobSpec(**{**spec.__dict__, "hyperparameters": inline})
        )

    # The entrypoint reads it from <root>/input/data/contract/contract.json when no hyperparameter has it.
    train, test = _split(make_churn_frame(200))
    paths = prepare_ml_root(tmp_path, train, test, contract, "logistic_regression", {})
    hyperparameters = json.loads(paths.hyperparameters.read_text())
    channel = tmp_path / "input" / "data" / "contract"
    channel.mkdir(parents=True)
    (channel / CONTRACT_FILE).write_text(hyperparameters.pop("contract"))
    paths.hyperparameters.write_text(json.dumps(hyperparameters))
    result = _run_cli("--ml-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    _, meta = load_model(tmp_path / "model")
    assert DatasetContract.from_dict(meta["contract"]) == contract

    (channel / CONTRACT_FILE).unlink()
    result = _run_cli("--ml-root", str(tmp_path))
    assert result.returncode == 1 and "the job has no contract" in (tmp_path / "output" / "failure").read_text()
