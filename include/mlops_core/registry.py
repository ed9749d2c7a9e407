"""MLflow tracking and model registry: runs, lineage, versions and aliases (never stages).

One :class:`ModelRegistry` wraps one tracking store (``tracking_uri``, also used as the registry
URI) and one experiment. Each environment has its own registry namespace, so model names are
``<env>.<model_name>`` (``Settings.registered_model_name``); promotion between environments copies
a version from one name to the other (:meth:`ModelRegistry.copy_to`).

Every write is idempotent, so a retried Airflow task never duplicates anything:

- a training run is keyed by its ``run_name`` (tag ``mlops.run_key``): a FINISHED run with the same
  key is returned instead of logging a second one (FAILED or killed attempts are ignored);
- a registration is keyed by the run id: one version per (model name, run);
- a copy between namespaces is keyed by the source (tag ``mlops.source = <src name>/<version>``);
- aliases are absolute (``champion`` points at a version), so setting them twice is harmless.

Aliases: ``champion`` is what the environment serves; ``previous-champion`` is what it served
before, recorded by :meth:`ModelRegistry.set_champion` so that :meth:`ModelRegistry.rollback` can
move ``champion`` back.

Model files are untrusted (``mlops_core.model_integrity``): :meth:`ModelRegistry.log_training_run`
records the SHA-256 of the logged model's files as run tag ``mlops.model_sha256``;
:meth:`ModelRegistry.register` and :meth:`ModelRegistry.copy_to` carry it to the version from the
tracking database (never from the artifact store); every load (:meth:`ModelRegistry.load_model`,
:meth:`ModelRegistry.load_run_model`) downloads the files to a local folder, verifies digest and
format, and loads that folder. A cloud serving target gets the same verified folder from
:meth:`ModelRegistry.fetch_verified_model`.

MLflow is imported inside the methods: importing this module is cheap (DAG parsing imports it).
The fluent MLflow API (needed by ``log_model`` / ``load_model``) uses a process-global tracking
URI; it is set and restored around each call (:func:`_fluent_tracking_uri`), so two registries
with different stores can live in one process without leaking into each other or into
``os.environ``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.model_integrity import MODEL_SHA256_TAG, artifact_digest, check_model_folder, fetch_verified_model

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# MLflow installs its own stderr handler when it is first imported, unless told not to. In an
# Airflow task everything written to stderr is logged at ERROR, so MLflow's informational lines
# looked like errors. Left to the host, its records keep their level. (mlflow is imported lazily,
# always after this module.) A deployment that wants MLflow's own handler sets the variable.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

__all__ = [
    "CHAMPION_ALIAS",
    "MODEL_SHA256_TAG",
    "PREVIOUS_CHAMPION_ALIAS",
    "ModelRegistry",
    "ModelVersionInfo",
    "RegistryError",
]

CHAMPION_ALIAS = "champion"
PREVIOUS_CHAMPION_ALIAS = "previous-champion"
MODEL_ARTIFACT_NAME = "model"

RUN_KEY_TAG = "mlops.run_key"  # idempotency key of a run (its run_name)
MODEL_ID_TAG = "mlops.model_id"  # MLflow 3 LoggedModel id of the run's model
SOURCE_TAG = "mlops.source"  # on a copied version: "<src name>/<src version>"
RUN_ID_TAG = "mlops.run_id"  # on every version: the training run
ROLLED_BACK_TAG = "mlops.rolled_back"  # on a version that was champion until a rollback
HOLDOUT_TAG_PREFIX = "mlops.holdout_"  # on every version: its scores on its held-out rows at registration


def holdout_tags(scores: dict[str, Any]) -> dict[str, str]:
    """Version tags for the held-out ``scores`` of a registration (numbers only)."""
    return {
        HOLDOUT_TAG_PREFIX + name: repr(float(value))
        for name, value in scores.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def holdout_scores(tags: dict[str, str]) -> dict[str, float]:
    """The held-out scores a version's tags record (``mlops.holdout_<metric>``); unreadable ones left out."""
    scores = {}
    for key, value in tags.items():
        if key.startswith(HOLDOUT_TAG_PREFIX):
            try:
                scores[key[len(HOLDOUT_TAG_PREFIX) :]] = float(value)
            except (TypeError, ValueError):
                continue
    return scores


