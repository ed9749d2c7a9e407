"""Deferrable wait on a training job of the environment's compute service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from mlops_core.compute import Compute


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # Airflow's TriggerEvent.__init__ is unannotated


class TrainingJobTrigger(BaseTrigger):
    """Fires once the training job ``job_name`` has ended: completed, failed or stopped.

    Runs in the triggerer, so the waiting costs no worker slot. The compute service is built from
    the settings of ``env`` (``backends.compute``, or ``compute_backend`` when the run overrode it)
    when the trigger starts; only those names are serialized. ``describe`` is polled in a thread
    (the local service reads a status file; SageMaker's describe is one API call), and each new line
    of the job's log is written to this task's log as it appears.

    The event: ``{"status": "success" | "failed" | "stopped" | "error", "job_name", "message"}``;
    ``message`` is the job's own failure reason when it failed or stopped.

    :param job_name: the job to wait for.
    :param env: settings environment (``include/conf/<env>.yaml``); ``None``: ``$MLOPS_ENV``.
    :param compute_backend: override of ``backends.compute``; ``None``: from the settings.
    :param poll_interval: seconds between status checks.
    """

    def __init__(
        self,
        job_name: str,
        env: str | None = None,
        compute_backend: str | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
        self.job_name = job_name
        self.env = env
        self.compute_backend = compute_backend
        self.poll_interval = poll_interval
        self._compute: Compute | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "env": self.env,
                "compute_backend": self.compute_backend,
                "poll_interval": self.poll_interval,
            },
        )

    def compute(self) -> Compute:
        """The environment's compute service, built once (blocking: reads the settings)."""
        if self._compute is None:
            from mlops_airflow.backends import compute_for
            from mlops_core.settings import load_settings, with_overrides

            settings = load_settings(self.env)
            if self.compute_backend:
                settings = with_overrides(settings, backends={"compute": self.compute_backend})
            self._compute = compute_for(settings)
        return self._compute

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.backends import BackendNotAvailable
        from mlops_core.compute import JobNotFound

        try:
            compute = await asyncio.to_thread(self.compute)
        except (ValueError, OSError, BackendNotAvailable) as exc:  # SettingsError is a ValueError
            yield _event({"status": "error", "job_name": self.job_name, "message": f"no compute service: {exc}"})
            return
        self.log.info("Waiting for training job %s (every %ss)", self.job_name, self.poll_interval)
        printed = 0
        while True:
            try:
                job = await asyncio.to_thread(compute.describe, self.job_name)
            except JobNotFound as exc:
                yield _event({"status": "error", "job_name": self.job_name, "message": str(exc)})
                return
            lines = await asyncio.to_thread(compute.log_lines, self.job_name, printed)
            printed += len(lines)
            for line in lines:
                self.log.info("[%s] %s", self.job_name, line)
            if job.terminal:
                status = {"Completed": "success", "Failed": "failed", "Stopped": "stopped"}[job.status]
                self.log.info("Training job %s %s after %.1fs", self.job_name, job.status.lower(), job.seconds)
                yield _event({"status": status, "job_name": self.job_name, "message": job.failure_reason})
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The task was marked failed or cleared while deferred: stop the job (Airflow 3.3+)."""
        compute = await asyncio.to_thread(self.compute)
        self.log.info("Stopping training job %s", self.job_name)
        await asyncio.to_thread(compute.stop, self.job_name)
