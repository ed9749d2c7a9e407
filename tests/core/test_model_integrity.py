"""model_integrity: the digest of a model folder, the MLmodel checks, and the verified loader.

Real MLflow model folders (``mlflow.sklearn.save_model`` with skops) and real tampering: an
``MLmodel`` switched to pickle with a payload that writes a canary file when unpickled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TOY_FEATURES, toy_frame, toy_pipeline

from mlops_core.model_integrity import (
    LOADER_MODULE,
    ModelIntegrityError,
    artifact_digest,
    check_model_folder,
    fetch_verified_model,
    load_verified_model,
)
from tests.model_tampering import tamper_to_pickle


@pytest.fixture(scope="module")
def rows():
    df = toy_frame(60, 3)
    df["churned"] = (df["tenure"] < 40).astype(int)
    return df


@pytest.fixture(scope="module")
def saved(tmp_path_factory, rows) -> Path:
    """A real MLflow sklearn model folder saved with skops (as ModelRegistry.log_training_run writes it)."""
    import mlflow.sklearn

    path = tmp_path_factory.mktemp("saved") / "model"
    mlflow.sklearn.save_model(
        toy_pipeline(rows[TOY_FEATURES], rows["churned"]),
        str(path),
        serialization_format="skops",
        pip_requirements=["scikit-learn"],  # no requirement inference (a slow subprocess)
    )
    return path


@pytest.fixture
def model(tmp_path, saved) -> Path:
    """A private copy of the saved model folder, free to tamper with."""
    return Path(shutil.copytree(saved, tmp_path / "artifact"))


def edit_mlmodel(folder: Path, change) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    change(mlmodel)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


# ----------------------------------------------------------------------------- digest
def test_digest_covers_every_path_and_byte_in_a_canonical_order(tmp_path):
    def folder(name: str, files: dict[str, bytes]) -> Path:
        root = tmp_path / name
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return root

    base = {"MLmodel": b"flavors: {}\n", "model.skops": b"\x00\x01zip", "sub/x.json": b"{}"}
    digest = artifact_digest(folder("a", base))
    assert len(digest) == 64
    assert artifact_digest(folder("b", dict(reversed(base.items())))) == digest  # creation order does not matter
    (tmp_path / "b" / "empty-dir").mkdir()
    assert artifact_digest(tmp_path / "b") == digest  # empty folders hold no bytes
    assert artifact_digest(folder("c", {**base, "model.skops": b"\x00\x01zap"})) != digest  # one byte
    assert artifact_digest(folder("d", {**base, "sub/y.json": b"{}"})) != digest  # a file more
    renamed = {("model2.skops" if k == "model.skops" else k): v for k, v in base.items()}
    assert artifact_digest(folder("e", renamed)) != digest  # a path
    # Bytes moved from one file to the next: the size framing tells the two apart.
    assert artifact_digest(folder("f", {"a": b"xy", "b": b""})) != artifact_digest(folder("g", {"a": b"x", "b": b"y"}))


def test_digest_refuses_a_symbolic_link(tmp_path, model):
    os.symlink("/etc/hostname", model / "link")
    with pytest.raises(ModelIntegrityError, match="link is not a regular file"):
        artifact_digest(model)


# ----------------------------------------------------------------------------- verified loading
def test_verified_folder_loads_through_our_loader_even_with_mlflows_pickle_gate_closed(
    tmp_path, model, rows, monkeypatch
):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    folder = fetch_verified_model(str(model), artifact_digest(model), tmp_path / "verified", label="toy version 1")
    pinned = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert pinned["loader_module"] == LOADER_MODULE and pinned["data"] == "model.skops"

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    # MLflow 3.17 closes that gate for every mlflow.sklearn load, skops included ...
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.pyfunc.load_model(str(model))
    # ... which our loader does not use: it loads the skops file with our own trusted types.
    loaded = load_verified_model(folder)
    expected = toy_pipeline(rows[TOY_FEATURES], rows["churned"]).predict(rows[TOY_FEATURES])
    np.testing.assert_array_equal(np.asarray(loaded.predict(rows[TOY_FEATURES])), expected)
    assert hasattr(loaded.get_raw_model(), "predict_proba")
    assert loaded.metadata.flavors["sklearn"]["serialization_format"] == "skops"


def test_mismatch_names_the_model_both_digests_and_what_to_do(tmp_path, model, saved):
    recorded = artifact_digest(saved)
    (model / "requirements.txt").write_text("scikit-learn\nevil-package\n")
    found = artifact_digest(model)
    with pytest.raises(ModelIntegrityError) as refused:
        fetch_verified_model(str(model), recorded, tmp_path / "dest", label="dev.churn version 7")
    message = str(refused.value)
    assert "dev.churn version 7" in message
    assert f"expected sha256 {recorded}, found {found}" in message
    assert "Re-register the model from a trusted training run" in message
    assert not (tmp_path / "dest").exists()  # nothing unverified is left behind


@pytest.mark.parametrize(
    ("expected", "reason"),
    [(None, "has no recorded digest"), ("", "has no recorded digest"), ("abc123", "is not a SHA-256")],
)
def test_a_missing_or_malformed_digest_is_refused(tmp_path, model, expected, reason):
    with pytest.raises(ModelIntegrityError, match=reason):
        fetch_verified_model(str(model), expected, tmp_path / "dest", label="dev.churn version 1")


def test_pickle_is_refused_even_when_the_digest_matches(tmp_path, model):
    """A pickle model whose digest was recorded (logged by other code, or a forged tag) still never loads."""
    canary = tmp_path / "canary"
    tamper_to_pickle(model, canary)
    with pytest.raises(ModelIntegrityError, match="refusing the model artifact: MLmodel mentions pickle"):
        fetch_verified_model(str(model), artifact_digest(model), tmp_path / "dest", label="dev.churn version 2")
    with pytest.raises(ModelIntegrityError, match="refusing"):
        check_model_folder(model, "dev.churn version 2")
    assert not canary.exists()


def test_a_column_named_like_pickle_is_only_data(model):
    edit_mlmodel(model, lambda m: m.update(signature={"inputs": '[{"name": "pickled_goods", "type": "long"}]'}))
    check_model_folder(model, "m")  # no error


def test_pickle_file_next_to_a_skops_model_is_refused(model):
    (model / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ModelIntegrityError, match=r"pickle-format file\(s\) \['extra.pkl'\]"):
        check_model_folder(model, "m")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m["flavors"]["sklearn"].update(skops_trusted_types=["builtins.eval"]), "outside SKOPS_TRUSTED"),
        (lambda m: m["flavors"]["python_function"].update(loader_module="os"), "expected 'model.skops' with"),
        (lambda m: m["flavors"]["python_function"].update(code="code"), r"unexpected key\(s\) \['code'\]"),
        (lambda m: m["flavors"]["sklearn"].update(code="code"), "ships code paths"),
        (lambda m: m["flavors"]["python_function"].update(predict_fn="__reduce__"), "predict_fn"),
        (lambda m: m["flavors"].update(python_model={"loader_module": "x"}), "its flavors are"),
        (lambda m: m["flavors"]["sklearn"].update(pickled_model="../../etc/model.skops"), "not a .skops file"),
        (lambda m: m["flavors"]["sklearn"].update(serialization_format="skops2"), "only 'skops' is loaded"),
    ],
    ids=[
        "foreign-trusted-type",
        "foreign-loader",
        "pyfunc-code",
        "sklearn-code",
        "predict-fn",
        "extra-flavor",
        "path-escape",
        "unknown-format",
    ],
)
def test_mlmodel_that_could_load_anything_else_is_refused(model, change, reason):
    edit_mlmodel(model, change)
    with pytest.raises(ModelIntegrityError, match=reason):
        check_model_folder(model, "dev.churn version 3")


def test_skops_file_referencing_an_untrusted_type_is_refused(tmp_path, model):
    import skops.io

    skops.io.dump({"f": shutil.copyfile}, model / "model.skops")  # a function skops does not trust
    with pytest.raises(ModelIntegrityError, match=r"model.skops references type\(s\) outside SKOPS_TRUSTED_TYPES"):
        check_model_folder(model, "dev.churn version 4")


def test_an_unverified_folder_is_never_loaded(model):
    with pytest.raises(ModelIntegrityError, match="was not verified"):
        load_verified_model(model)
