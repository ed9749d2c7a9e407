"""Run the training entrypoint as a job on the environment's compute service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.compute import Compute, JobDescription
    from mlops_core.settings import Settings

# How long past the job's own max runtime the deferred task waits (the job service stops the job
# at its max runtime; this covers its upload and the last polls).
DEFERRAL_MARGIN = timedelta(minutes=10)


def job_name_inputs(settings: Settings, training_set: Any) -> dict[str, Any]:
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
    """Submit the training job for a training set to the compute service and wait for it, deferred.

    The service comes from ``backends.compute`` of the environment's settings (``local``: a
    detached process on this machine). The job name is deterministic per DAG run and per what the
    model depends on (algorithm, hyperparameters, training set, contract, compute backend), so a
    retry re-attaches instead of training twice: a job in progress is waited for again, a
    completed one is reused, and after a job that failed or was stopped the next attempt runs
    under a new name (``<name>-a2``, ...; names are unique forever, as in SageMaker). A retry whose
    settings changed in between trains a new job instead of returning a model trained with the old
    ones. Never two jobs run for one run.

    With ``deferrable=True`` (the default) the task frees its worker slot while the job runs: a
    :class:`~mlops_airflow.triggers.training.TrainingJobTrigger` polls the job in the triggerer and
    writes the job's log lines to this task's log. ``deferrable=False`` polls in the worker.
    Killing the task stops the job (``on_kill`` in the worker, the trigger's ``on_kill`` while
    deferred). A job that fails raises :class:`~mlops_core.stages.train.TrainingJobFailed` with the
    job's own failure reason.

    Returns ``{"job_name", "status", "model_uri", "metrics_uri", "metrics", "seconds", "reattached"}``.

    :param training_set: manifest returned by the training-set task (templated / XComArg).
    :param job_name: deterministic job name; default derived from the DAG run. (templated)
    :param env: environment whose settings to use; default the run's ``env`` Param. (templated)
    :param algorithm: override ``training.algorithm``; empty uses the settings. (templated)
    :param compute_backend: override ``backends.compute``; empty uses the settings. (templated)
    :param deferrable: wait in the triggerer (``True``) or in the worker.
    :param poll_interval: seconds between status checks; ``None``: ``training.poll_seconds``.
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
        deferrable: bool = True,
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set
        self.job_name = job_name
        self.env = env
        self.algorithm = algorithm
        self.compute_backend = compute_backend
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self._compute: Compute | None = None
        self._running_job: str | None = None

    def _settings(self, context: Context) -> Settings:
        from mlops_airflow.runtime import settings_for
        from mlops_core.settings import with_algorithm

        backends = {"compute": self.compute_backend} if self.compute_backend else {}
        return with_algorithm(settings_for(context, self.env, backends=backends), self.algorithm)

    def _backends(self, settings: Settings) -> Backends:
        from mlops_airflow.backends import backends_for

        return backends_for(settings)

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_airflow.runtime import fail_fast, run_key
        from mlops_airflow.triggers.training import TrainingJobTrigger
        from mlops_core.stages import train as stage

        with fail_fast():
            settings = self._settings(context)
            backends = self._backends(settings)
            poll = self.poll_interval or settings.training.poll_seconds
            base = self.job_name or run_key(context, "train", spec=job_name_inputs(settings, self.training_set))
            self._compute = backends.compute
            self.log.info("Training job %s on the %s compute backend", base, settings.backends.compute)
            job, submitted = stage.find_or_submit_job(
                backends.compute,
                base,
                lambda name: stage.training_job_spec(settings, self.training_set, name, backends.store),
                poll,
            )
        self._running_job = job.name
        if not job.terminal and self.deferrable:
            self.log.info("Deferring while training job %s runs (status every %ss)", job.name, poll)
            self.defer(
                trigger=TrainingJobTrigger(
                    job_name=job.name,
                    env=settings.env,
                    compute_backend=self.compute_backend or None,
                    poll_interval=poll,
                ),
                method_name="execute_complete",
                kwargs={"reattached": not submitted},
                timeout=timedelta(seconds=settings.training.timeout_minutes * 60) + DEFERRAL_MARGIN,
            )
        if not job.terminal:
            name = job.name
            job = stage.wait_for_job(
                backends.compute, name, poll, on_log_line=lambda line: self.log.info("[%s] %s", name, line)
            )
        return self._result(backends, job, reattached=not submitted)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, reattached: bool = False
    ) -> dict[str, Any]:
        """Resume after the trigger fired: raise with the job's failure reason, or return its outputs."""
        from mlops_airflow.runtime import fail_fast
        from mlops_core.stages.train import TrainingJobFailed

        if not event:
            raise TrainingJobFailed("the training job's trigger fired no event")
        self._running_job = event.get("job_name")
        if event.get("status") != "success":
            raise TrainingJobFailed(
                f"training job {event.get('job_name')} {event.get('status')}: {event.get('message')}"
            )
        with fail_fast():
            backends = self._backends(self._settings(context))
            job = backends.compute.describe(event["job_name"])
        return self._result(backends, job, reattached)

    def _result(self, backends: Backends, job: JobDescription, reattached: bool) -> dict[str, Any]:
        from mlops_core.stages.train import job_result

        result = job_result(backends.store, job, reattached=reattached)
        self.log.info("Job %s %s in %ss; metrics %s", job.name, job.status, result["seconds"], result["metrics"])
        return result

    def on_kill(self) -> None:
        if self._compute is not None and self._running_job:
            self.log.info("Stopping training job %s", self._running_job)
            self._compute.stop(self._running_job)
