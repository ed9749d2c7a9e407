"""Deferrable waits on the local drop zone: for complete new files, and for their consumption."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from mlops_core.dropzone import WatchSpec


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # Airflow's TriggerEvent.__init__ is unannotated


class NewFilesTrigger(BaseTrigger):
    """Fires once complete files are in the drop zone (the arrival rules: ``mlops_core.dropzone``).

    Runs in the triggerer, so the waiting costs no worker slot. What it watches is resolved from
    the settings of ``env`` each time the trigger starts, so a triggerer restart with new
    settings (another ``MLOPS_DROP_ZONE``, another rule) watches the new folder with the new
    rule. Only values the operator was given explicitly are serialized; ``None`` means "from
    the settings". The previous scan's file signatures (rule ``stable``) live in memory only: a
    restart costs one more poll. Each entry the watch does not take is logged once with its
    reason. The folder scan is blocking file-system I/O and runs in a thread.

    :param env: settings environment (``include/conf/<env>.yaml``); ``None``: ``$MLOPS_ENV``.
    :param directory: folder to watch (not recursive); ``None``: ``dataset.drop_zone``.
    :param patterns: file-name globs, matched case-insensitively; ``None``: ``dataset.file_patterns``.
    :param rule: ``stable``, ``marker`` or ``rename``; ``None``: ``dataset.arrival.rule``.
    :param min_age_seconds: ``None``: ``dataset.arrival.min_age_seconds``.
    :param marker: marker template; ``None``: ``dataset.arrival.marker``.
    :param poll_interval: seconds between scans; ``None``: ``dataset.arrival.poll_seconds``.
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
    ) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
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

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.dropzone import IgnoredReporter, ScanState, scan

        try:
            spec = await asyncio.to_thread(self.resolve)
        except (ValueError, OSError) as exc:  # SettingsError is a ValueError
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
        state: ScanState = {}
        reporter = IgnoredReporter()
        said_missing = False
        while True:
            try:
                result = await asyncio.to_thread(scan, spec.directory, spec.patterns, arrival, state)
            except OSError as exc:
                yield _event({"status": "error", "message": f"cannot scan {spec.directory}: {exc}"})
                return
            state = result.state
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
    """Fires once none of ``paths`` exists any more (the ingest moved them to the archive).

    With ``env``, the drop zone is read from that environment's settings each time the trigger
    starts: announced files that are no longer in the configured drop zone (the stack restarted
    with another ``MLOPS_DROP_ZONE``) are no longer waited for, so the watch moves on to the new
    folder instead of holding its only active run until the timeout.

    :param paths: absolute file paths announced earlier.
    :param poll_interval: seconds between checks.
    :param env: settings environment whose ``dataset.drop_zone`` is current; ``None``: wait for all.
    """

    def __init__(self, paths: list[str], poll_interval: float = 5.0, env: str | None = None) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
        self.paths = list(paths)
        self.poll_interval = poll_interval
        self.env = env

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"paths": self.paths, "poll_interval": self.poll_interval, "env": self.env},
        )

    def still_watched(self) -> list[str]:
        """The announced paths inside the drop zone the settings name now."""
        if self.env is None:
            return list(self.paths)
        from pathlib import Path

        from mlops_core.settings import load_settings

        zone = Path(load_settings(self.env).dataset.drop_zone).resolve()
        kept = [p for p in self.paths if Path(p).parent.resolve() == zone]
        for path in sorted(set(self.paths) - set(kept)):
            self.log.warning("%s is no longer in the configured drop zone %s: not waiting for it", path, zone)
        return kept

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import os

        paths = await asyncio.to_thread(self.still_watched)
        while True:
            left = await asyncio.to_thread(lambda: [p for p in paths if os.path.exists(p)])
            if not left:
                yield _event({"status": "success", "files": paths})
                return
            self.log.info("%d of %d announced file(s) not consumed yet", len(left), len(paths))
            await asyncio.sleep(self.poll_interval)
