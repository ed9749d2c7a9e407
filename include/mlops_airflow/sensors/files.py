"""Wait for new data files in the drop zone (deferrable by default)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context

from mlops_airflow.triggers.files import FilesConsumedTrigger, NewFilesTrigger


class NewFilesSensor(BaseSensorOperator):
    """Succeeds when ready files are in the drop zone; returns them (XCom) as a list of dicts.

    :param directory: folder to watch; ``None`` reads ``dataset.drop_zone`` of the environment's
        settings at run time. (templated)
    :param patterns: file-name globs; ``None`` reads ``dataset.file_patterns``. (templated)
    :param min_age_seconds: a file must be unmodified this long to count as complete.
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("directory", "patterns")
    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        directory: str | None = None,
        patterns: list[str] | None = None,
        min_age_seconds: float = 2.0,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        self.patterns = patterns
        self.min_age_seconds = min_age_seconds
        self.deferrable = deferrable

    def _target(self) -> tuple[str, list[str]]:
        if self.directory and self.patterns:
            return str(self.directory), list(self.patterns)
        from mlops_core.settings import load_settings

        settings = load_settings()
        return (
            str(self.directory or settings.dataset.drop_zone),
            list(self.patterns or settings.dataset.file_patterns),
        )

    def poke(self, context: Context) -> bool | Any:
        from airflow.sdk import PokeReturnValue

        from mlops_core.dropzone import scan_drop_zone

        directory, patterns = self._target()
        files = scan_drop_zone(directory, patterns, min_age_seconds=self.min_age_seconds)
        self.log.info("%d ready file(s) in %s", len(files), directory)
        return PokeReturnValue(is_done=bool(files), xcom_value=[f.to_dict() for f in files])

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from mlops_core.dropzone import scan_drop_zone

        directory, patterns = self._target()
        files = scan_drop_zone(directory, patterns, min_age_seconds=self.min_age_seconds)
        if files:  # nothing to wait for: skip the round trip through the triggerer
            self.log.info("%d ready file(s) in %s", len(files), directory)
            return [f.to_dict() for f in files]
        self.log.info("No ready files in %s yet; deferring", directory)
        self.defer(
            trigger=NewFilesTrigger(
                directory=directory,
                patterns=patterns,
                poll_interval=float(self.poke_interval),
                min_age_seconds=self.min_age_seconds,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict]:
        if event.get("status") != "success":
            raise RuntimeError(f"waiting for files failed: {event.get('message', event)}")
        self.log.info("Trigger found %d file(s)", len(event["files"]))
        return event["files"]


class FilesConsumedSensor(BaseSensorOperator):
    """Succeeds once every file in ``files`` has left the drop zone (consumed and archived).

    The watch DAG waits on this after announcing a batch, so its next run does not announce the
    same files again.

    :param files: file dicts or paths, usually the announcing task's XCom. (templated)
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("files",)
    ui_color = "#e8f4fa"

    def __init__(self, *, files: Any, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = files
        self.deferrable = deferrable

    def _paths(self) -> list[str]:
        return [f["path"] if isinstance(f, dict) else str(f) for f in (self.files or [])]

    def poke(self, context: Context) -> bool:
        import os

        return not any(os.path.exists(p) for p in self._paths())

    def execute(self, context: Context) -> Any:
        if self.poke(context):
            return None
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=FilesConsumedTrigger(paths=self._paths(), poll_interval=float(self.poke_interval)),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        self.log.info("All %d announced file(s) were consumed", len(event.get("files", [])))
