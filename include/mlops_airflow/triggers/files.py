"""Waits on the drop zone (a local folder or an S3 prefix): for complete new files, and for their use.

``NewFilesTrigger`` and ``FilesConsumedTrigger`` serve the deferrable sensors of the
``watch_drop_zone`` DAG (``dataset.arrival.via: sensor``); ``DropZoneWatcher`` is the AssetWatcher
trigger of a local drop zone (``via: watcher``): it never ends, and each set of complete new files
becomes a ``landed_files`` asset event that schedules ``ingest`` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from mlops_core.drop_source import DropSource
    from mlops_core.dropzone import WatchSpec
    from mlops_core.settings import Settings


def _source_at(location: str, settings: Settings | None) -> DropSource:
    """The drop zone at ``location``: a local folder, or an S3 prefix on ``settings``' ``aws.conn_id`` (blocking)."""
    from mlops_core.settings import is_s3_uri

    if not is_s3_uri(location):
        from mlops_core.delivered_files import DropZone

        return DropZone(location)
    from mlops_airflow.backends import drop_source_for

    if settings is None:
        raise ValueError(f"an S3 drop zone ({location}) needs the settings of an environment (aws.conn_id)")
    return drop_source_for(settings, location)


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # Airflow's TriggerEvent.__init__ is unannotated


