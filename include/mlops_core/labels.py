"""Delayed labels: outcomes that land after the predictions, joined back to what was served.

**The label drop.** Label files are delivered to ``<monitoring.labels_prefix>/<dataset>/`` of the
environment's object store (a folder locally, a prefix of the bucket on S3), any name, in the
formats ingest reads (``.csv``, ``.csv.gz``, ``.parquet``). A label file holds three columns named
by the dataset contract: the **entity key**, the **event time** (when the outcome was observed,
the *label time*) and the **target**; other columns are ignored. Label files are untrusted input
and go through the same validation as delivered data (:func:`mlops_core.validation.validate_file`
with a contract of those three columns): a file that cannot be read is counted under its reason
(``files_rejected``), a bad row under its reasons (``rows_rejected``, e.g.
``churned:not_allowed``, ``event_time:wrong_type``); nothing in a label file can stop the
monitor. Across files, the same ``(entity, label time)`` with the same label counts once
(``duplicate_label``); with different labels none is used (``conflicting_labels``).

**The join** (:func:`join_labels`): a label joins the *latest* prediction for its entity captured
at or before its label time, and at most ``monitoring.label_join_days`` before it. A label joins
nothing when its entity was never scored (``unknown_entity``), when every prediction for the
entity came after it (``before_any_prediction``: it cannot be that prediction's outcome), or when
the latest earlier prediction is too old (``prediction_too_old``). A prediction answered by
several labels keeps the earliest (``prediction_already_labelled`` for the others). Predictions
that never get a label are counted (``coverage``), never guessed.

**Cost follows the window, not the history.** A label is written after its outcome was observed,
so a file last written before the window starts holds no label of the window: such files are
listed but not read (``files_skipped_old``), with :data:`WRITE_TIME_SLACK` of tolerance for the
clocks of whoever delivers them. The monitor reads the files of its window only, however many
months of label files the drop keeps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlops_core.contract import DatasetContract
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

LABEL_TIME = "label_time"
LABEL = "label"
ENTITY = "entity"
# A label file written more than this before the window starts is not read (see the module doc).
WRITE_TIME_SLACK = timedelta(days=1)


def labels_prefix(prefix: str, dataset: str) -> str:
    """``<prefix>/<dataset>/``: where the label files of ``dataset`` are dropped in the store."""
    if not dataset or "/" in dataset or dataset in (".", ".."):
        raise ValueError(f"a dataset name is a plain name, got {dataset!r}")
    return f"{prefix.strip('/')}/{dataset}/"


def label_contract(contract: DatasetContract) -> DatasetContract:
    """The contract a label file is validated with: entity key, event time and target, other columns dropped."""
    if not contract.entity_key or not contract.event_time:
        raise ValueError(
            f"contract {contract.name!r} has no entity_key or no event_time: delayed labels are joined to "
            "predictions by both, so they cannot be used with it"
        )
    columns = tuple(contract.column(c) for c in (contract.entity_key, contract.event_time, contract.target))
    return dataclasses.replace(contract, name=f"{contract.name}_labels", columns=columns, unknown_columns="drop")


@dataclass
class LabelRead:
    """The labels of a window, and everything that was not used, counted by reason."""

    labels: pd.DataFrame  # entity (str), label_time (UTC), label
    files_read: int = 0
    files_skipped_old: int = 0  # last written before the window could start: not read
    files_rejected: dict[str, str] = field(default_factory=dict)  # key -> reason code
    rows_rejected: dict[str, int] = field(default_factory=dict)  # reason code -> rows
    not_yet_due: int = 0  # label time at or after the window's end
    before_window: int = 0
    duplicates: int = 0  # the same (entity, label time, label) again
    conflicting: int = 0  # rows dropped because the same (entity, label time) had different labels

    def summary(self) -> dict[str, Any]:
        return {
            "labels": len(self.labels),
            "files_read": self.files_read,
            "files_skipped_old": self.files_skipped_old,
            "files_rejected": dict(sorted(self.files_rejected.items())),
            "rows_rejected": dict(sorted(self.rows_rejected.items())),
            "not_yet_due": self.not_yet_due,
            "before_window": self.before_window,
            "duplicate_label": self.duplicates,
            "conflicting_labels": self.conflicting,
        }


def _empty_labels() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {ENTITY: pd.Series(dtype=object), LABEL_TIME: pd.Series(dtype="datetime64[ns, UTC]"), LABEL: []}
    )


def read_labels(
    store: ObjectStore,
    contract: DatasetContract,
    prefix: str,
    start: datetime,
    end: datetime,
    *,
    max_file_bytes: int,
) -> LabelRead:
    """The valid labels under ``prefix`` of ``store`` whose label time is in ``[start, end)``.

    Never raises on what a file holds (see the module doc); a store that cannot be listed or read
    raises as the store does (a transient failure is the run's to retry).
    """
    import pandas as pd

    from mlops_core.delivered_files import FileRejected
    from mlops_core.validation import file_format, validate_file

    checked = label_contract(contract)
    result = LabelRead(labels=_empty_labels())
    rejected_rows: Counter[str] = Counter()
    frames = []
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    start_ts = start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    end_ts = end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts.tz_convert("UTC")
    written_since = start_ts.to_pydatetime() - WRITE_TIME_SLACK
    for info in store.list_objects(prefix):
        key = info.key
        name = key.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):  # hidden temp files and markers of a writer
            continue
        if info.modified is not None and info.modified < written_since:
            result.files_skipped_old += 1
            continue
        if file_format(name) is None:
            result.files_rejected[key] = "unsupported_format"
            continue
        if info.size > max_file_bytes:
            result.files_rejected[key] = "too_large"
            continue
        data = store.get_bytes(key)  # a store failure is the run's (retried), not the file's
        try:
            checked_rows = validate_file(data, key, checked, end_ts, max_decoded_bytes=max_file_bytes)
        except FileRejected as exc:
            log.warning("label file %s rejected: %s", key, exc.message)
            result.files_rejected[key] = exc.reason
            continue
        except Exception as exc:  # untrusted bytes must never stop the monitor
            log.warning("label file %s could not be read: %s", key, str(exc)[:300])
            result.files_rejected[key] = "unreadable"
            continue
        result.files_read += 1
        rejected_rows.update(checked_rows.reason_counts)
        accepted = checked_rows.accepted
        if len(accepted):
            frames.append(
                pd.DataFrame(
                    {
                        ENTITY: accepted[contract.entity_key].astype(str).to_numpy(dtype=object),
                        LABEL_TIME: pd.to_datetime(accepted[contract.event_time], utc=True),
                        LABEL: accepted[contract.target].to_numpy(),
                    }
                )
            )
    result.rows_rejected = dict(rejected_rows)
    if not frames:
        return result
    labels = pd.concat(frames, ignore_index=True)
    result.not_yet_due = int((labels[LABEL_TIME] >= end_ts).sum())
    result.before_window = int((labels[LABEL_TIME] < start_ts).sum())
    labels = labels[(labels[LABEL_TIME] >= start_ts) & (labels[LABEL_TIME] < end_ts)]
    # The same label delivered twice counts once; two different labels for one (entity, time): neither.
    before = len(labels)
    labels = labels.drop_duplicates([ENTITY, LABEL_TIME, LABEL])
    result.duplicates = before - len(labels)
    clash = labels.duplicated([ENTITY, LABEL_TIME], keep=False)
    result.conflicting = int(clash.sum())
    result.labels = labels[~clash].sort_values([LABEL_TIME, ENTITY], kind="stable").reset_index(drop=True)
    return result


@dataclass
class LabelJoin:
    """Joined (prediction, label) pairs, and the labels and predictions that found no partner."""

    pairs: pd.DataFrame  # the prediction rows (capture_rows columns) + label_time, label
    labels: int
    unmatched: dict[str, int]  # reason -> labels
    predictions: int  # predictions that could be labelled (they carry an entity key)
    predictions_without_key: int

    @property
    def coverage(self) -> float | None:
        """Share of the predictions that got a label (None: no predictions)."""
        return round(len(self.pairs) / self.predictions, 6) if self.predictions else None

    def summary(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "pairs": len(self.pairs),
            "unmatched_labels": dict(sorted(self.unmatched.items())),
            "predictions": self.predictions,
            "predictions_without_key": self.predictions_without_key,
            "unlabelled_predictions": self.predictions - len(self.pairs),
            "coverage": self.coverage,
        }


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame, *, join_days: float) -> LabelJoin:
    """Each label joined to the latest prediction of its entity at or before its time, within ``join_days``.

    ``predictions``: :func:`mlops_core.capture.capture_rows` (``entity_key``, ``captured_at``, ...);
    ``labels``: :attr:`LabelRead.labels`. See the module doc for what joins nothing and why.
    """
    import pandas as pd

    preds = predictions.reset_index(drop=True).copy()
    preds["_prediction"] = range(len(preds))
    has_key = preds["entity_key"].notna() if len(preds) else pd.Series(dtype=bool)
    without_key = int((~has_key).sum())
    preds = preds[has_key].copy()
    preds[ENTITY] = preds["entity_key"].astype(str)
    preds["captured_at"] = pd.to_datetime(preds["captured_at"], utc=True).astype("datetime64[ns, UTC]")
    preds = preds.sort_values("captured_at", kind="stable")
    labels = labels.sort_values(LABEL_TIME, kind="stable").reset_index(drop=True)
    labels[LABEL_TIME] = labels[LABEL_TIME].astype("datetime64[ns, UTC]")
    unmatched: Counter[str] = Counter()
    if not len(labels) or not len(preds):
        if len(labels):
            unmatched["unknown_entity"] = len(labels)
        empty = preds.iloc[0:0].copy()
        empty[LABEL_TIME] = pd.Series(dtype="datetime64[ns, UTC]")
        empty[LABEL] = pd.Series(dtype=object)
        empty = empty.drop(columns=[ENTITY, "_prediction"])
        return LabelJoin(empty, len(labels), dict(unmatched), len(preds), without_key)

    # Latest prediction at or before the label, any age: tells "too old" from "none before".
    nearest = pd.merge_asof(
        labels,
        preds[[ENTITY, "captured_at", "_prediction"]],
        left_on=LABEL_TIME,
        right_on="captured_at",
        by=ENTITY,
        direction="backward",
        allow_exact_matches=True,
    )
    known = nearest[ENTITY].isin(set(preds[ENTITY]))
    none_before = nearest["_prediction"].isna()
    too_old = ~none_before & (nearest[LABEL_TIME] - nearest["captured_at"] > pd.Timedelta(days=join_days))
    unmatched["unknown_entity"] = int((~known).sum())
    unmatched["before_any_prediction"] = int((known & none_before).sum())
    unmatched["prediction_too_old"] = int(too_old.sum())
    joined = nearest[~none_before & ~too_old]
    # Several labels for one prediction: the earliest answers it (labels are sorted by time).
    again = joined.duplicated("_prediction", keep="first")
    unmatched["prediction_already_labelled"] = int(again.sum())
    joined = joined[~again]
    pairs = preds.set_index("_prediction").loc[joined["_prediction"].astype(int).to_numpy()].reset_index(drop=True)
    pairs[LABEL_TIME] = joined[LABEL_TIME].reset_index(drop=True)
    pairs[LABEL] = joined[LABEL].reset_index(drop=True)
    pairs = pairs.drop(columns=[ENTITY])
    return LabelJoin(
        pairs,
        len(labels),
        {k: v for k, v in unmatched.items() if v},
        len(preds),
        without_key,
    )
