"""A user's own dataset runs through the lifecycle unchanged: nothing is specific to the demo.

A regression contract with no entity key and no event time (the pipeline derives a row key and
uses the ingestion time), Parquet files, and no settings file edited (the model name, Feast
project, experiment and regression metrics follow from the contract): ingest -> features ->
train -> evaluate -> register.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

CONTRACT = {
    "name": "house_prices",
    "task": "regression",
    "target": "price",
    "unknown_columns": "drop",
    "columns": [
        {"name": "rooms", "type": "int", "min": 1, "max": 12},
        {"name": "area_m2", "type": "float", "min": 10, "max": 1000},
        {"name": "district", "type": "category", "allowed": ["centre", "suburb", "rural"]},
        {"name": "garden", "type": "bool"},
        {"name": "price", "type": "float", "min": 0},
    ],
}


def _houses(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    district = rng.choice(["centre", "suburb", "rural"], n)
    area = rng.uniform(30, 250, n).round(1)
    rooms = np.clip((area / 30).astype(int) + rng.integers(0, 2, n), 1, 12)
    garden = rng.random(n) < 0.4
    base = {"centre": 6000.0, "suburb": 3500.0, "rural": 2000.0}
    price = np.array([base[d] for d in district]) * area + 15000 * garden + rng.normal(0, 20000, n)
    return pd.DataFrame(
        {
            "rooms": rooms,
            "area_m2": area,
            "district": district,
            "garden": garden,
            "price": price.clip(0).round(0),
            "listing_note": "extra column, dropped",
        }
    )


@pytest.fixture
def own_dataset(mlops_home, tmp_path, monkeypatch):
    contract = tmp_path / "house_prices.yaml"
    contract.write_text(yaml.safe_dump(CONTRACT))
    drop = tmp_path / "incoming"
    drop.mkdir()
    monkeypatch.setenv("MLOPS_CONTRACT", str(contract))
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(drop))
    for i in range(2):
        _houses(i, 400).to_parquet(drop / f"listings_{i}.parquet", index=False)
    return drop


def test_regression_contract_without_keys_runs_through(own_dataset):
    from mlops_core.backends import backends_for, model_registry
    from mlops_core.dropzone import scan_drop_zone
    from mlops_core.settings import load_settings
    from mlops_core.stages import evaluate, features, train
    from mlops_core.stages.ingest import ingest_files

    settings = load_settings("dev")  # no settings edited: names and the gate follow from the contract
    assert (settings.features.project, settings.registry.experiment) == ("house_prices_dev", "mlops-house_prices")
    files = [f.path for f in scan_drop_zone(own_dataset, settings.dataset.file_patterns, min_age_seconds=0)]
    backends = backends_for(settings)  # built once, as a task does
    report = ingest_files(settings, files, backends, run_id="r1", ingested_at="2026-03-01T00:00:00+00:00")
    assert report["dataset"] == "house_prices" and report["rows"] == 800

    feat = features.materialize_versions(settings, [report["version_id"]], backends)
    assert feat["offline_rows"] == 800

    ts = train.build_training_set(settings, "ts-houses", backends)
    assert ts["train_rows"] + ts["holdout_rows"] == 800 and ts["holdout_rows"] > 0
    job = train.run_training_job(settings, ts, "job-houses", backends)
    assert {"test_rmse", "test_mae", "test_r2"} <= set(job["metrics"])
    assert job["metrics"]["test_r2"] > 0.5  # the price really depends on the features

    candidate = train.log_candidate(settings, ts, job, "train-houses", backends)
    ev = evaluate.evaluate_candidate(settings, candidate, backends)
    assert ev["promote"] is True and ev["model_name"] == "dev.house_prices", ev["reasons"]
    evaluate.promote_to_champion(settings, ev, backends)
    champion = model_registry(settings).champion("dev.house_prices")
    assert champion.tags["mlops.dataset_versions"] == report["version_id"]


def test_the_readme_walkthrough_dataset_runs_with_only_a_contract_and_two_variables(mlops_home, tmp_path, monkeypatch):
    """README "Bring your own dataset": scikit-learn's diabetes data, a CSV written by pandas with
    its index, the shipped example contract, MLOPS_CONTRACT and MLOPS_DROP_ZONE; nothing else."""
    from sklearn.datasets import load_diabetes

    from mlops_core.backends import backends_for, model_registry
    from mlops_core.dropzone import scan_drop_zone
    from mlops_core.settings import REPO_ROOT, load_settings
    from mlops_core.stages import evaluate, features, train
    from mlops_core.stages.ingest import ingest_files

    drop = tmp_path / "incoming"
    drop.mkdir()
    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    frame.to_csv(drop / "visits.csv")  # with the index, as README's one-liner writes it
    monkeypatch.setenv("MLOPS_CONTRACT", str(REPO_ROOT / "include" / "contracts" / "examples" / "diabetes.yaml"))
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(drop))

    settings = load_settings("dev")
    assert settings.registered_model_name == "dev.diabetes" and settings.evaluation.primary_metric == "rmse"
    files = [f.path for f in scan_drop_zone(drop, settings.dataset.file_patterns, min_age_seconds=0)]
    backends = backends_for(settings)  # built once, as a task does
    report = ingest_files(settings, files, backends, run_id="r1", ingested_at="2026-03-01T00:00:00+00:00")
    assert report["rows"] == len(frame) and report["rejected_rows"] == 0  # the unnamed index column was dropped

    features.materialize_versions(settings, [report["version_id"]], backends)
    ts = train.build_training_set(settings, "ts-diabetes", backends)
    job = train.run_training_job(settings, ts, "job-diabetes", backends)
    candidate = train.log_candidate(settings, ts, job, "train-diabetes", backends)
    ev = evaluate.evaluate_candidate(settings, candidate, backends)
    assert ev["promote"] is True, ev["reasons"]  # r2 above 0: better than predicting the mean
    evaluate.promote_to_champion(settings, ev, backends)
    assert model_registry(settings).champion("dev.diabetes") is not None
