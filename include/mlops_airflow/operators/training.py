"""Run the training entrypoint on the environment's compute backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context

if TYPE_CHECKING:
    from mlops_core.backends import ComputeBackend
    from mlops_core.settings import Settings


def job_spec(settings: Settings, training_set: Any) -> dict[str, Any]:
    """What a training job's output depends on; part of its name (see ``runtime.run_key``)."""
    source = training_set if isinstance(training_set, dict) else {}
    return {
        "algorithm": settings.training.algorithm,
        "hyperparameters": dict(settings.training.hyperparameters),
        "compute": settings.backends.compute,
        "training_set": source.get("digest") or source.get("key"),
        "contract": settings.load_contract().fingerprint,
    }


class TrainingJobOperator(BaseOperator):
    """Lay out an ``/opt/ml`` root for the training set and run the training job.

    The backend comes from ``backends.compute`` of the environment's settings (``local`` runs
    the entrypoint in a subprocess). The job name is deterministic per DAG run and per job spec
    (algorithm, hyperparameters, training set, compute backend), so a retry finds the finished job
    of an earlier try and re-attaches to its output instead of training again, while a retry whose
    settings changed in between trains a new job instead of returning a model trained with the old
    ones; killing the task (``on_kill``) stops the job.

    :param training_set: manifest returned by the training-set task (templated / XComArg).
    :param job_name: deterministic job name; default derived from the DAG run. (templated)
    :param env: environment whose settings to use; default the run's ``env`` Param. (templated)
    :param algorithm: override ``training.algorithm``; empty uses the settings. (templated)
    :param compute_backend: override ``backends.compute``; empty uses the settings. (templated)
    """

    template_fields: Sequence[str] = ("training_set", "job_name", "env", "algorithm", "compute_backend")
    ui_color = "#fdf0e2"

    def __init__(
        self,
        *,
        training_set: Any,
        job_name: str | None = None,
        env: str | None = None,
        algorithm: str | None = None,
        compute_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set
        self.job_name = job_name
        self.env = env
        self.algorithm = algorithm
        self.compute_backend = compute_backend
        self._compute: ComputeBackend | None = None
        self._running_job: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_airflow.runtime import fail_fast, run_key, settings_for
        from mlops_core.backends import compute_backend
        from mlops_core.settings import with_algorithm
        from mlops_core.stages import train as stage

        with fail_fast():
            backends = {"compute": self.compute_backend} if self.compute_backend else {}
            settings = with_algorithm(settings_for(context, self.env, backends=backends), self.algorithm)
            job_name = self.job_name or run_key(context, "train", spec=job_spec(settings, self.training_set))
            self._compute, self._running_job = compute_backend(settings), job_name
            self.log.info("Training job %s on the %s compute backend", job_name, settings.backends.compute)
            result = stage.run_training_job(settings, self.training_set, job_name, compute=self._compute)
        self.log.info("Job %s %s in %ss; metrics %s", job_name, result["status"], result["seconds"], result["metrics"])
        return result

    def on_kill(self) -> None:
        if self._compute is not None and self._running_job:
            self._compute.stop(self._running_job)
