"""Stage 2: materialize features of new dataset versions into the feature store (Feast).

Incremental: only the versions named in the triggering asset events are read and written, so
the cost follows the new data, not the history. Re-materializing a version rewrites the same
offline files (one per event date of its rows) and the same online rows (no duplicates).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


def materialize_versions(settings: Settings, version_ids: list[str], backends: Backends) -> dict[str, Any]:
    """Materialize ``version_ids`` (read from ``backends.store``) into the bundle's feature repository."""
    from mlops_core.datasets import DatasetStore

    start = time.monotonic()
    contract = settings.load_contract()
    store = DatasetStore(backends.store, contract.name)
    repo = backends.feature_repository(contract)
    repo.apply()
    known = {m["version_id"]: m for m in store.list_versions()}
    missing = [v for v in version_ids if v not in known]
    if missing:
        raise ValueError(f"dataset version(s) {missing} not found (committed versions: {sorted(known)})")
    # Oldest first, so the online store ends with the newest value of each entity.
    ordered = sorted(dict.fromkeys(version_ids), key=lambda v: (known[v]["created_at"], v))
    results = []
    for vid in ordered:
        rows = store.read_version(vid)
        res = repo.materialize_version(vid, rows)
        log.info(
            "Materialized version %s: %s offline rows, %s online entities",
            vid,
            res["offline_rows"],
            res["online_entities"],
        )
        results.append(res)
    return {
        "dataset": contract.name,
        "version_ids": ordered,
        "offline_rows": int(sum(r["offline_rows"] for r in results)),
        "online_entities": int(sum(r["online_entities"] for r in results)),
        "seconds": round(time.monotonic() - start, 2),
    }
