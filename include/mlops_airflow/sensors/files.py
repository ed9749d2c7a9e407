"""Wait for complete new data files in the drop zone (deferrable by default), and for their consumption.

The drop zone is a local folder or an S3 prefix (``dataset.drop_zone: s3://bucket/prefix/``); both
are watched through the same :class:`~mlops_core.drop_source.DropSource` seam.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, Context

from mlops_airflow.triggers.files import FilesConsumedTrigger, NewFilesTrigger

if TYPE_CHECKING:
    from mlops_core.drop_source import DropSource
    from mlops_core.dropzone import IgnoredReporter, ScanResult, ScanState, WatchSpec


def _drop_source(location: str, context: Context) -> DropSource:
    """The drop zone at ``location``: a local folder, or an S3 prefix on the run's ``aws.conn_id``."""
    from mlops_core.settings import is_s3_uri

    if not is_s3_uri(location):
        from mlops_core.delivered_files import DropZone

        return DropZone(location)
    from mlops_airflow.backends import drop_source_for
    from mlops_airflow.runtime import settings_for

    return drop_source_for(settings_for(context), location)


class NewFilesSensor(BaseSensorOperator):
    """Succeeds when complete files are in the drop zone; returns what it found (XCom).

    The XCom is ``{"directory", "rule", "files": [{path, name, size, mtime}], "markers": [...],
    "announced": n, "ignored": {reason: count}}``; an S3 drop zone's files also carry their
    ``etag``. Whether a file is complete follows the arrival rule (``dataset.arrival``, see
    ``mlops_core.dropzone``); every entry not taken is logged once per run with its reason.
    Whatever is not given explicitly is read at run time from the settings of the run's ``env``
    Param, and by the trigger from the settings of that environment when it (re)starts, so a
    restart with new settings watches the new drop zone.

    Rule ``stable`` compares consecutive scans: the state lives in the trigger (deferrable) or
    in this operator between pokes (``mode="poke"``). ``mode="reschedule"`` keeps nothing
    between pokes, so it is refused with ``stable`` unless ``deferrable`` (which never pokes).

    :param directory: folder or ``s3://bucket/prefix/`` to watch; ``None`` reads ``dataset.drop_zone``. (templated)
    :param patterns: file-name globs, matched case-insensitively; ``None`` reads
        ``dataset.file_patterns``. (templated)
    :param arrival_rule: ``stable``, ``marker`` or ``rename``; ``None`` reads ``dataset.arrival.rule``.
    :param min_age_seconds: ``None`` reads ``dataset.arrival.min_age_seconds``.
    :param marker: marker template (rule ``marker``); ``None`` reads ``dataset.arrival.marker``.
    :param poke_interval: seconds between scans; when not given, ``dataset.arrival.poll_seconds``.
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("directory", "patterns")
    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        directory: str | None = None,
        patterns: list[str] | None = None,
        arrival_rule: str | None = None,
        min_age_seconds: float | None = None,
        marker: str | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        self.patterns = patterns
        self.arrival_rule = arrival_rule
        self.min_age_seconds = min_age_seconds
        self.marker = marker
        self.deferrable = deferrable
        self.poke_interval_given = "poke_interval" in kwargs
        if arrival_rule == "stable":
            self._refuse_reschedule()
        self._state: ScanState = {}
        self._reporter: IgnoredReporter | None = None
        self._source: DropSource | None = None

    def _refuse_reschedule(self) -> None:
        if self.mode == "reschedule" and not self.deferrable:
            raise ValueError(
                f"{self.task_id}: arrival rule 'stable' compares two consecutive scans, and "
                "mode='reschedule' keeps nothing between pokes, so no file would ever be ready; "
                "use deferrable=True (the default) or mode='poke', or the rule 'marker' or 'rename'"
            )

    def watch_spec(self, context: Context) -> WatchSpec:
        """What this run watches: explicit (rendered) arguments over the run's ``env`` settings."""
        from mlops_core.dropzone import watch_spec

        poll = self.poke_interval if self.poke_interval_given else None
        explicit = (self.directory, self.patterns, self.arrival_rule, self.min_age_seconds, self.marker, poll)
        dataset = None
        if any(v is None or v == "" or v == [] for v in explicit):
            from mlops_airflow.runtime import settings_for

            dataset = settings_for(context).dataset
        spec = watch_spec(
            dataset,
            directory=self.directory,
            patterns=self.patterns,
            rule=self.arrival_rule,
            min_age_seconds=self.min_age_seconds,
            marker=self.marker,
            poll_seconds=poll,
        )
        if spec.arrival.rule == "stable":
            self._refuse_reschedule()
        return spec

    def _scan(self, spec: WatchSpec, context: Context, *, log_each: bool) -> ScanResult:
        from mlops_core.dropzone import IgnoredReporter

        if self._source is None or self._source.location != spec.directory:
            self._source = _drop_source(spec.directory, context)
        result = self._source.scan(spec.patterns, spec.arrival, self._state)
        self._state = result.state
        if self._reporter is None:
            self._reporter = IgnoredReporter()
        if log_each:
            if not result.exists:
                self.log.info("%s does not exist yet", spec.directory)
            for entry in self._reporter.new(result):
                self.log.info("Not taking %s: %s (%s)", entry.name, entry.reason, entry.detail)
        return result

    def poke(self, context: Context) -> bool | Any:
        from airflow.sdk import PokeReturnValue

        spec = self.watch_spec(context)
        result = self._scan(spec, context, log_each=True)
        self.log.info("%d complete file(s) in %s; %s", len(result.ready), spec.directory, result.summary())
        return PokeReturnValue(is_done=bool(result.ready), xcom_value=result.to_event(spec.arrival.rule))

    def execute(self, context: Context) -> Any:
        spec = self.watch_spec(context)
        if not self.deferrable:
            if not self.poke_interval_given:
                self.poke_interval = spec.arrival.poll_seconds
            return super().execute(context)
        # One look before deferring: under 'marker' or 'rename' files already complete are
        # returned without a round trip through the triggerer. Under 'stable' a first scan has
        # nothing to compare with, so it never returns files: the trigger decides.
        result = self._scan(spec, context, log_each=False)
        if result.ready:
            self._log_ignored(result)
            self.log.info("%d complete file(s) in %s; %s", len(result.ready), spec.directory, result.summary())
            return result.to_event(spec.arrival.rule)
        self.log.info(
            "No complete files in %s yet (rule %s; not taken so far: %s); deferring",
            spec.directory,
            spec.arrival.rule,
            result.ignored_counts(),
        )
        from mlops_core.dropzone import state_to_primitives

        self.defer(
            trigger=NewFilesTrigger(
                env=context["params"].get("env"),
                directory=str(self.directory) if self.directory else None,
                patterns=list(self.patterns) if self.patterns else None,
                rule=self.arrival_rule,
                min_age_seconds=self.min_age_seconds,
                marker=self.marker,
                poll_interval=float(self.poke_interval) if self.poke_interval_given else None,
                seen=state_to_primitives(result.state),  # this look counts as the trigger's first
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def _log_ignored(self, result: ScanResult) -> None:
        for entry in result.ignored:
            self.log.info("Not taking %s: %s (%s)", entry.name, entry.reason, entry.detail)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Return the trigger's findings, or fail with the trigger's own reason."""
        if event.get("status") != "success":
            raise RuntimeError(f"waiting for files failed: {event.get('message', event)}")
        found = {k: v for k, v in event.items() if k != "status"}
        self.log.info(
            "Trigger found %d complete file(s) in %s; not taken: %s",
            len(found["files"]),
            found.get("directory"),
            found.get("ignored", {}),
        )
        return found


class FilesConsumedSensor(BaseSensorOperator):
    """Succeeds once every file in ``files`` is consumed (archived, or tagged in an S3 drop zone).

    The watch DAG waits on this after announcing a batch, so its next run does not announce the
    same files again. An announced S3 object that was replaced meanwhile (another ETag) is not
    waited for: the new object is announced by the next run.

    :param files: file dicts or paths, usually the announcing task's XCom. (templated)
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("files",)
    ui_color = "#e8f4fa"

    def __init__(self, *, files: Any, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = files
        self.deferrable = deferrable

    def _announced(self) -> list[dict[str, Any]]:
        """``{path, etag?}`` of each announced file."""
        out: list[dict[str, Any]] = []
        for f in self.files or []:
            if isinstance(f, dict):
                out.append({"path": str(f["path"]), **({"etag": f["etag"]} if f.get("etag") else {})})
            else:
                out.append({"path": str(f)})
        return out

    def _paths(self) -> list[str]:
        return [f["path"] for f in self._announced()]

    def poke(self, context: Context) -> bool:
        import os

        announced = self._announced()
        if not announced:
            return True
        first = announced[0]["path"]
        location = first.rsplit("/", 1)[0] + "/" if first.startswith("s3://") else os.path.dirname(first)
        return not _drop_source(location, context).unconsumed(announced)

    def execute(self, context: Context) -> Any:
        if self.poke(context):
            return None
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=FilesConsumedTrigger(
                paths=self._paths(),
                poll_interval=float(self.poke_interval),
                env=context["params"].get("env"),
                etags={f["path"]: f["etag"] for f in self._announced() if "etag" in f} or None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        self.log.info("All %d announced file(s) were consumed", len(event.get("files", [])))