# Packages a skops-saved sklearn model needs at serving time (pinned to what trained it).
MODEL_REQUIREMENTS = ("scikit-learn", "skops", "pandas", "numpy", "scipy")

_FLUENT_LOCK = threading.RLock()


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked (unknown run, version or model)."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """What the pipeline needs to know about one registered model version."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    experiment_id: str | None = None  # of the version's run (read with its metrics)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    @property
    def model_sha256(self) -> str | None:
        """The digest of the version's files recorded when it was logged (None for unverifiable versions)."""
        return self.tags.get(MODEL_SHA256_TAG)


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the duration of the block, then restore it.

    ``mlflow.set_tracking_uri`` changes a module global *and* ``MLFLOW_TRACKING_URI`` in
    ``os.environ`` (and unsets the variable when restoring ``None``), so both are saved and
    restored here. Serialized by a lock: the global is per process, not per thread.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _FLUENT_LOCK:
        saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        saved_tracking = getattr(tracking_utils, "_tracking_uri", None)
        saved_registry = getattr(registry_utils, "_registry_uri", None)
        try:
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            yield
        finally:
            tracking_utils._tracking_uri = saved_tracking  # what set_tracking_uri(None) would do, env restored below
            if hasattr(registry_utils, "_registry_uri"):
                registry_utils._registry_uri = saved_registry
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _quote(value: str, what: str) -> str:
    """A value for an MLflow search filter (``'...'``); quotes cannot be escaped there."""
    if "'" in value or '"' in value:
        raise ValueError(f"{what} {value!r} may not contain quotes (it is used in registry searches)")
    return f"'{value}'"


def _is_error(exc: Exception, *codes: str) -> bool:
    return getattr(exc, "error_code", None) in codes


def _artifact_location(artifact_root: Path | str, experiment: str) -> str:
    root = str(artifact_root)
    if "://" in root:
        return f"{root.rstrip('/')}/{experiment}"
    return (Path(root).expanduser().resolve() / experiment).as_uri()