class NewFilesTrigger(BaseTrigger):
    """Fires once complete files are in the drop zone (the arrival rules: ``mlops_core.dropzone``).

    Runs in the triggerer, so the waiting costs no worker slot. The drop zone is a local folder or
    an S3 prefix (:class:`~mlops_core.drop_source.DropSource`; an S3 one is reached through the
    ``aws.conn_id`` connection of ``env``'s settings). What it watches is resolved from the
    settings of ``env`` each time the trigger starts, so a triggerer restart with new settings
    (another ``MLOPS_DROP_ZONE``, another rule) watches the new drop zone with the new rule.
    Only values the operator was given explicitly are serialized; ``None`` means "from the
    settings". Each entry the watch does not take is logged once with its reason. The scan is
    blocking I/O (the file system, or boto3) and runs in a thread.

    ``seen`` carries the file signatures of earlier scans (rule ``stable``: size, mtime, inode
    or ETag, and since when unchanged; for S3 with ``mark_consumed: tag`` also which objects are
    consumed) as primitives: the sensor's own first look is handed over this way, and
    :meth:`serialize` returns the signatures of the latest scan, so a trigger rebuilt from its
    serialized kwargs goes on where it was instead of starting the comparison over. Whether an
    entry was already announced is never kept here: an announced entry is consumed (moved or
    tagged) before the watch runs again, so no restart can announce it twice.

    :param env: settings environment (``include/conf/<env>.yaml``); ``None``: ``$MLOPS_ENV``.
    :param directory: folder to watch (not recursive); ``None``: ``dataset.drop_zone``.
    :param patterns: file-name globs, matched case-insensitively; ``None``: ``dataset.file_patterns``.
    :param rule: ``stable``, ``marker`` or ``rename``; ``None``: ``dataset.arrival.rule``.
    :param min_age_seconds: ``None``: ``dataset.arrival.min_age_seconds``.
    :param marker: marker template; ``None``: ``dataset.arrival.marker``.
    :param poll_interval: seconds between scans; ``None``: ``dataset.arrival.poll_seconds``.
    :param seen: signatures from earlier scans (``mlops_core.dropzone.state_to_primitives``).
    """

    def __init__(
        self,
        env: str | None = None,
        directory: str | None = None,
        patterns: list[str] | None = None,
        rule: str | None = None,
        min_age_seconds: float | None = None,
        marker: str | None = None,
        poll_interval: float | None = None,
        seen: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
        self.seen = dict(seen) if seen else None
        self.env = env
        self.directory = directory
        self.patterns = list(patterns) if patterns is not None else None
        self.rule = rule
        self.min_age_seconds = min_age_seconds
        self.marker = marker
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "env": self.env,
                "directory": self.directory,
                "patterns": self.patterns,
                "rule": self.rule,
                "min_age_seconds": self.min_age_seconds,
                "marker": self.marker,
                "poll_interval": self.poll_interval,
                "seen": self.seen,
            },
        )

    def resolve(self) -> WatchSpec:
        """What to watch: the explicit values, the settings of ``env`` for the rest (blocking I/O)."""
        from mlops_core.dropzone import watch_spec

        explicit = (self.directory, self.patterns, self.rule, self.min_age_seconds, self.marker, self.poll_interval)
        dataset = None
        if any(v is None for v in explicit):
            from mlops_core.settings import load_settings

            dataset = load_settings(self.env).dataset
        return watch_spec(
            dataset,
            directory=self.directory,
            patterns=self.patterns,
            rule=self.rule,
            min_age_seconds=self.min_age_seconds,
            marker=self.marker,
            poll_seconds=self.poll_interval,
        )

    def drop_source(self, spec: WatchSpec) -> DropSource:
        """The drop zone of ``spec`` (an S3 one on the connection of ``env``'s settings; blocking)."""
        from mlops_core.settings import is_s3_uri, load_settings

        return _source_at(spec.directory, load_settings(self.env) if is_s3_uri(spec.directory) else None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.dropzone import IgnoredReporter, ScanState, state_from_primitives, state_to_primitives

        try:
            spec = await asyncio.to_thread(self.resolve)
            source = await asyncio.to_thread(self.drop_source, spec)
        except Exception as exc:  # SettingsError is a ValueError; a missing provider or connection, too
            yield _event({"status": "error", "message": f"cannot tell what to watch (env {self.env}): {exc}"})
            return
        arrival = spec.arrival
        self.log.info(
            "Watching %s for %s, rule %s (min age %ss, marker %s), every %ss",
            spec.directory,
            list(spec.patterns),
            arrival.rule,
            arrival.min_age_seconds,
            arrival.marker,
            arrival.poll_seconds,
        )
        state: ScanState = state_from_primitives(self.seen)
        reporter = IgnoredReporter()
        said_missing = False
        while True:
            try:
                result = await asyncio.to_thread(source.scan, spec.patterns, arrival, state)
            except Exception as exc:  # OSError locally; a botocore error (denied, no such bucket) on S3
                yield _event({"status": "error", "message": f"cannot scan {spec.directory}: {exc}"})
                return
            state = result.state
            self.seen = state_to_primitives(state)
            if not result.exists and not said_missing:
                self.log.info("%s does not exist yet; waiting for it to be created", spec.directory)
                said_missing = True
            for entry in reporter.new(result):
                self.log.info("Not taking %s: %s (%s)", entry.name, entry.reason, entry.detail)
            if result.ready:
                self.log.info("%d complete file(s) in %s; %s", len(result.ready), spec.directory, result.summary())
                yield _event({"status": "success", **result.to_event(arrival.rule)})
                return
            await asyncio.sleep(arrival.poll_seconds)


class FilesConsumedTrigger(BaseTrigger):
    """Fires once none of ``paths`` waits for ingest any more (moved to the archive, or tagged consumed).

    With ``env``, the drop zone is read from that environment's settings each time the trigger
    starts: announced files that are no longer in the configured drop zone (the stack restarted
    with another ``MLOPS_DROP_ZONE``) are no longer waited for, so the watch moves on to the new
    drop zone instead of holding its only active run until the timeout. S3 paths (``s3://``)
    need ``env`` (the connection is in its settings); an announced object whose ETag changed
    (``etags``) was replaced, and is not waited for (the next watch run announces the new one).

    :param paths: absolute file paths or ``s3://`` URIs announced earlier.
    :param poll_interval: seconds between checks.
    :param env: settings environment whose ``dataset.drop_zone`` is current; ``None``: wait for all.
    :param etags: the ETag each announced S3 object was listed with (by path).
    """

    def __init__(
        self, paths: list[str], poll_interval: float = 5.0, env: str | None = None, etags: dict[str, str] | None = None
    ) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
        self.paths = list(paths)
        self.poll_interval = poll_interval
        self.env = env
        self.etags = dict(etags) if etags else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"paths": self.paths, "poll_interval": self.poll_interval, "env": self.env, "etags": self.etags},
        )

    def still_watched(self) -> tuple[list[str], DropSource | None]:
        """The announced paths inside the drop zone the settings name now, and that drop zone."""
        from mlops_core.settings import is_s3_uri, load_settings

        s3 = any(is_s3_uri(p) for p in self.paths)
        if self.env is None and not s3:
            return list(self.paths), None
        settings = load_settings(self.env)
        location = settings.dataset.drop_zone
        if is_s3_uri(location):
            kept = [p for p in self.paths if p.startswith(str(location)) and "/" not in p[len(str(location)) :]]
        else:
            from pathlib import Path

            zone = Path(location).resolve()
            kept = [p for p in self.paths if not is_s3_uri(p) and Path(p).parent.resolve() == zone]
        for path in sorted(set(self.paths) - set(kept)):
            self.log.warning("%s is no longer in the configured drop zone %s: not waiting for it", path, location)
        return kept, _source_at(str(location), settings) if is_s3_uri(location) else None

    def _left(self, paths: list[str], source: DropSource | None) -> list[str]:
        import os

        if source is None:
            return [p for p in paths if os.path.exists(p)]
        etags = self.etags or {}
        return source.unconsumed([{"path": p, **({"etag": etags[p]} if p in etags else {})} for p in paths])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            paths, source = await asyncio.to_thread(self.still_watched)
        except Exception as exc:  # unreadable settings, a missing connection
            yield _event({"status": "error", "message": f"cannot tell what to wait for (env {self.env}): {exc}"})
            return
        while True:
            left = await asyncio.to_thread(self._left, paths, source)
            if not left:
                yield _event({"status": "success", "files": paths})
                return
            self.log.info("%d of %d announced file(s) not consumed yet", len(left), len(paths))
            await asyncio.sleep(self.poll_interval)


