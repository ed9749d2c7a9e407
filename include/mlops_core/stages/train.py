"""Stage 3: build a point-in-time-correct training set, run the training job, log to MLflow.

Names are keyed by the run (``run_key``), never by the clock: a retried task finds the training
set, the job and the MLflow run of its first try and re-attaches instead of starting duplicates.
The job runs on the environment's compute service (:class:`mlops_core.compute.Compute`): its
attempts are named ``<job name>``, ``<job name>-a2``, ... so that a job that failed or was stopped
is followed by a new attempt under a new name (names are unique forever, as in SageMaker) and a
retry finds the attempt that runs or finished instead of starting a second one. The model and
metrics are read back from object storage (the job's ``model_uri`` / ``metrics_uri``), so logging
works whatever machine trained.

Every function takes the backends built once by the task (:class:`mlops_core.backends.Backends`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.compute import JobNameInUse, JobNotFound, JobSpec, download_outputs, read_metrics

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.backends import Backends
    from mlops_core.compute import Compute, JobDescription
    from mlops_core.drift_profile import ReferenceProfile
    from mlops_core.settings import Settings
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

ENTRYPOINT = ("python", "-m", "mlops_core.training.entrypoint")
JOB_OUTPUT_PREFIX = "training_jobs"
MAX_ATTEMPTS = 20
DEFAULT_POLL_SECONDS = 5.0


class TrainingJobFailed(RuntimeError):
    pass


class NotEnoughData(ValueError):
    pass


# A training set is laid out as SageMaker channels, one folder per split (the holdout is ``test``):
#   training_sets/<run key>/{train,validation,test}/part-0.parquet and manifest.json (the commit point).
CHANNELS = ("train", "validation", "test")
CHANNEL_FILE = "part-0.parquet"
DRIFT_PROFILE_FILE = "drift_profile.json"  # next to reference.parquet; tagged mlops.drift_profile
_PART_CHANNEL = {"holdout": "test"}  # what evaluate/deploy ask for -> its channel


def training_set_prefix(run_key: str) -> str:
    return f"training_sets/{run_key}"


def channel_key(training_set_key: str, channel: str) -> str:
    return f"{training_set_key}/{channel}/{CHANNEL_FILE}"


def build_training_set(settings: Settings, run_key: str, backends: Backends) -> dict[str, Any]:
    """Training rows of the last ``training.window_days`` days, features joined point in time, written
    as the channels ``train/``, ``validation/`` (the ``training.validation_days`` days before the
    holdout; empty by default) and ``test/`` (the last ``training.holdout_days`` days)."""
    import pandas as pd

    from mlops_core.datasets import DatasetStore
    from mlops_core.evaluation import split_holdout

    contract = settings.load_contract()
    objects = backends.store
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
    repo = backends.feature_repository(contract)
    dataset = repo.training_set(entity_df)
    train, holdout = split_holdout(dataset, settings.training.holdout_days)
    validation = train.iloc[:0]
    if settings.training.validation_days and len(train) > 1:
        train, validation = split_holdout(train, settings.training.validation_days)
    digest = hashlib.sha256("".join(sorted(dataset["_row_key"])).encode()).hexdigest()[:16]
    used = sorted(
        {
            m["version_id"]
            for m in versions
            if pd.Timestamp(m["event_time_max"]) >= start and pd.Timestamp(m["event_time_min"]) < end
        }
    )
    splits = {"train": train, "validation": validation, "test": holdout}
    for channel in CHANNELS:  # every channel is written, empty or not, so the layout is always complete
        objects.put_bytes(channel_key(prefix, channel), _parquet(splits[channel]))
    # The contract the set was built with, as the job's contract channel (no hyperparameter size limit).
    from mlops_core.training.entrypoint import CONTRACT_CHANNEL, CONTRACT_FILE, contract_json

    objects.put_bytes(f"{prefix}/{CONTRACT_CHANNEL}/{CONTRACT_FILE}", contract_json(contract).encode())
    manifest = {
        "key": prefix,
        "uri": objects.uri(prefix),
        "digest": digest,
        "dataset": contract.name,
        "dataset_versions": used,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "channels": {channel: f"{prefix}/{channel}/" for channel in CHANNELS},
        "contract": f"{prefix}/{CONTRACT_CHANNEL}/{CONTRACT_FILE}",
        "train_rows": len(train),
        "validation_rows": len(validation),
        "holdout_rows": len(holdout),
        "holdout_start": holdout["_event_time"].min().isoformat() if len(holdout) else None,
    }
    objects.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode())  # commit point
    log.info(
        "Training set %s: %d train / %d validation / %d test rows from versions %s",
        prefix,
        len(train),
        len(validation),
        len(holdout),
        used,
    )
    return manifest


def carry_held_out_rows(source: ObjectStore, target: ObjectStore, training_set_key: str) -> str | None:
    """Copy a training set's held-out rows (its ``test`` channel) from ``source`` to ``target``.

    Promotion does this when environments keep separate stores (an S3 prefix or bucket per
    environment): the target's deploy smoke-tests the promoted model on the rows it was evaluated
    on, which were written to the source environment's store. Reads are checksum-verified; a
    target that has them already (the same store, or a retry) is left as it is. Returns the key
    copied, or None.
    """
    key = channel_key(training_set_key, "test")
    if source.uri(key) == target.uri(key) or target.exists(key):
        return None
    if not source.exists(key):
        legacy = f"{training_set_key}/holdout.parquet"  # a training set from before the channel layout
        if not source.exists(legacy) or target.exists(legacy):
            return None
        key = legacy
    target.put_bytes(key, source.get_bytes(key))
    log.info("Copied the held-out rows %s from %s to %s", key, source.uri(), target.uri())
    return key


def carry_drift_reference(source: ObjectStore, target: ObjectStore, tags: dict[str, str]) -> list[str]:
    """Copy a version's drift reference (its ``mlops.drift_reference`` sample and ``mlops.drift_profile``)
    from ``source`` to ``target`` as :func:`carry_held_out_rows` does, so that the target's monitor
    finds them. Returns the keys copied."""
    copied = []
    for tag in ("mlops.drift_reference", "mlops.drift_profile"):
        key = tags.get(tag)
        if not key or source.uri(key) == target.uri(key) or target.exists(key) or not source.exists(key):
            continue
        target.put_bytes(key, source.get_bytes(key))
        copied.append(key)
    if copied:
        log.info("Copied the drift reference %s from %s to %s", copied, source.uri(), target.uri())
    return copied


def read_training_frame(store: ObjectStore, training_set: dict[str, Any], part: str) -> pd.DataFrame:
    """One split of a training set: ``train``, ``validation`` or ``test`` (``holdout`` is ``test``).

    Training sets built before the channel layout (``<key>/train.parquet``, ``<key>/holdout.parquet``)
    are still read, so evaluate and deploy keep working on models trained earlier.
    """
    import pandas as pd

    from mlops_core.storage import ObjectNotFound

    key = training_set["key"]
    try:
        data = store.get_bytes(channel_key(key, _PART_CHANNEL.get(part, part)))
    except ObjectNotFound:
        old = {"test": "holdout"}.get(part, part)
        if not store.exists(f"{key}/{old}.parquet"):
            raise
        data = store.get_bytes(f"{key}/{old}.parquet")
    return pd.read_parquet(io.BytesIO(data))


# ----------------------------------------------------------------------------- the job
def training_job_spec(settings: Settings, training_set: dict[str, Any], name: str, store: ObjectStore) -> JobSpec:
    """The job that trains on ``training_set``: one channel per non-empty split (``train``,
    ``validation``, ``test``: the holdout), each the prefix of its folder, the settings' algorithm
    and hyperparameters, ``training.timeout_minutes``.

    The contract goes as the ``contract`` channel when the training set holds it (any size; SageMaker
    limits a hyperparameter to 2,500 characters), else as a hyperparameter (older training sets).
    Unknown algorithms or hyperparameters fail here, before any job is submitted.
    """
    from mlops_core.training.entrypoint import CONTRACT_CHANNEL, job_hyperparameters

    contract = settings.load_contract()
    key = training_set["key"]
    if "channels" in training_set:
        rows = {
            "train": None,
            "validation": training_set.get("validation_rows"),
            "test": training_set.get("holdout_rows"),
        }
        inputs = {
            channel: store.uri(f"{key}/{channel}").rstrip("/") + "/" for channel in CHANNELS if rows[channel] != 0
        }
    else:  # a training set built before the channel layout
        inputs = {"train": store.uri(f"{key}/train.parquet")}
        if training_set.get("holdout_rows") != 0:
            inputs["test"] = store.uri(f"{key}/holdout.parquet")
    contract_key = training_set.get("contract")
    if contract_key:
        inputs[CONTRACT_CHANNEL] = store.uri(str(contract_key).rsplit("/", 1)[0]).rstrip("/") + "/"
    return JobSpec(
        name=name,
        entrypoint=ENTRYPOINT,
        inputs=inputs,
        output_uri=store.uri(JOB_OUTPUT_PREFIX),
        hyperparameters=job_hyperparameters(
            contract,
            settings.training.algorithm,
            dict(settings.training.hyperparameters),
            contract_as_channel=bool(contract_key),
        ),
        max_runtime_seconds=settings.training.timeout_minutes * 60,
    )


def attempt_name(base: str, attempt: int) -> str:
    """``base`` for the first attempt, ``base-a<N>`` after (cut to SageMaker's 63 characters)."""
    if attempt == 1:
        return base
    suffix = f"-a{attempt}"
    return base[: 63 - len(suffix)].rstrip("-") + suffix


def find_or_submit_job(
    compute: Compute, base_name: str, spec_for: Callable[[str], JobSpec], poll_seconds: float = DEFAULT_POLL_SECONDS
) -> tuple[JobDescription, bool]:
    """The run's training job: ``(description, submitted)``.

    Walks the attempts ``base_name``, ``base_name-a2``, ...: the first attempt that is in progress
    or completed is the run's job (re-attached, not submitted); one that failed or was stopped is
    passed over; the first name never used gets a new job (``spec_for(name)``). One that is being
    stopped is waited for first, so two jobs never run for one run. The job service itself is the
    record of the attempts: nothing else needs to survive between tries.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        name = attempt_name(base_name, attempt)
        try:
            job = compute.describe(name)
        except JobNotFound:
            try:
                job = compute.submit(spec_for(name))
            except JobNameInUse:  # submitted in between by someone else: that is the run's job
                job = compute.describe(name)
            else:
                log.info("Submitted training job %s (attempt %d)", name, attempt)
                return job, True
        if job.status == "Stopping":
            log.info("Training job %s is stopping; waiting for it before a new attempt", name)
            job = wait_for_job(compute, name, poll_seconds)
        if job.status in ("InProgress", "Completed"):
            log.info("Training job %s is %s: re-attaching to it", name, job.status)
            return job, False
        log.info(
            "Training job %s %s (%s); the next attempt gets a new name", name, job.status.lower(), job.failure_reason
        )
    raise TrainingJobFailed(
        f"training job {base_name}: {MAX_ATTEMPTS} attempts ended without success; the last "
        f"({attempt_name(base_name, MAX_ATTEMPTS)}): {job.status.lower()}: {job.failure_reason}"
    )


def wait_for_job(
    compute: Compute,
    name: str,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    on_log_line: Callable[[str], None] | None = None,
) -> JobDescription:
    """Poll ``describe`` until the job ends; each new line of its log goes to ``on_log_line``."""
    printed = 0
    emit = on_log_line or (lambda line: log.info("[%s] %s", name, line))
    while True:
        job = compute.describe(name)
        lines = compute.log_lines(name, printed)
        printed += len(lines)
        for line in lines:
            emit(line)
        if job.terminal:
            return job
        time.sleep(poll_seconds)


def raise_unless_completed(job: JobDescription) -> None:
    """:class:`TrainingJobFailed` with the job's own failure reason unless it completed."""
    if job.status != "Completed":
        raise TrainingJobFailed(f"training job {job.name} {job.status.lower()}: {job.failure_reason}")


def job_result(store: ObjectStore, job: JobDescription, reattached: bool) -> dict[str, Any]:
    """What the training task returns for a completed job (its metrics read from ``metrics_uri``)."""
    raise_unless_completed(job)
    if not job.model_uri or not job.metrics_uri:
        raise TrainingJobFailed(f"training job {job.name} completed but names no model or metrics location")
    return {
        "job_name": job.name,
        "status": job.status,
        "model_uri": job.model_uri,
        "metrics_uri": job.metrics_uri,
        "metrics": read_job_metrics(store, job.metrics_uri),
        "seconds": round(job.seconds, 2),
        "reattached": reattached,
    }


def read_job_metrics(store: ObjectStore, metrics_uri: str) -> dict[str, Any]:
    return read_metrics(store, metrics_uri)


def run_training_job(
    settings: Settings,
    training_set: dict[str, Any],
    job_name: str,
    backends: Backends,
    poll_seconds: float | None = None,
) -> dict[str, Any]:
    """Submit the training job (or re-attach to the run's job) and wait for it here.

    The Airflow operator does the same without holding a worker while the job runs (it defers);
    this blocking form serves the stage tests and benchmarks.
    """
    poll = poll_seconds if poll_seconds is not None else settings.training.poll_seconds
    job, submitted = find_or_submit_job(
        backends.compute,
        job_name,
        lambda name: training_job_spec(settings, training_set, name, backends.store),
        poll,
    )
    if not job.terminal:
        job = wait_for_job(backends.compute, job.name, poll)
    return job_result(backends.store, job, reattached=not submitted)


def log_candidate(
    settings: Settings, training_set: dict[str, Any], job: dict[str, Any], run_key: str, backends: Backends
) -> dict[str, Any]:
    """Log the trained model with params, metrics and dataset lineage as one MLflow run.

    The model and the metrics are read from the job's ``model_uri`` / ``metrics_uri`` through the
    object store, whichever compute service trained it.
    """
    from mlops_core.lineage import git_commit
    from mlops_core.training.model import SKOPS_TRUSTED_TYPES, load_model, prepare_features

    contract = settings.load_contract()
    objects = backends.store
    metrics = read_job_metrics(objects, job["metrics_uri"])
    train = read_training_frame(objects, training_set, "train")
    reference_key = f"{training_set['key']}/reference.parquet"
    sample = train.sample(n=min(len(train), settings.monitoring.reference_rows), random_state=0)
    if not objects.exists(reference_key):
        objects.put_bytes(reference_key, _parquet(sample))
    profile_key = f"{training_set['key']}/{DRIFT_PROFILE_FILE}"
    features = prepare_features(train, contract)
    tags = {
        "mlops.env": settings.env,
        "mlops.dataset": contract.name,
        "mlops.dataset_versions": ",".join(training_set["dataset_versions"]),
        "mlops.training_set": training_set["key"],
        "mlops.drift_reference": reference_key,
        "mlops.drift_profile": profile_key,
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
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        model_dir = Path(tmp) / "model"
        if not download_outputs(objects, job["model_uri"], model_dir):
            raise TrainingJobFailed(f"training job {job['job_name']}: no model objects under {job['model_uri']}")
        model, _meta = load_model(model_dir)
        profile_path = Path(tmp) / DRIFT_PROFILE_FILE
        profile_path.write_bytes(_drift_profile(settings, train, sample, model).to_json())
        if not objects.exists(profile_key):
            objects.put_file(profile_key, profile_path)
        run_id = backends.registry.log_training_run(
            run_name=run_key,
            model=model,
            input_example=features.head(5),
            params=params,
            metrics={k: float(v) for k, v in metrics.items()},
            tags=tags,
            dataset_df=train,
            dataset_name=f"{contract.name}-training-set",
            dataset_digest=training_set["digest"],
            dataset_source=training_set["uri"],
            artifacts={"model_meta.json": model_dir / "model_meta.json", DRIFT_PROFILE_FILE: profile_path},
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
    log.info("Logged MLflow run %s for %s", run_id, run_key)
    return {
        "env": settings.env,
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": backends.registry.experiment_id,  # the run's link (mlops_core.ui_links)
        "training_set": training_set["key"],
        "dataset_versions": training_set["dataset_versions"],
        "metrics": metrics,
    }


def _drift_profile(settings: Settings, train: pd.DataFrame, sample: pd.DataFrame, model: Any) -> ReferenceProfile:
    """The reference profile of the training rows, and of the model's scores on the reference sample."""
    from mlops_core.drift_profile import contract_profile
    from mlops_core.evaluation import prediction_scores

    contract = settings.load_contract()
    try:
        scores = prediction_scores(model, sample, contract)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # the features' profile is still worth having
        log.warning("no prediction profile: the model could not score the reference sample (%s)", exc)
        scores = None
    return contract_profile(train, contract, settings.monitoring, predictions=scores)


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
