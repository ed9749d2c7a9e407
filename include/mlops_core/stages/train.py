"""Stage 3: build a point-in-time-correct training set, run the training job, log to MLflow.

Names are keyed by the run (``run_key``), never by the clock: a retried task finds the training
set, the finished job and the MLflow run of its first try and re-attaches instead of starting
duplicates.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.backends import compute_backend, feature_repository, model_registry, object_store

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.backends import ComputeBackend
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


class TrainingJobFailed(RuntimeError):
    pass


class NotEnoughData(ValueError):
    pass


def training_set_prefix(run_key: str) -> str:
    return f"training_sets/{run_key}"


def build_training_set(settings: Settings, run_key: str) -> dict[str, Any]:
    """Training rows of the last ``training.window_days`` days, features joined point in time."""
    import pandas as pd

    from mlops_core.datasets import DatasetStore
    from mlops_core.evaluation import split_holdout

    contract = settings.load_contract()
    objects = object_store(settings)
    prefix = training_set_prefix(run_key)
    if objects.exists(f"{prefix}/manifest.json"):
        log.info("Training set %s already built (retry): reusing it", prefix)
        built: dict[str, Any] = json.loads(objects.get_bytes(f"{prefix}/manifest.json"))
        return built

    store = DatasetStore(objects, contract.name)
    versions = store.list_versions()
    if not versions:
        raise NotEnoughData("no dataset version has been ingested yet: drop files into the drop zone first")
    end = max(pd.Timestamp(m["event_time_max"]) for m in versions) + pd.Timedelta(microseconds=1)
    start = end - pd.Timedelta(days=settings.training.window_days)
    rows = store.read_window(start, end)
    if len(rows) < settings.training.min_rows:
        raise NotEnoughData(
            f"only {len(rows)} labelled rows in the last {settings.training.window_days} days; "
            f"training needs at least training.min_rows={settings.training.min_rows}"
        )
    entity_df = rows[["_entity", "_event_time", "_row_key", contract.target]]
    repo = feature_repository(settings, contract)
    dataset = repo.training_set(entity_df)
    train, holdout = split_holdout(dataset, settings.training.holdout_days)
    digest = hashlib.sha256("".join(sorted(dataset["_row_key"])).encode()).hexdigest()[:16]
    used = sorted(
        {
            m["version_id"]
            for m in versions
            if pd.Timestamp(m["event_time_max"]) >= start and pd.Timestamp(m["event_time_min"]) < end
        }
    )
    objects.put_bytes(f"{prefix}/train.parquet", _parquet(train))
    objects.put_bytes(f"{prefix}/holdout.parquet", _parquet(holdout))
    manifest = {
        "key": prefix,
        "uri": objects.uri(prefix),
        "digest": digest,
        "dataset": contract.name,
        "dataset_versions": used,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "holdout_start": holdout["_event_time"].min().isoformat() if len(holdout) else None,
    }
    objects.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode())  # commit point
    log.info("Training set %s: %d train / %d holdout rows from versions %s", prefix, len(train), len(holdout), used)
    return manifest


def read_training_frame(settings: Settings, training_set: dict[str, Any], part: str) -> pd.DataFrame:
    import pandas as pd

    data = object_store(settings).get_bytes(f"{training_set['key']}/{part}.parquet")
    return pd.read_parquet(io.BytesIO(data))


def run_training_job(
    settings: Settings, training_set: dict[str, Any], job_name: str, compute: ComputeBackend | None = None
) -> dict[str, Any]:
    """Lay out the ``/opt/ml`` root for ``job_name`` and run the entrypoint on the compute backend.

    ``compute`` defaults to the environment's backend; the operator passes its own instance so
    that ``on_kill`` can stop the job it started.
    """
    from mlops_core.training.entrypoint import prepare_ml_root

    ml_root = settings.home / "jobs" / job_name
    metrics_file = ml_root / "output" / "data" / "metrics.json"
    if metrics_file.is_file() and (ml_root / "model" / "model.skops").is_file():
        log.info("Job %s already completed (retry): re-attaching to its output", job_name)
        return {
            "job_name": job_name,
            "ml_root": str(ml_root),
            "status": "Completed",
            "metrics": json.loads(metrics_file.read_text()),
            "seconds": 0.0,
            "reattached": True,
        }
    contract = settings.load_contract()
    prepare_ml_root(
        ml_root,
        read_training_frame(settings, training_set, "train"),
        read_training_frame(settings, training_set, "holdout"),
        contract,
        settings.training.algorithm,
        dict(settings.training.hyperparameters),
    )
    result = (compute or compute_backend(settings)).run(job_name, ml_root, settings.training.timeout_minutes * 60)
    if result.status != "Completed":
        raise TrainingJobFailed(f"training job {job_name} {result.status.lower()}: {result.failure_reason}")
    return {
        "job_name": job_name,
        "ml_root": str(ml_root),
        "status": result.status,
        "metrics": json.loads(metrics_file.read_text()),
        "seconds": round(result.seconds, 2),
        "reattached": False,
    }


def log_candidate(
    settings: Settings, training_set: dict[str, Any], job: dict[str, Any], run_key: str
) -> dict[str, Any]:
    """Log the trained model with params, metrics and dataset lineage as one MLflow run."""
    from mlops_core.lineage import git_commit
    from mlops_core.training.model import SKOPS_TRUSTED_TYPES, load_model, prepare_features

    contract = settings.load_contract()
    objects = object_store(settings)
    model, _meta = load_model(Path(job["ml_root"]) / "model")
    train = read_training_frame(settings, training_set, "train")
    reference_key = f"{training_set['key']}/reference.parquet"
    if not objects.exists(reference_key):
        sample = train.sample(n=min(len(train), settings.monitoring.reference_rows), random_state=0)
        objects.put_bytes(reference_key, _parquet(sample))
    features = prepare_features(train, contract)
    tags = {
        "mlops.env": settings.env,
        "mlops.dataset": contract.name,
        "mlops.dataset_versions": ",".join(training_set["dataset_versions"]),
        "mlops.training_set": training_set["key"],
        "mlops.drift_reference": reference_key,
        "mlops.job_name": job["job_name"],
        "mlops.git_commit": git_commit(),
        "mlops.contract_fingerprint": contract.fingerprint,
    }
    params = {
        "algorithm": settings.training.algorithm,
        "window_days": settings.training.window_days,
        "holdout_days": settings.training.holdout_days,
        **{f"hp.{k}": v for k, v in settings.training.hyperparameters.items()},
    }
    run_id = model_registry(settings).log_training_run(
        run_name=run_key,
        model=model,
        input_example=features.head(5),
        params=params,
        metrics={k: float(v) for k, v in job["metrics"].items()},
        tags=tags,
        dataset_df=train,
        dataset_name=f"{contract.name}-training-set",
        dataset_digest=training_set["digest"],
        dataset_source=training_set["uri"],
        artifacts={"model_meta.json": Path(job["ml_root"]) / "model" / "model_meta.json"},
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
    log.info("Logged MLflow run %s for %s", run_id, run_key)
    return {
        "env": settings.env,
        "mlflow_run_id": run_id,
        "training_set": training_set["key"],
        "dataset_versions": training_set["dataset_versions"],
        "metrics": job["metrics"],
    }


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
