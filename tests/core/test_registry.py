"""ModelRegistry against a real MLflow SQLite store: runs, lineage, versions, aliases, copies."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from conftest import TOY_FEATURES, toy_frame, toy_pipeline

from mlops_core.model_integrity import MODEL_SHA256_TAG, ModelIntegrityError, artifact_digest
from mlops_core.registry import (
    CHAMPION_ALIAS,
    PREVIOUS_CHAMPION_ALIAS,
    ROLLED_BACK_TAG,
    RUN_KEY_TAG,
    SOURCE_TAG,
    ModelRegistry,
    ModelVersionInfo,
    RegistryError,
)
from tests.model_tampering import CANARY_TEXT, artifact_folder, swap_skops, tamper_to_pickle

FEATURES = TOY_FEATURES
DATASET_SOURCE = "/data/store/datasets/churn/versions/abc123"


def churn_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    df = toy_frame(n, seed)
    df["churned"] = ((df["tenure"] < 30) | (df["plan"] == "basic")).astype(int)
    return df


def small_pipeline(df: pd.DataFrame, C: float = 1.0):
    return toy_pipeline(df[FEATURES], df["churned"], C)


def log_run(registry: ModelRegistry, run_name: str, df: pd.DataFrame, C: float = 1.0, **extra) -> str:
    return registry.log_training_run(
        run_name=run_name,
        model=small_pipeline(df, C),
        input_example=df[FEATURES].head(3),
        params={"C": C, "algorithm": "logistic_regression"},
        metrics={"roc_auc": 0.9, "accuracy": 0.8},
        tags={"mlops.dataset_version": "ds-abc123", "git_commit": "deadbeef"},
        dataset_df=df,
        dataset_name="churn",
        dataset_digest="abc123",
        dataset_source=DATASET_SOURCE,
        artifacts=extra.pop("artifacts", None),
        skops_trusted_types=None,
        dataset_targets="churned",
        **extra,
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("mlflow")
    return ModelRegistry(f"sqlite:///{root}/mlflow.db", root / "artifacts", "test-exp")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return churn_frame()


@pytest.fixture(scope="module")
def run_id(registry: ModelRegistry, data: pd.DataFrame, tmp_path_factory) -> str:
    report = tmp_path_factory.mktemp("artifacts") / "evaluation.json"
    report.write_text('{"roc_auc": 0.9}')
    meta = report.parent / "meta.json"
    meta.write_text("{}")
    return log_run(
        registry, "train-run-1", data, artifacts={"evaluation/evaluation.json": report, "model_meta.json": meta}
    )


def test_log_training_run_records_params_metrics_lineage_and_model(registry, run_id):
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"C": "1.0", "algorithm": "logistic_regression"}
    assert run.data.metrics == {"roc_auc": 0.9, "accuracy": 0.8}
    assert run.data.tags[RUN_KEY_TAG] == "train-run-1"
    assert run.data.tags["mlops.dataset_version"] == "ds-abc123"

    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == ("churn", "abc123")
    assert DATASET_SOURCE in dataset.source
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"

    assert {a.path for a in registry.client.list_artifacts(run_id, "evaluation")} == {"evaluation/evaluation.json"}
    assert "model_meta.json" in {a.path for a in registry.client.list_artifacts(run_id)}  # renamed to its key
    # The experiment's artifacts live under the configured artifact root.
    experiment = registry.client.get_experiment(registry.experiment_id)
    assert experiment.artifact_location.endswith("/artifacts/test-exp")


def test_model_is_saved_with_skops_and_has_a_signature(registry, run_id):
    version = registry.register(run_id, "dev.sig")
    model = registry.load_model("dev.sig", version)
    flavor = model.metadata.flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == FEATURES


def test_log_training_run_is_idempotent_by_run_name(registry, run_id, data):
    again = log_run(registry, "train-run-1", data, C=0.5)
    assert again == run_id
    runs = registry.client.search_runs([registry.experiment_id], f"tags.`{RUN_KEY_TAG}` = 'train-run-1'")
    assert len(runs) == 1
    assert runs[0].data.params["C"] == "1.0"  # the retry logged nothing


def test_failed_attempt_is_not_reused(registry, data):
    class Exploding:
        def predict(self, X):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        registry.log_training_run(
            run_name="train-run-fail",
            model=Exploding(),
            input_example=data[FEATURES].head(2),
            params={},
            metrics={},
            tags={},
            dataset_df=data,
            dataset_name="churn",
            dataset_digest="x",
            dataset_source="/x",
        )
    assert registry.find_run("train-run-fail") is None


def test_unresolvable_dataset_source_is_kept(data):
    from mlops_core.registry import _pandas_dataset

    ds = _pandas_dataset(data, "store://datasets/churn/v1", "churn", "d1", "churned")
    assert ds.digest == "d1" and "store://datasets/churn/v1" in ds.source.to_json()


def test_register_is_idempotent_and_tags_the_version(registry, run_id):
    v1 = registry.register(run_id, "dev.churn", {"mlops.dataset_version": "ds-abc123", "git_commit": "deadbeef"})
    v2 = registry.register(run_id, "dev.churn", {"mlops.dataset_version": "ds-abc123"})
    assert v1 == v2 == "1"
    info = registry.version_info("dev.churn", v1)
    assert isinstance(info, ModelVersionInfo)
    assert info.run_id == run_id
    assert info.tags["mlops.dataset_version"] == "ds-abc123"
    assert info.tags["git_commit"] == "deadbeef"
    assert info.tags["mlops.run_id"] == run_id
    assert info.metrics["roc_auc"] == 0.9
    assert "/artifacts/test-exp/models/m-" in info.source
    assert len(registry.client.search_model_versions("name = 'dev.churn'")) == 1


def test_register_unknown_run_fails_clearly(registry):
    with pytest.raises(RegistryError, match="not found"):
        registry.register("0" * 32, "dev.nothing")


def test_champion_alias_set_moved_and_rolled_back(registry, data):
    name = "dev.aliases"
    assert registry.champion(name) is None  # no such model yet
    assert registry.rollback(name) is None
    v1 = registry.register(log_run(registry, "alias-run-1", data), name)
    v2 = registry.register(log_run(registry, "alias-run-2", data, C=0.3), name)
    assert (v1, v2) == ("1", "2")
    assert registry.champion(name) is None

    registry.set_champion(name, v1)
    assert registry.champion(name).version == "1"
    assert registry.previous_champion(name) is None

    registry.set_champion(name, v2)
    champion = registry.champion(name)
    assert champion.version == "2" and CHAMPION_ALIAS in champion.aliases
    assert registry.previous_champion(name).version == "1"

    registry.set_champion(name, v2)  # setting it again keeps the rollback target
    assert registry.previous_champion(name).version == "1"

    assert registry.rollback(name) == "1"
    assert registry.champion(name).version == "1"
    assert registry.version_info(name, "2").tags[ROLLED_BACK_TAG] == "true"
    assert registry.rollback(name) == "1"  # idempotent
    assert registry.champion(name).version == "1"
    assert PREVIOUS_CHAMPION_ALIAS in registry.version_info(name, "1").aliases

    registry.set_champion(name, v2, previous="1")
    assert registry.champion(name).version == "2"

    with pytest.raises(RegistryError, match="no such model version"):
        registry.set_champion(name, "99")
    assert registry.champion(name).version == "2"


def test_copy_to_another_namespace_is_idempotent(registry, run_id):
    src = registry.register(run_id, "dev.copy")
    registry.set_champion("dev.copy", src)
    first = registry.copy_to("dev.copy", src, "staging.copy", {"mlops.promoted_by": "ci"})
    second = registry.copy_to("dev.copy", src, "staging.copy", {"mlops.promoted_by": "ci"})
    assert first == second == "1"
    info = registry.version_info("staging.copy", first)
    assert info.tags[SOURCE_TAG] == f"dev.copy/{src}"
    assert info.tags["mlops.promoted_by"] == "ci"
    assert info.run_id == run_id
    assert info.aliases == []  # aliases belong to a namespace; they are not copied
    assert len(registry.client.search_model_versions("name = 'staging.copy'")) == 1
    # A second hop keeps working and records its own source.
    prod = registry.copy_to("staging.copy", first, "prod.copy")
    assert registry.version_info("prod.copy", prod).tags[SOURCE_TAG] == "staging.copy/1"
    with pytest.raises(RegistryError, match="no such model version"):
        registry.copy_to("dev.copy", "42", "staging.copy")


def test_load_model_by_version_and_alias_predicts(registry, run_id, data):
    version = registry.register(run_id, "dev.load")
    registry.set_champion("dev.load", version)
    expected = small_pipeline(data).predict(data[FEATURES].head(10))
    for ref in (version, "champion"):
        model = registry.load_model("dev.load", ref)
        assert list(model.predict(data[FEATURES].head(10))) == list(expected)
    assert list(registry.load_run_model(run_id).predict(data[FEATURES].head(10))) == list(expected)
    assert ModelRegistry.model_uri("dev.load", "3") == "models:/dev.load/3"
    assert ModelRegistry.model_uri("dev.load", "champion") == "models:/dev.load@champion"


def test_log_artifact_run_is_idempotent(registry, tmp_path):
    report = tmp_path / "drift.html"
    report.write_text("<html>drift</html>")
    artifacts = {"drift/drift.html": report, "drift_report.html": report}
    first = registry.log_artifact_run("drift-2024-01-01", artifacts, {"drift_share": 0.4}, {"kind": "drift"})
    second = registry.log_artifact_run("drift-2024-01-01", artifacts, {"drift_share": 0.9})
    assert first == second
    run = registry.client.get_run(first)
    assert run.data.metrics == {"drift_share": 0.4}
    assert run.data.tags["kind"] == "drift"
    assert [a.path for a in registry.client.list_artifacts(first, "drift")] == ["drift/drift.html"]
    assert sorted(a.path for a in registry.client.list_artifacts(first)) == ["drift", "drift_report.html"]
    with pytest.raises(ValueError, match="inside the run"):
        registry.log_artifact_run("drift-escape", {"../x.html": report})
    with pytest.raises(FileNotFoundError, match="missing"):
        registry.log_artifact_run("drift-missing", {"missing": tmp_path / "nope.html"})
    assert registry.find_run("drift-missing") is None


def test_skops_trusted_types_are_required_and_honoured(registry, data):
    from mlflow.exceptions import MlflowException
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(data[["tenure", "charges"]], data["churned"])
    common = {
        "model": forest,
        "input_example": data[["tenure", "charges"]].head(3),
        "params": {},
        "metrics": {},
        "tags": {},
        "dataset_df": data,
        "dataset_name": "churn",
        "dataset_digest": "abc123",
        "dataset_source": DATASET_SOURCE,
    }
    with pytest.raises(MlflowException, match="untrusted types"):
        registry.log_training_run(run_name="forest-untrusted", skops_trusted_types=None, **common)
    assert registry.find_run("forest-untrusted") is None

    trusted = ["numpy.dtype", "sklearn.tree._tree.Tree"]
    run_id = registry.log_training_run(run_name="forest-trusted", skops_trusted_types=trusted, **common)
    version = registry.register(run_id, "dev.forest")
    model = registry.load_model("dev.forest", version)
    assert model.metadata.flavors["sklearn"]["skops_trusted_types"] == trusted
    assert len(model.predict(data[["tenure", "charges"]].head(4))) == 4


def test_no_global_tracking_state_leaks(registry, tmp_path, data, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/someone-elses.db")
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before_uri = mlflow.get_tracking_uri()
    # A second store (a copy of the first: MLflow's schema migrations on a fresh SQLite file are slow).
    shutil.copy(registry.tracking_uri[len("sqlite:///") :], tmp_path / "other.db")
    other = ModelRegistry(f"sqlite:///{tmp_path}/other.db", tmp_path / "art", "other-exp")
    other_run = log_run(other, "other-run", data)
    assert os.environ.get("MLFLOW_TRACKING_URI") == before_env
    assert mlflow.get_tracking_uri() == before_uri
    # Each registry sees only its own store.
    assert other.find_run("other-run").info.run_id == other_run
    assert registry.find_run("other-run") is None


def test_experiment_creation_is_idempotent(registry):
    twin = ModelRegistry(registry.tracking_uri, registry.artifact_root, registry.experiment)
    assert twin.experiment_id == registry.experiment_id


def test_quotes_in_names_are_rejected(registry):
    with pytest.raises(ValueError, match="quotes"):
        registry.find_run("it's")


# ----------------------------------------------------------------------------- model integrity
def test_the_model_digest_is_recorded_on_the_run_and_travels_with_every_version(registry, run_id, tmp_path):
    import mlflow.artifacts

    model_id = registry.client.get_run(run_id).data.tags["mlops.model_id"]
    location = registry.client.get_logged_model(model_id).artifact_location
    digest = artifact_digest(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path)))
    assert registry.run_tags(run_id)[MODEL_SHA256_TAG] == digest
    version = registry.register(run_id, "dev.digest", {MODEL_SHA256_TAG: "0" * 64})  # a caller cannot override it
    assert registry.version_info("dev.digest", version).tags.get(MODEL_SHA256_TAG) == digest
    copied = registry.copy_to("dev.digest", version, "staging.digest")
    assert registry.version_info("staging.digest", copied).tags[MODEL_SHA256_TAG] == digest
    assert registry.verify_model("staging.digest", copied) == digest


def test_a_run_without_a_recorded_digest_is_neither_registered_nor_loaded(registry, data):
    import mlflow
    import mlflow.sklearn

    from mlops_core.registry import _fluent_tracking_uri

    with _fluent_tracking_uri(registry.tracking_uri), mlflow.start_run(experiment_id=registry.experiment_id) as run:
        mlflow.sklearn.log_model(
            small_pipeline(data), name="model", serialization_format="skops", pip_requirements=["scikit-learn"]
        )
    with pytest.raises(RegistryError, match=f"has no {MODEL_SHA256_TAG} tag"):
        registry.register(run.info.run_id, "dev.undigested")
    with pytest.raises(ModelIntegrityError, match="has no recorded digest"):
        registry.load_run_model(run.info.run_id)


@pytest.fixture
def tampered(registry, data, tmp_path, monkeypatch):
    """A registered version whose MLmodel was switched to pickle, with a payload that writes a canary."""
    import mlflow.pyfunc

    run = log_run(registry, f"tampered-{tmp_path.name}", data)
    version = registry.register(run, "dev.tampered")
    folder = artifact_folder(registry, "dev.tampered", version)
    canary = tmp_path / "canary"
    recorded = registry.version_info("dev.tampered", version).tags.get(MODEL_SHA256_TAG)
    tamper_to_pickle(folder, canary)
    # Control: MLflow's own loader (what load_model used to call) runs the payload: the attack is real.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    mlflow.pyfunc.load_model(str(folder))
    assert canary.read_text() == CANARY_TEXT
    canary.unlink()
    return {"run_id": run, "version": version, "canary": canary, "recorded": recorded, "found": artifact_digest(folder)}


def test_a_model_switched_to_pickle_is_refused_by_every_load(registry, tampered):
    version, run_id = tampered["version"], tampered["run_id"]
    registry.set_champion("dev.tampered", version)
    loads = {
        f"dev.tampered version {version}": lambda: registry.load_model("dev.tampered", version),
        f"dev.tampered version {version} ": lambda: registry.load_model("dev.tampered", "champion"),
        f"the model of run {run_id}": lambda: registry.load_run_model(run_id),
    }
    for label, load in loads.items():
        with pytest.raises(ModelIntegrityError) as refused:
            load()
        message = str(refused.value)
        assert message.startswith(label.strip() + ":")
        assert f"expected sha256 {tampered['recorded']}, found {tampered['found']}" in message
        assert "Re-register the model from a trusted training run" in message
    with pytest.raises(ModelIntegrityError, match=f"dev.tampered version {version}"):
        registry.verify_model("dev.tampered", version)
    assert not tampered["canary"].exists()


def test_a_model_with_another_models_skops_bytes_is_refused(registry, data, tmp_path):
    first = registry.register(log_run(registry, "swap-1", data), "dev.swapped")
    second = registry.register(log_run(registry, "swap-2", data.assign(churned=1 - data["churned"])), "dev.swapped")
    swap_skops(artifact_folder(registry, "dev.swapped", first), artifact_folder(registry, "dev.swapped", second))
    expected = registry.version_info("dev.swapped", first).tags.get(MODEL_SHA256_TAG)
    with pytest.raises(ModelIntegrityError, match=f"dev.swapped version {first}: .*expected sha256 {expected}, found"):
        registry.load_model("dev.swapped", first)
    assert registry.load_model("dev.swapped", second) is not None  # the untouched version still loads
