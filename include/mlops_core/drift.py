"""Data drift between the reference (what the model was trained on) and recent data.

Two ways, one result (:class:`DriftResult`):

- :func:`detect_drift_streaming` decides: the new rows stream through in Arrow batches and are
  counted against the champion's reference profile (:mod:`mlops_core.drift_profile`), so memory
  does not grow with the rows; it also keeps a bounded uniform sample of them for the report.
- :func:`detect_drift` makes the human-readable report: Evidently on a reference sample and a
  bounded current sample (and decides on them, for callers that only have frames).

:func:`detect_drift` is built on Evidently 0.7 (``Report`` + ``DataDriftPreset``). Only the contract's feature columns
are compared (numeric and categorical features; never the target, entity key or event time).
Each column is tested with the method Evidently picks by default for its type and size
(reference with <= 1000 rows: K-S for numeric, chi-square or Z-test for categorical, all
p-values; larger references: normed Wasserstein for numeric, Jensen-Shannon for categorical,
both distances with Evidently's default threshold 0.1). The method chosen for each column is
passed to Evidently explicitly, together with ``DriftThresholds.column_p_value`` for the
p-value tests, so the per-column decision and the HTML report agree.

The dataset counts as drifted when the share of drifted columns reaches
``DriftThresholds.drift_share``.

Importing this module is cheap: pandas and Evidently are imported inside the functions.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import pyarrow as pa

    from mlops_core.contract import DatasetContract
    from mlops_core.drift_profile import ProfileThresholds, ReferenceProfile

log = logging.getLogger(__name__)

# Evidently's default methods that return a p-value (drift when the p-value is below the
# threshold). The other default methods (wasserstein, jensenshannon) return a distance.
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})


@dataclass(frozen=True)
class DriftThresholds:
    """When a column, and when the dataset, counts as drifted.

    - ``drift_share``: the dataset drifted when at least this share of feature columns drifted.
    - ``column_p_value``: a column tested with a p-value test drifted when p < this value.
      Distance-based tests (used by Evidently for references above 1000 rows) keep Evidently's
      default threshold.
    - ``min_rows``: below this many rows on either side no drift is computed.
    """

    drift_share: float = 0.3
    column_p_value: float = 0.05
    min_rows: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share!r}")
        if not 0.0 < self.column_p_value < 1.0:
            raise ValueError(f"column_p_value must be in (0, 1), got {self.column_p_value!r}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows!r}")


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift check.

    ``column_scores`` holds Evidently's drift score per tested column: a p-value for p-value
    tests (low = drift) or a distance for distance tests (high = drift); ``column_methods``
    says which. A column that is empty on exactly one side counts as drifted and has no score.
    ``column_stats`` (streaming decision only) holds every statistic computed per column (``psi``,
    ``wasserstein``, ``jensenshannon``, ``missing_rate_reference``, ``missing_rate_current``).
    """

    drifted: bool
    share_drifted: float
    drifted_columns: list[str]
    column_scores: dict[str, float]
    reference_rows: int
    current_rows: int
    reason: str
    column_methods: dict[str, str] = field(default_factory=dict)
    column_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe primitives only (non-finite scores become ``None``)."""
        out = asdict(self)
        out["drifted"] = bool(self.drifted)
        out["share_drifted"] = float(self.share_drifted)
        out["drifted_columns"] = [str(c) for c in self.drifted_columns]
        out["column_scores"] = {
            str(k): (float(v) if v is not None and math.isfinite(float(v)) else None)
            for k, v in self.column_scores.items()
        }
        out["column_methods"] = {str(k): str(v) for k, v in self.column_methods.items()}
        out["column_stats"] = {
            str(k): {str(n): (float(x) if math.isfinite(float(x)) else None) for n, x in v.items()}
            for k, v in self.column_stats.items()
        }
        out["reference_rows"] = int(self.reference_rows)
        out["current_rows"] = int(self.current_rows)
        out["reason"] = str(self.reason)
        return out


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: DatasetContract,
    thresholds: DriftThresholds = DriftThresholds(),
) -> tuple[DriftResult, str]:
    """Compare ``current`` with ``reference`` on the contract's features.

    Returns the :class:`DriftResult` and the Evidently HTML report (a standalone page). With
    fewer than ``thresholds.min_rows`` rows on either side the result is "no drift" with a reason
    saying so, and the HTML is a short page explaining it. Raises ``ValueError`` when a feature
    column of the contract is missing from either frame.
    """
    comparable = set(contract.numeric_features) | set(contract.categorical_features)
    columns = [c for c in contract.feature_columns if c in comparable]
    if not columns:
        raise ValueError(f"contract {contract.name!r} has no numeric or categorical feature columns to compare")
    for side, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{side} data lacks feature column(s) {missing} of contract {contract.name!r}; "
                f"it has {list(frame.columns)}"
            )
    n_ref, n_cur = len(reference), len(current)
    if n_ref < thresholds.min_rows or n_cur < thresholds.min_rows:
        reason = (
            f"not enough rows (reference {n_ref}, current {n_cur}; "
            f"need at least {thresholds.min_rows} on each side): drift not computed"
        )
        log.info("drift check skipped for %s: %s", contract.name, reason)
        result = DriftResult(False, 0.0, [], {}, n_ref, n_cur, reason)
        return result, _message_page(f"Data drift: {contract.name}", reason)

    numeric = [c for c in columns if c in contract.numeric_features]
    categorical = [c for c in columns if c in contract.categorical_features]
    ref = _plain_frame(reference, numeric, categorical)
    cur = _plain_frame(current, numeric, categorical)

    # Columns that are empty on one side count as drifted; empty on both sides are skipped.
    empty_ref = {c for c in columns if ref[c].isna().all()}
    empty_cur = {c for c in columns if cur[c].isna().all()}
    one_side_empty = sorted((empty_ref ^ empty_cur), key=columns.index)
    tested = [c for c in columns if c not in empty_ref and c not in empty_cur]
    skipped = sorted(empty_ref & empty_cur, key=columns.index)
    counted = [c for c in columns if c not in skipped]
    if not counted:
        reason = f"no drift computed: every feature column is empty on both sides ({', '.join(columns)})"
        return DriftResult(False, 0.0, [], {}, n_ref, n_cur, reason), _message_page(
            f"Data drift: {contract.name}", reason
        )

    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    drifted_tested: set[str] = set()
    page = ""
    if tested:
        scores, methods, drifted_tested, page = _run_evidently(
            ref, cur, [c for c in numeric if c in tested], [c for c in categorical if c in tested], thresholds
        )
    drifted_columns = [c for c in columns if c in drifted_tested or c in one_side_empty]
    share = len(drifted_columns) / len(counted)
    drifted = share >= thresholds.drift_share
    reason = _reason(drifted_columns, counted, share, thresholds.drift_share, one_side_empty, skipped)
    if not page:
        page = _message_page(f"Data drift: {contract.name}", reason)
    result = DriftResult(
        drifted=drifted,
        share_drifted=share,
        drifted_columns=drifted_columns,
        column_scores=scores,
        reference_rows=n_ref,
        current_rows=n_cur,
        reason=reason,
        column_methods=methods,
    )
    log.info("drift check for %s: %s", contract.name, reason)
    return result, page


def detect_drift_streaming(
    profile: ReferenceProfile,
    batches: Iterable[pa.RecordBatch | pa.Table],
    contract: DatasetContract,
    thresholds: ProfileThresholds | None = None,
    *,
    sample_rows: int = 0,
    seed: int = 0,
) -> tuple[DriftResult, pd.DataFrame | None]:
    """Count ``batches`` against ``profile`` on the contract's features and decide.

    Returns the result and, when ``sample_rows`` > 0, a uniform sample of at most that many of
    the rows (the feature columns only) for the human-readable report; memory holds one batch,
    the counts and the sample, whatever the number of rows. Raises
    :class:`~mlops_core.drift_profile.ProfileError` when the profile lacks a feature of the
    contract (it was made for another contract) and when a batch lacks one.
    """
    from mlops_core.drift_profile import ProfileCounter, ProfileError, ProfileThresholds, decide

    thresholds = thresholds or ProfileThresholds()

    comparable = set(contract.numeric_features) | set(contract.categorical_features)
    columns = [c for c in contract.feature_columns if c in comparable]
    if not columns:
        raise ValueError(f"contract {contract.name!r} has no numeric or categorical feature columns to compare")
    for name in columns:
        kind = "numeric" if name in contract.numeric_features else "categorical"
        profiled = profile.numeric if kind == "numeric" else profile.categorical
        if name not in profiled:
            raise ProfileError(
                f"the drift profile of {profile.dataset!r} has no {kind} column {name!r} of contract "
                f"{contract.name!r} (it profiles {profile.columns}): it was made for another contract; retrain"
            )
    counter = ProfileCounter(profile, columns)
    sampler = RowSample(sample_rows, seed) if sample_rows > 0 else None
    for batch in batches:
        counter.add(batch)
        if sampler is not None:
            sampler.add(batch.select(columns))
    sample = sampler.frame() if sampler is not None else None
    n_cur = counter.columns[columns[0]].rows
    if n_cur < thresholds.min_rows:
        reason = f"not enough rows (current {n_cur}; need at least {thresholds.min_rows}): drift not computed"
        log.info("drift check skipped for %s: %s", contract.name, reason)
        return DriftResult(False, 0.0, [], {}, profile.rows, n_cur, reason), sample
    verdicts, share, drifted = decide(profile, counter, thresholds)
    one_side_empty = [v.column for v in verdicts if v.method == "empty" and v.drifted]
    skipped = [v.column for v in verdicts if v.method == "empty" and not v.drifted]
    counted = [c for c in columns if c not in skipped]
    drifted_columns = [v.column for v in verdicts if v.drifted]
    reason = _reason(drifted_columns, counted, share, thresholds.drift_share, one_side_empty, skipped)
    notes = [f"{v.column} ({v.why})" for v in verdicts if v.drifted and v.method != "empty"]
    if notes:
        reason += " [" + "; ".join(notes) + "]"
    result = DriftResult(
        drifted=drifted,
        share_drifted=share,
        drifted_columns=drifted_columns,
        column_scores={v.column: v.score for v in verdicts if v.method != "empty"},
        reference_rows=profile.rows,
        current_rows=n_cur,
        reason=reason,
        column_methods={v.column: v.method for v in verdicts if v.method != "empty"},
        column_stats={v.column: dict(v.stats) for v in verdicts},
    )
    log.info("drift check for %s: %s", contract.name, reason)
    return result, sample


class RowSample:
    """A uniform sample of at most ``size`` rows of a stream of batches (each row gets a random key;
    the ``size`` smallest keys are kept), in memory of the sample plus one batch; seeded."""

    def __init__(self, size: int, seed: int = 0) -> None:
        import numpy as np

        if size < 1:
            raise ValueError(f"a sample needs size >= 1, got {size}")
        self.size = size
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._rows: pa.Table | None = None

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        import numpy as np
        import pyarrow as pa

        keys = self._rng.random(batch.num_rows)
        if len(self._keys) >= self.size:  # full: only rows that beat the largest kept key can enter
            take = np.nonzero(keys < self._keys.max())[0]
            if len(take) == 0:
                return
            batch, keys = batch.take(pa.array(take)), keys[take]
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        rows = table if self._rows is None else pa.concat_tables([self._rows, table.cast(self._rows.schema)])
        all_keys = np.concatenate([self._keys, keys])
        if len(all_keys) > self.size:
            keep = np.sort(np.argpartition(all_keys, self.size - 1)[: self.size])
            rows, all_keys = rows.take(pa.array(keep)), all_keys[keep]
        self._rows, self._keys = rows.combine_chunks(), all_keys

    def frame(self) -> pd.DataFrame | None:
        """The sample as a DataFrame (None when no row came)."""
        return None if self._rows is None else self._rows.to_pandas()


# ------------------------------------------------------------------------------ internals
def _plain_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Only the feature columns, in types Evidently handles.

    Numeric columns (``Int64``, ``Float64``, ``int``, ...) become ``float64`` with NaN for
    missing values (anything non-numeric also becomes NaN). Categorical columns (``string``,
    ``category``, ``boolean``, ``bool``) become ``object`` columns of ``str`` with NaN for missing
    values, so ``True`` and ``"True"`` compare equal across sides.
    """
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {}
    for name in numeric:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
    for name in categorical:
        series = frame[name]
        values = series.astype(object)
        mask = series.isna().to_numpy()
        as_text = np.array([str(v) for v in values.to_numpy()], dtype=object)
        as_text[mask] = np.nan
        out[name] = pd.Series(as_text, index=frame.index, dtype=object)
    return pd.DataFrame(out, columns=numeric + categorical).reset_index(drop=True)


