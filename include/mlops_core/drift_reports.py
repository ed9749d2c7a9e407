"""Where the monitor keeps its drift reports, and how one is named from outside without a path.

The monitor writes each run's HTML report to the environment's object store under
``reports/drift/<run key>.html`` (:func:`report_key`). Outside the store a report is named by its
*report id*, ``<env>/<run key>``: the Airflow UI serves it at ``mlops/reports/<report id>``. An id is
parsed back (:func:`key_for_id`) only when the environment is a known one and the run key is a
plain name (letters, digits, ``-`` and ``_``, as :func:`mlops_airflow.runtime.run_key` makes them:
``monitor-20260105T000000-0123456789``), so a request can never name anything but a report: no
``..``, no slash, no dot, no absolute path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_core.environments import ENVIRONMENTS

if TYPE_CHECKING:
    from mlops_core.storage import ObjectStore

REPORT_PREFIX = "reports/drift/"
#: A run key: a plain file name without dots (``mlops_airflow.runtime.run_key``: prefix, date, digests).
RUN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,150}")


class UnknownReport(ValueError):
    """A report id that does not name a report: an unknown environment, or not a run key."""


def report_key(run_key: str) -> str:
    """The store key of the drift report of the monitor run ``run_key``."""
    if not RUN_KEY.fullmatch(run_key):
        raise UnknownReport(
            f"{run_key!r} is not a run key (letters, digits, - and _; e.g. monitor-20260105T000000-0123456789)"
        )
    return f"{REPORT_PREFIX}{run_key}.html"


def report_id(env: str, key: str) -> str:
    """The id of the report stored at ``key`` in ``env``'s store: ``<env>/<run key>``."""
    run_key = key.removeprefix(REPORT_PREFIX).removesuffix(".html")
    if env not in ENVIRONMENTS or report_key(run_key) != key:
        raise UnknownReport(f"{env}/{key} is not a drift report's location")
    return f"{env}/{run_key}"


def key_for_id(env: str, run_key: str) -> str:
    """The store key named by the report id ``<env>/<run_key>``; raises :class:`UnknownReport`."""
    if env not in ENVIRONMENTS:
        raise UnknownReport(f"unknown environment {env!r}; expected one of {', '.join(ENVIRONMENTS)}")
    return report_key(run_key)


def read_report(store: ObjectStore, key: str) -> bytes:
    """The report's bytes; raises ``ObjectNotFound`` when it is missing.

    On a local store a report that is a symlink (or sits under one) pointing out of the store is
    refused like a missing one: the store's folder is the only thing a report id can reach.
    """
    from mlops_core.storage import LocalObjectStore, ObjectNotFound

    if isinstance(store, LocalObjectStore):
        path = store.path(key)
        try:
            inside = Path(path).resolve(strict=True).is_relative_to(store.root)
        except OSError:
            inside = False
        if not inside or path.is_symlink():
            raise ObjectNotFound(f"no report {key!r} in {store.uri()}")
    return store.get_bytes(key)
