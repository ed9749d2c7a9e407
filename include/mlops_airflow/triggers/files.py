"""Deferrable wait for new files in a local drop zone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class NewFilesTrigger(BaseTrigger):
    """Fires once ready files are present in ``directory`` (see ``mlops_core.dropzone``).

    Runs in the triggerer, so the waiting costs no worker slot. The folder scan is blocking
    file-system I/O and runs in a thread. Only primitives are serialized.

    :param directory: folder to watch (not recursive).
    :param patterns: glob patterns of file names to pick up, e.g. ``["*.csv", "*.parquet"]``.
    :param poll_interval: seconds between scans.
    :param min_age_seconds: a file must be unmodified this long to count as complete.
    """

    def __init__(
        self, directory: str, patterns: list[str], poll_interval: float = 5.0, min_age_seconds: float = 2.0
    ) -> None:
        super().__init__()
        self.directory = directory
        self.patterns = list(patterns)
        self.poll_interval = poll_interval
        self.min_age_seconds = min_age_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "directory": self.directory,
                "patterns": self.patterns,
                "poll_interval": self.poll_interval,
                "min_age_seconds": self.min_age_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.dropzone import scan_drop_zone

        self.log.info("Watching %s for %s every %ss", self.directory, self.patterns, self.poll_interval)
        while True:
            try:
                files = await asyncio.to_thread(
                    scan_drop_zone, self.directory, self.patterns, min_age_seconds=self.min_age_seconds
                )
            except OSError as exc:
                yield TriggerEvent({"status": "error", "message": f"cannot scan {self.directory}: {exc}"})
                return
            if files:
                self.log.info("%d new file(s) in %s", len(files), self.directory)
                yield TriggerEvent({"status": "success", "files": [f.to_dict() for f in files]})
                return
            await asyncio.sleep(self.poll_interval)


class FilesConsumedTrigger(BaseTrigger):
    """Fires once none of ``paths`` exists any more (the ingest moved them to the archive).

    :param paths: absolute file paths announced earlier.
    :param poll_interval: seconds between checks.
    """

    def __init__(self, paths: list[str], poll_interval: float = 5.0) -> None:
        super().__init__()
        self.paths = list(paths)
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"paths": self.paths, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import os

        while True:
            left = await asyncio.to_thread(lambda: [p for p in self.paths if os.path.exists(p)])
            if not left:
                yield TriggerEvent({"status": "success", "files": self.paths})
                return
            self.log.info("%d of %d announced file(s) not consumed yet", len(left), len(self.paths))
            await asyncio.sleep(self.poll_interval)