def _run_evidently(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    thresholds: DriftThresholds,
) -> tuple[dict[str, float], dict[str, str], set[str], str]:
    """Run Evidently's DataDriftPreset; return scores, methods, drifted columns and the HTML."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.presets import DataDriftPreset

    columns = numeric + categorical
    methods: dict[str, str] = {}
    column_thresholds: dict[str, float] = {}
    for name in columns:
        kind = ColumnType.Numerical if name in numeric else ColumnType.Categorical
        # The same choice Evidently makes by default (on the non-null values), made explicit.
        stattest = get_stattest(ref[name].dropna(), cur[name].dropna(), kind, None)
        methods[name] = stattest.name
        column_thresholds[name] = (
            thresholds.column_p_value if stattest.name in P_VALUE_METHODS else stattest.default_threshold
        )

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(
        metrics=[
            DataDriftPreset(
                columns=columns,
                drift_share=thresholds.drift_share,
                per_column_method=methods,
                per_column_threshold=column_thresholds,
            )
        ],
        include_tests=True,
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    payload = json.loads(snapshot.json())

    scores: dict[str, float] = {}
    for metric in payload.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift") and config.get("column") in methods:
            scores[config["column"]] = float(metric["value"])
    drifted: set[str] = set()
    seen: set[str] = set()
    for test in payload.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith(":ValueDrift") and params.get("column") in methods:
            seen.add(params["column"])
            if test.get("status") == "FAIL":
                drifted.add(params["column"])
    missing = set(columns) - set(scores)
    if missing:
        raise RuntimeError(f"Evidently returned no drift score for column(s) {sorted(missing)}")
    for name in set(columns) - seen:  # no test result: decide from the score like Evidently does
        if _score_drifted(scores[name], methods[name], column_thresholds[name]):
            drifted.add(name)
    return scores, methods, drifted, snapshot.get_html_str(as_iframe=False)


def _score_drifted(score: float, method: str, threshold: float) -> bool:
    """Evidently's per-method decision (ks: p <= t; chisquare/z: p < t; distances: d >= t)."""
    if method == "ks":
        return score <= threshold
    if method in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold


def _reason(
    drifted_columns: list[str],
    counted: list[str],
    share: float,
    drift_share: float,
    one_side_empty: list[str],
    skipped: list[str],
) -> str:
    """A human sentence, e.g. ``4 of 8 columns drifted (50% >= 30%): usage_hours, plan, ...``."""
    op = ">=" if share >= drift_share else "<"
    text = f"{len(drifted_columns)} of {len(counted)} columns drifted ({share:.0%} {op} {drift_share:.0%})"
    if drifted_columns:
        text += ": " + ", ".join(drifted_columns)
    if one_side_empty:
        text += f"; empty on one side only (counted as drifted): {', '.join(one_side_empty)}"
    if skipped:
        text += f"; empty on both sides (not tested): {', '.join(skipped)}"
    return text


def _message_page(title: str, message: str) -> str:
    """A minimal standalone HTML page with one message (used when no Evidently report is made)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n<p>{html.escape(message)}</p>\n</body>\n</html>\n"
    )
