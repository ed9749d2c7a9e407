"""Where committed dataset versions are announced to query engines: the ``backends.catalog`` concern.

A catalog makes a committed version queryable where it lies (``aws``: the Glue Data Catalog, so
Athena reads it; :class:`~mlops_core.glue_catalog.GlueCatalog`). ``none`` announces nothing.

The ingest stage calls :meth:`DatasetCatalog.register_version` after the version's manifest is
written (the commit point), before it records its sources or archives a file: a catalog that
fails then fails the task with the version committed, and the retry reads the same files, finds
the version committed (a no-op) and registers it again. So registering must be idempotent, and
it never writes to the store: a catalog failure can neither lose nor duplicate a version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DatasetCatalog(Protocol):
    """Makes committed versions queryable; every call idempotent."""

    def register_version(self, manifest: Mapping[str, Any], versions_uri: str) -> list[list[str]]:
        """Register the version of ``manifest`` (its files under ``versions_uri``, the dataset's
        ``versions/`` folder); returns the partitions added (``[version_id, event_date]``), empty when
        all existed."""
        ...


class NoCatalog:
    """``backends.catalog: none``: versions are read through the object store only."""

    def register_version(self, manifest: Mapping[str, Any], versions_uri: str) -> list[list[str]]:
        return []

    def __repr__(self) -> str:
        return "NoCatalog()"