class ModelRegistry:
    """MLflow tracking + model registry of one environment.

    :param tracking_uri: MLflow tracking URI (``sqlite:///...``, ``http://...``); also the registry.
    :param artifact_root: where the experiment's artifacts live (a folder, or a ``s3://``-style URI);
        the experiment is created with ``artifact_location = <artifact_root>/<experiment>``.
    :param experiment: experiment name; created on first use if missing.
    """

    def __init__(self, tracking_uri: str, artifact_root: Path | str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"ModelRegistry(tracking_uri={self.tracking_uri!r}, experiment={self.experiment!r})"

    # ----------------------------------------------------------------- clients
    @cached_property
    def client(self) -> Any:
        """An ``MlflowClient`` bound to this store (tracking and registry), no global state."""
        from mlflow import MlflowClient

        # MLflow's own logging setup holds alembic at WARNING; where MLflow leaves logging to the
        # host (MLFLOW_CONFIGURE_LOGGING=false, as in Airflow tasks) keep its migrations quiet too.
        if logging.getLogger("alembic").level == logging.NOTSET:
            logging.getLogger("alembic").setLevel(logging.WARNING)

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @cached_property
    def experiment_id(self) -> str:
        """The experiment's id; creates it (idempotently, race-safe) when missing."""
        from mlflow.entities import LifecycleStage
        from mlflow.exceptions import MlflowException

        existing = self.client.get_experiment_by_name(self.experiment)
        if existing is not None:
            if existing.lifecycle_stage == LifecycleStage.DELETED:
                self.client.restore_experiment(existing.experiment_id)
            return str(existing.experiment_id)
        try:
            return str(
                self.client.create_experiment(
                    self.experiment, artifact_location=_artifact_location(self.artifact_root, self.experiment)
                )
            )
        except MlflowException as exc:  # created concurrently by another task
            if not _is_error(exc, "RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
            again = self.client.get_experiment_by_name(self.experiment)
            if again is None:
                raise
            return str(again.experiment_id)

    # ----------------------------------------------------------------- runs
    def find_run(self, run_key: str) -> Any:
        """The FINISHED run of this experiment tagged ``mlops.run_key = run_key``, or None."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = {_quote(run_key, 'run_name')} and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0] if runs else None

    def last_run(self, run_name_prefix: str, tags: Mapping[str, str]) -> Any:
        """The newest FINISHED run of this experiment named ``run_name_prefix...`` and carrying ``tags``, or None.

        Reads only: an experiment that does not exist yet has no runs (it is not created).
        """
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        conditions = [f"attributes.run_name LIKE {_quote(run_name_prefix + '%', 'run name prefix')}"]
        conditions += [f"tags.`{k}` = {_quote(v, k)}" for k, v in tags.items()]
        conditions.append("attributes.status = 'FINISHED'")
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=" and ".join(conditions),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    def versions(self, model_name: str) -> list[ModelVersionInfo]:
        """Every registered version of ``model_name``, oldest first (none for an unknown model)."""
        return [self._info(mv) for mv in self._versions(model_name)]

    def log_training_run(
        self,
        *,
        run_name: str,
        model: Any,
        input_example: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        dataset_df: pd.DataFrame,
        dataset_name: str,
        dataset_digest: str,
        dataset_source: str,
        artifacts: dict[str, Path] | None = None,
        skops_trusted_types: list[str] | None = None,
        dataset_targets: str | None = None,
        pip_requirements: list[str] | None = None,
    ) -> str:
        """Log one training run (params, metrics, tags, dataset lineage, the model) and return its id.

        The model is an sklearn estimator saved with skops (never pickle); ``skops_trusted_types``
        lists the non-default types it references (checked at save time by MLflow: an untrusted
        type fails here, not at serving time). The signature is inferred from ``input_example``
        and the model's predictions on it. ``pip_requirements`` default to the installed versions
        of :data:`MODEL_REQUIREMENTS` (MLflow adds itself); giving them explicitly skips MLflow's
        requirement inference, which loads the model in a fresh Python subprocess (tens of
        seconds). ``artifacts`` maps the path an artifact gets in the run to a local file or
        folder (``{"evaluation/report.json": Path("/tmp/x.json")}``, ``{"plots": Path("plots/")}``).

        The SHA-256 of the logged model's files (``mlops_core.model_integrity.artifact_digest``)
        is tagged on the run as ``mlops.model_sha256`` before the run finishes, after checking that
        what MLflow wrote passes ``check_model_folder`` (so a model that could never be loaded fails
        here). The files are read back from the artifact store right after the upload.

        Idempotent by ``run_name``: when a FINISHED run with tag ``mlops.run_key=<run_name>``
        exists in the experiment, its id is returned and nothing is logged.
        """
        existing = self.find_run(run_name)
        if existing is not None:
            return str(existing.info.run_id)

        from mlops_core.training.model import import_skops_io

        import_skops_io()  # mlflow.sklearn's skops format imports it: quietly, first (see there)
        import mlflow
        import mlflow.data
        import mlflow.sklearn
        from mlflow.models import infer_signature

        dataset = _pandas_dataset(dataset_df, dataset_source, dataset_name, dataset_digest, dataset_targets)
        signature = infer_signature(input_example, model.predict(input_example))
        run_tags = {**{k: str(v) for k, v in tags.items()}, RUN_KEY_TAG: run_name}
        with (
            _fluent_tracking_uri(self.tracking_uri),
            mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=run_tags) as run,
        ):
            if params:
                mlflow.log_params(params)
            if metrics:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.log_input(dataset, context="training")
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT_NAME,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                skops_trusted_types=skops_trusted_types,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements if pip_requirements is not None else model_requirements(),
            )
            digest = self._logged_model_digest(info.model_id, f"run {run.info.run_id} ({run_name})")
            mlflow.set_tags({MODEL_ID_TAG: info.model_id, MODEL_SHA256_TAG: digest})
            for artifact_path, path in (artifacts or {}).items():
                _log_local_artifact(mlflow.log_artifact, mlflow.log_artifacts, Path(path), artifact_path)
            return str(run.info.run_id)

    def _logged_model_digest(self, model_id: str, label: str) -> str:
        """Digest of a LoggedModel's files as the artifact store holds them now; refuses a bad format."""
        import mlflow.artifacts

        location = self.client.get_logged_model(model_id).artifact_location
        with tempfile.TemporaryDirectory(prefix="mlops-digest-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp))
            check_model_folder(local, label)
            return artifact_digest(local)

    def log_artifact_run(
        self,
        run_name: str,
        artifacts: dict[str, Path | str],
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Log a run that only holds artifacts and metrics (a drift report); idempotent by run_name."""
        existing = self.find_run(run_name)
        if existing is not None:
            return str(existing.info.run_id)

        import time

        from mlflow.entities import Metric, RunStatus

        client = self.client
        run_tags = {**{k: str(v) for k, v in (tags or {}).items()}, RUN_KEY_TAG: run_name}
        run = client.create_run(self.experiment_id, run_name=run_name, tags=run_tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            if metrics:
                client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            for folder, path in artifacts.items():
                _log_local_artifact(
                    lambda p, artifact_path: client.log_artifact(run_id, p, artifact_path=artifact_path),
                    lambda p, artifact_path: client.log_artifacts(run_id, p, artifact_path=artifact_path),
                    Path(path),
                    folder,
                )
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return str(run_id)

    # ----------------------------------------------------------------- registration
    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if not _is_error(exc, "RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise

    def _versions(self, name: str, extra_filter: str = "") -> list[Any]:
        query = f"name = {_quote(name, 'model name')}" + (f" and {extra_filter}" if extra_filter else "")
        versions = list(self.client.search_model_versions(query))
        return sorted(versions, key=lambda mv: int(mv.version))

    def _run_model_id(self, run_id: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise RegistryError(f"run {run_id} not found in {self.tracking_uri}: {exc}") from exc
        model_id = run.data.tags.get(MODEL_ID_TAG)
        if model_id:
            return str(model_id)
        # A run logged by other code: find its LoggedModel named "model".
        models = [
            m
            for m in self.client.search_logged_models(experiment_ids=[run.info.experiment_id])
            if m.source_run_id == run_id and m.name == MODEL_ARTIFACT_NAME
        ]
        if not models:
            raise RegistryError(f"run {run_id} has no logged model named {MODEL_ARTIFACT_NAME!r}; nothing to register")
        return str(max(models, key=lambda m: m.creation_timestamp).model_id)

    def register(self, run_id: str, model_name: str, tags: dict[str, str] | None = None) -> str:
        """Register the run's model (``runs:/<run_id>/model``) under ``model_name``; return the version.

        Idempotent: when ``model_name`` already has a version from this run, that version is
        returned (and ``tags`` are set on it again). ``mlops.run_id`` is always tagged, and so is
        ``mlops.model_sha256``, copied from the run's tag in the tracking database; a run without
        one (not logged by :meth:`log_training_run`) is refused with :class:`RegistryError`.
        """
        digest = self.run_tags(run_id).get(MODEL_SHA256_TAG)
        if not digest:
            raise RegistryError(
                f"run {run_id} has no {MODEL_SHA256_TAG} tag: its model was not logged by "
                "ModelRegistry.log_training_run, so nothing vouches for its files and it could never be "
                "loaded or deployed. Retrain it with the train DAG and register that run."
            )
        self._ensure_registered_model(model_name)
        existing = self._versions(model_name, f"run_id = {_quote(run_id, 'run id')}")
        all_tags = {**{k: str(v) for k, v in (tags or {}).items()}, RUN_ID_TAG: run_id, MODEL_SHA256_TAG: digest}
        if existing:
            version = existing[0].version
        else:
            model_id = self._run_model_id(run_id)
            # The source is the LoggedModel's artifact location rather than ``models:/<model_id>``:
            # MLflow's SQL registry resolves a ``models:/<id>`` source through the *global*
            # tracking URI, not this client's. The fluent context covers any other such lookup.
            location = self.client.get_logged_model(model_id).artifact_location
            with _fluent_tracking_uri(self.tracking_uri):
                mv = self.client.create_model_version(
                    name=model_name, source=location, run_id=run_id, tags=all_tags, model_id=model_id
                )
            version = mv.version
        self.set_version_tags(model_name, version, all_tags)
        return str(version)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one model version (values become strings)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def copy_to(self, src_name: str, version: str, dst_name: str, tags: dict[str, str] | None = None) -> str:
        """Copy ``src_name`` version ``version`` to ``dst_name`` (promotion between environments).

        The copy keeps the run id and the source's tags; it is tagged ``mlops.source =
        <src_name>/<version>`` plus ``tags``, and ``mlops.model_sha256`` is the source's (a source
        without one is refused: it could never be deployed). Idempotent: if ``dst_name`` already
        has a version copied from that source, it is returned.
        """
        from mlflow.exceptions import MlflowException

        source = f"{src_name}/{version}"
        try:
            src = self.client.get_model_version(src_name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"cannot copy {source}: no such model version ({exc.message})") from exc
        digest = dict(src.tags or {}).get(MODEL_SHA256_TAG)
        if not digest:
            raise RegistryError(
                f"cannot copy {source}: it has no {MODEL_SHA256_TAG} tag, so nothing vouches for its files; "
                "re-register it from a trusted training run (train DAG, then evaluate_register) and promote that"
            )
        self._ensure_registered_model(dst_name)
        existing = [mv for mv in self._versions(dst_name) if mv.tags.get(SOURCE_TAG) == source]
        if existing:
            new_version = existing[0].version
        else:
            with warnings.catch_warnings(), _fluent_tracking_uri(self.tracking_uri):
                warnings.simplefilter("ignore")
                new_version = self.client.copy_model_version(f"models:/{src_name}/{version}", dst_name).version
        all_tags = {**{k: str(v) for k, v in (tags or {}).items()}, SOURCE_TAG: source, MODEL_SHA256_TAG: digest}
        self.set_version_tags(dst_name, new_version, all_tags)
        return str(new_version)

    # ----------------------------------------------------------------- aliases
    def _by_alias(self, name: str, alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if _is_error(exc, "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def champion(self, model_name: str) -> ModelVersionInfo | None:
        """The version behind alias ``champion``, or None when there is none (or no such model)."""
        mv = self._by_alias(model_name, CHAMPION_ALIAS)
        return None if mv is None else self._info(mv)

    def previous_champion(self, model_name: str) -> ModelVersionInfo | None:
        mv = self._by_alias(model_name, PREVIOUS_CHAMPION_ALIAS)
        return None if mv is None else self._info(mv)

    def set_champion(self, model_name: str, version: str, previous: str | None = None) -> None:
        """Point ``champion`` at ``version``; record the champion it replaces as ``previous-champion``.

        ``previous`` defaults to the current champion. Setting the current champion again changes
        nothing (``previous-champion`` keeps pointing at the one before).
        """
        from mlflow.exceptions import MlflowException

        version = str(version)
        try:
            self.client.get_model_version(model_name, version)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot make {model_name}/{version} champion: no such model version ({exc.message})"
            ) from exc
        if previous is None:
            current = self._by_alias(model_name, CHAMPION_ALIAS)
            previous = None if current is None else current.version
        if previous is not None and str(previous) != version:
            self.client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION_ALIAS, str(previous))
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)

    def rollback(self, model_name: str) -> str | None:
        """Move ``champion`` back to ``previous-champion``; return that version (None: nothing to roll back to).

        The version that was champion is tagged ``mlops.rolled_back=true``. Idempotent: a second
        call leaves ``champion`` on the previous champion.
        """
        previous = self._by_alias(model_name, PREVIOUS_CHAMPION_ALIAS)
        if previous is None:
            return None
        current = self._by_alias(model_name, CHAMPION_ALIAS)
        if current is not None and current.version != previous.version:
            self.client.set_model_version_tag(model_name, current.version, ROLLED_BACK_TAG, "true")
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, previous.version)
        return str(previous.version)

    # ----------------------------------------------------------------- reading
    def _info(self, mv: Any, with_metrics: bool = False) -> ModelVersionInfo:
        metrics: dict[str, float] = {}
        experiment_id = None
        if with_metrics and mv.run_id:
            from mlflow.exceptions import MlflowException

            try:
                run = self.client.get_run(mv.run_id)
                metrics, experiment_id = dict(run.data.metrics), str(run.info.experiment_id)
            except MlflowException:
                metrics = {}
        return ModelVersionInfo(
            name=str(mv.name),
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=str(mv.source),
            tags=dict(mv.tags or {}),
            aliases=list(mv.aliases or []),
            metrics=metrics,
            experiment_id=experiment_id,
        )

    def version_info(self, model_name: str, version: str) -> ModelVersionInfo:
        """Tags, run id, source, aliases and the metrics of the version's run."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(model_name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"model version {model_name}/{version} not found: {exc.message}") from exc
        return self._info(mv, with_metrics=True)

    def latest_version(self, model_name: str) -> str | None:
        versions = self._versions(model_name)
        return str(versions[-1].version) if versions else None

    @staticmethod
    def model_uri(model_name: str, version_or_alias: str) -> str:
        """``models:/<name>/<version>`` for a version number, ``models:/<name>@<alias>`` for an alias."""
        ref = str(version_or_alias)
        return f"models:/{model_name}/{ref}" if ref.isdigit() else f"models:/{model_name}@{ref}"

    # ----------------------------------------------------------------- verified loading
    def _model_version(self, model_name: str, version_or_alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        ref = str(version_or_alias)
        if not ref.isdigit():
            mv = self._by_alias(model_name, ref)
            if mv is None:
                raise RegistryError(f"{model_name} has no version with alias {ref!r}")
            return mv
        try:
            return self.client.get_model_version(model_name, ref)
        except MlflowException as exc:
            raise RegistryError(f"model version {model_name}/{ref} not found: {exc.message}") from exc

    def model_sha256(self, model_name: str, version_or_alias: str) -> str | None:
        """The digest recorded on a version (tag ``mlops.model_sha256``), or None when it has none."""
        return dict(self._model_version(model_name, version_or_alias).tags or {}).get(MODEL_SHA256_TAG)

    def fetch_verified_model(self, model_name: str, version_or_alias: str, dest: Path | str) -> Path:
        """Download a registered version (``"3"``) or alias (``"champion"``) into ``dest`` and verify it.

        The expected digest is the version's ``mlops.model_sha256`` tag in the tracking database.
        Returns the verified folder (load it with ``model_integrity.load_verified_model`` or serve
        it); raises ``ModelIntegrityError`` naming the version, both digests and what to do when
        the files were changed or the format is refused.
        """
        return self._fetch_version(self._model_version(model_name, version_or_alias), dest)

    def _fetch_version(self, mv: Any, dest: Path | str) -> Path:
        download_uri = self.client.get_model_version_download_uri(mv.name, str(mv.version))
        return fetch_verified_model(
            str(download_uri),
            dict(mv.tags or {}).get(MODEL_SHA256_TAG),
            dest,
            tracking_uri=self.tracking_uri,
            label=f"{mv.name} version {mv.version}",
        )

    def fetch_verified_run_model(self, run_id: str, dest: Path | str) -> Path:
        """Download the model a training run logged into ``dest`` and verify it against the run's digest tag."""
        expected = self.run_tags(run_id).get(MODEL_SHA256_TAG)
        model_id = self._run_model_id(run_id)
        location = self.client.get_logged_model(model_id).artifact_location
        return fetch_verified_model(
            str(location), expected, dest, tracking_uri=self.tracking_uri, label=f"the model of run {run_id}"
        )

    def verify_model(self, model_name: str, version_or_alias: str) -> str:
        """Check a version's files against its recorded digest and format; return the digest.

        Raises ``ModelIntegrityError`` like :meth:`fetch_verified_model`; nothing is kept.
        """
        mv = self._model_version(model_name, version_or_alias)
        with tempfile.TemporaryDirectory(prefix="mlops-verify-") as tmp:
            self._fetch_version(mv, Path(tmp) / "model")
        return str(mv.tags[MODEL_SHA256_TAG])

    def load_model(self, model_name: str, version_or_alias: str) -> Any:
        """Load a registered version (``"3"``) or alias (``"champion"``) as an MLflow pyfunc model.

        Verified first (:meth:`fetch_verified_model`); the pickle formats are never loaded.
        """
        from mlops_core.model_integrity import load_verified_model

        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            return load_verified_model(self.fetch_verified_model(model_name, version_or_alias, Path(tmp) / "model"))

    def load_run_model(self, run_id: str) -> Any:
        """Load the model a training run logged (before or without registration) as a pyfunc model, verified."""
        from mlops_core.model_integrity import load_verified_model

        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            return load_verified_model(self.fetch_verified_run_model(run_id, Path(tmp) / "model"))

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of a run (raises ``RegistryError`` for an unknown run id)."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.tags)
        except MlflowException as exc:
            raise RegistryError(f"MLflow run {run_id!r} not found in {self.tracking_uri}: {exc}") from exc


def model_requirements(packages: tuple[str, ...] = MODEL_REQUIREMENTS) -> list[str]:
    """``name==version`` of each installed package in ``packages`` (missing ones are skipped)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pinned


def _pandas_dataset(df: pd.DataFrame, source: str, name: str, digest: str, targets: str | None) -> Any:
    """``mlflow.data.from_pandas`` with our own digest; sources MLflow cannot resolve are kept as tags."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():
        # "can be interpreted in multiple ways": harmless for local paths.
        warnings.simplefilter("ignore")
        try:
            return from_pandas(df, source=source, name=name, digest=digest, targets=targets)
        except MlflowException:
            from mlflow.data.code_dataset_source import CodeDatasetSource

            kept = CodeDatasetSource(tags={"mlops.dataset_source": source})
            return from_pandas(df, source=kept, name=name, digest=digest, targets=targets)


def _log_local_artifact(
    log_file: Callable[..., Any], log_dir: Callable[..., Any], path: Path, artifact_path: str
) -> None:
    """Log ``path`` so that it is ``artifact_path`` in the run (a file is renamed when needed)."""
    import shutil
    import tempfile
    from pathlib import PurePosixPath

    target = PurePosixPath(artifact_path)
    if target.is_absolute() or ".." in target.parts or not target.name:
        raise ValueError(f"artifact path {artifact_path!r} must be relative and stay inside the run")
    if path.is_dir():
        log_dir(str(path), artifact_path=str(target))
    elif path.is_file():
        folder = None if str(target.parent) == "." else str(target.parent)
        if path.name == target.name:
            log_file(str(path), artifact_path=folder)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                renamed = Path(tmp) / target.name
                shutil.copyfile(path, renamed)
                log_file(str(renamed), artifact_path=folder)
    else:
        raise FileNotFoundError(f"artifact {artifact_path!r}: {path} does not exist")