ANNOUNCED_STATE_KEY = "announced"  # the watcher's key in the asset state store of landed_files


def _signature(file: dict[str, Any]) -> str:
    """What identifies one delivery of a file: the same path written again is a new delivery."""
    return f"{file.get('size')}:{file.get('mtime')}:{file.get('etag') or ''}"


def _still_there(announced: dict[str, str]) -> set[str]:
    import os

    return {path for path in announced if os.path.lexists(path)}


class DropZoneWatcher(BaseEventTrigger):
    """AssetWatcher trigger of a local drop zone: an event for every set of complete new files.

    Runs in the triggerer for as long as the ``ingest`` DAG is active (no DAG run, no worker slot
    while it waits). Each scan applies the arrival rule of ``env``'s settings (``stable``,
    ``marker`` or ``rename``, as the sensor does); complete files that were not announced yet go
    out in one event whose payload has the shape of the sensor's ``landed_files`` extra
    (``directory``, ``rule``, ``files``, ``markers``, ``announced``, ``ignored``).

    What was announced is remembered by path and signature (size, mtime, ETag) and forgotten once
    the file has left the drop zone (ingest archived it), so a file delivered again under the same
    name is announced again. The memory is kept in Airflow's asset state store (the metadata
    database) when the triggerer provides one, so a triggerer restart does not announce the same
    files twice; it is saved after the event is handed over, so a crash in between repeats an
    announcement rather than losing one (ingest recognises a file it already took by its checksum,
    and adds nothing). Without a store (a trigger run outside the triggerer) it lives in memory.

    It watches only while ``env``'s settings say ``dataset.arrival.via: watcher``: a watcher left
    over from another configuration stays silent until Airflow removes it.

    :param env: settings environment (``include/conf/<env>.yaml``); ``None``: ``$MLOPS_ENV``.
    :param poll_interval: seconds between scans; ``None``: ``dataset.arrival.poll_seconds``.
    """

    def __init__(self, env: str | None = None, poll_interval: float | None = None) -> None:
        super().__init__()
        self.env = env
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"env": self.env, "poll_interval": self.poll_interval},
        )

    def _resolve(self) -> tuple[WatchSpec, DropSource, bool]:
        from mlops_core.dropzone import watch_spec
        from mlops_core.settings import load_settings

        settings = load_settings(self.env)
        spec = watch_spec(settings.dataset, poll_seconds=self.poll_interval)
        return spec, _source_at(str(spec.directory), settings), settings.dataset.arrival.via == "watcher"

    async def _load_announced(self) -> dict[str, str]:
        store = self.asset_state_store
        if store is None:
            return {}
        try:
            saved = await store.aget(ANNOUNCED_STATE_KEY, default={})
        except Exception as exc:
            self.log.warning("cannot read what was announced before (%s); starting from an empty memory", exc)
            return {}
        if not isinstance(saved, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in saved.items()):
            self.log.warning("the announced-files memory in the asset state store is malformed; starting afresh")
            return {}
        return {str(k): str(v) for k, v in saved.items()}

    async def _save_announced(self, announced: dict[str, str]) -> None:
        store = self.asset_state_store
        if store is None:
            return
        try:
            await store.aset(ANNOUNCED_STATE_KEY, dict(announced))
        except Exception as exc:
            self.log.warning("cannot save what was announced (%s); a restart may announce these again", exc)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.dropzone import IgnoredReporter, ScanState

        spec, source, wanted = await asyncio.to_thread(self._resolve)  # bad settings: the triggerer logs it
        arrival = spec.arrival
        if not wanted:
            # A watcher left over from another configuration (the triggerer restarted with settings that
            # say via: sensor, and the dag-processor has not dropped it yet): the sensor DAG watches now,
            # so this one stays silent until Airflow removes it, rather than announce the files twice.
            self.log.warning("arrival.via of env %s is not 'watcher': not watching %s", self.env, spec.directory)
            while True:
                await asyncio.sleep(3600)
        self.log.info(
            "Watching %s for %s (rule %s, every %ss) for the landed_files asset",
            spec.directory,
            list(spec.patterns),
            arrival.rule,
            arrival.poll_seconds,
        )
        announced = await self._load_announced()
        state: ScanState | None = None
        reporter = IgnoredReporter()
        while True:
            try:
                result = await asyncio.to_thread(source.scan, spec.patterns, arrival, state)
            except OSError as exc:  # the folder unreadable for a while: say so, keep watching
                self.log.warning("cannot scan %s: %s; trying again in %ss", spec.directory, exc, arrival.poll_seconds)
                await asyncio.sleep(arrival.poll_seconds)
                continue
            state = result.state
            for entry in reporter.new(result):
                self.log.info("Not taking %s: %s (%s)", entry.name, entry.reason, entry.detail)
            event = result.to_event(arrival.rule)
            ready = {f["path"]: _signature(f) for f in event["files"]}
            # Forgotten once gone (consumed); kept while present, ready or not (a restart's first scan sees none ready)
            present = await asyncio.to_thread(_still_there, announced)
            kept = {path: sig for path, sig in announced.items() if path in present}
            new_files = [f for f in event["files"] if kept.get(f["path"]) != ready[f["path"]]]
            if new_files:
                names = sorted(f["name"] for f in new_files)
                self.log.info("%d new complete file(s) in %s: %s", len(new_files), spec.directory, names)
                yield _event({"status": "success", **event, "files": new_files, "announced": len(new_files)})
                kept.update({f["path"]: ready[f["path"]] for f in new_files})
            if kept != announced:
                announced = kept
                await self._save_announced(announced)
            await asyncio.sleep(arrival.poll_seconds)
