"""The reference profile of a model's training data, and the streaming drift decision against it.

At training time :func:`build_profile` summarises the training rows in a few kilobytes of JSON
stored with the model version: per numeric column the reference's quantile bin edges, the share
of values in each bin and the mean of the values in each bin; per categorical column the shares
of the ``top_k`` most frequent categories and of everything else (``other``); the missing rate of
every column; and, when the model could score the rows, the same for its predictions.

The monitor then calls :func:`compare_to_profile` with the new rows as a stream of Arrow record
batches. Each batch is binned against the profile and only the counts are kept, so memory does
not grow with the number of rows (``ColumnCounts``: one small array per column). Per column:

- numeric: the Wasserstein-1 distance between the binned distributions, divided by the
  reference's standard deviation (Evidently's "normed Wasserstein", threshold 0.1 by default),
  and the PSI over the profile's bins. The distance is computed from the counts and the sum of
  the values in each bin, which gives the exact integral of ``F_ref - F_cur`` over each bin, so
  it equals the true distance unless the two CDFs cross inside a bin (then it is lower).
- numeric with at most 5 distinct reference values (flags, small counts): Jensen-Shannon over
  the bins (every distinct value then has a bin of its own), as Evidently does;
- categorical: the Jensen-Shannon distance (natural log, as SciPy and Evidently) between the
  category shares (top-K and ``other``; new categories land in ``other``).
- every column: the missing rate; a change of at least ``missing_rate_change`` counts as drift
  (Evidently drops missing values before testing, so a column that turns half empty is not
  drift there; it is here).

A column drifted when its statistic reaches its threshold (:class:`ProfileThresholds`); the
dataset drifted when the share of drifted columns reaches ``drift_share``.

The profile is untrusted on read (it travels through object storage and registries):
:meth:`ReferenceProfile.from_json` accepts JSON only (never pickle), checks every field's type,
length, range and order and raises :class:`ProfileError` saying what is wrong.

Importing this module is cheap: numpy and pyarrow are imported inside the functions.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_core.errors import PermanentError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from mlops_core.contract import DatasetContract
    from mlops_core.settings import MonitoringSettings

PROFILE_FORMAT = "mlops.drift_profile/1"
MAX_PROFILE_BYTES = 16 * 1024 * 1024
MAX_BINS = 1000
MAX_CATEGORIES = 10_000
DISCRETE_VALUES = 5  # Evidently tests numeric columns with at most this many values like categories
PREDICTION = "prediction"
PSI_EPSILON = 1e-4  # a share of 0 counts as this much in PSI (Evidently's floor)
NUMERIC_METHODS = ("wasserstein", "psi")


class ProfileError(PermanentError, ValueError):
    """A drift profile that is not well formed (or does not fit the data it is compared with)."""


# ------------------------------------------------------------------------------ the profile
@dataclass(frozen=True)
class NumericProfile:
    """A numeric column of the reference.

    ``edges`` are the m distinct inner bin edges (increasing, finite); bin 0 holds values below
    ``edges[0]``, bin i values in ``[edges[i-1], edges[i])`` and bin m values from ``edges[-1]``
    on. ``shares`` (m + 1) are the shares of the non-missing values per bin, ``bin_means`` the mean
    value in each bin (``None`` for an empty bin). ``std`` is the standard deviation of the
    non-missing values (population, as numpy), ``distinct`` their number of distinct values
    (counted up to ``DISCRETE_VALUES + 1``).
    """

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    bin_means: tuple[float | None, ...]
    missing_rate: float
    mean: float
    std: float
    distinct: int

    @property
    def discrete(self) -> bool:
        return self.distinct <= DISCRETE_VALUES


@dataclass(frozen=True)
class CategoricalProfile:
    """A categorical column of the reference: shares of ``categories`` then of ``other`` (all the
    rest), over the non-missing values (values compared as text: Arrow's cast to string)."""

    categories: tuple[str, ...]
    shares: tuple[float, ...]
    missing_rate: float


@dataclass(frozen=True)
class ReferenceProfile:
    """What the drift decision needs to know of the training data (and of the model's predictions)."""

    dataset: str
    rows: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    prediction: NumericProfile | None = None
    bins: int = 20
    top_k: int = 20

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_json(self) -> bytes:
        """Compact JSON (a few kB per column); :meth:`from_json` reads it back."""
        payload = {
            "format": PROFILE_FORMAT,
            "dataset": self.dataset,
            "rows": self.rows,
            "bins": self.bins,
            "top_k": self.top_k,
            "numeric": {name: _numeric_dict(p) for name, p in self.numeric.items()},
            "categorical": {
                name: {"categories": list(p.categories), "shares": list(p.shares), "missing_rate": p.missing_rate}
                for name, p in self.categorical.items()
            },
            "prediction": None if self.prediction is None else _numeric_dict(self.prediction),
        }
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = "drift profile") -> ReferenceProfile:
        """Parse and validate a profile; :class:`ProfileError` says what is wrong with it."""
        if not isinstance(data, bytes | bytearray):
            raise ProfileError(f"{source}: expected bytes, got {type(data).__name__}")
        if len(data) > MAX_PROFILE_BYTES:
            raise ProfileError(f"{source}: {len(data)} bytes, more than a profile may have ({MAX_PROFILE_BYTES})")
        try:
            raw = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProfileError(f"{source}: not JSON ({exc})") from None
        return _parse_profile(raw, source)


def _numeric_dict(p: NumericProfile) -> dict[str, Any]:
    return {
        "edges": list(p.edges),
        "shares": list(p.shares),
        "bin_means": list(p.bin_means),
        "missing_rate": p.missing_rate,
        "mean": p.mean,
        "std": p.std,
        "distinct": p.distinct,
    }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# ------------------------------------------------------------------------------ validation
def _parse_profile(raw: Any, source: str) -> ReferenceProfile:
    obj = _mapping(raw, source, {"format", "dataset", "rows", "bins", "top_k", "numeric", "categorical", "prediction"})
    if obj["format"] != PROFILE_FORMAT:
        raise ProfileError(f"{source}: format {obj['format']!r}, expected {PROFILE_FORMAT!r}")
    dataset = obj["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise ProfileError(f"{source}: 'dataset' must be a non-empty string")
    rows = _int(obj["rows"], f"{source}: rows", 0)
    bins = _int(obj["bins"], f"{source}: bins", 1, MAX_BINS)
    top_k = _int(obj["top_k"], f"{source}: top_k", 1, MAX_CATEGORIES)
    numeric_raw = _mapping(obj["numeric"], f"{source}: numeric")
    categorical_raw = _mapping(obj["categorical"], f"{source}: categorical")
    both = set(numeric_raw) & set(categorical_raw)
    if both:
        raise ProfileError(f"{source}: column(s) {sorted(both)} are both numeric and categorical")
    numeric = {_name(k, source): _parse_numeric(v, f"{source}: column {k!r}", bins) for k, v in numeric_raw.items()}
    categorical = {
        _name(k, source): _parse_categorical(v, f"{source}: column {k!r}", top_k) for k, v in categorical_raw.items()
    }
    if not numeric and not categorical:
        raise ProfileError(f"{source}: profiles no column")
    prediction = None if obj["prediction"] is None else _parse_numeric(obj["prediction"], f"{source}: prediction", bins)
    return ReferenceProfile(dataset, rows, numeric, categorical, prediction, bins, top_k)


def _parse_numeric(raw: Any, where: str, bins: int) -> NumericProfile:
    obj = _mapping(raw, where, {"edges", "shares", "bin_means", "missing_rate", "mean", "std", "distinct"})
    edges = _floats(obj["edges"], f"{where}: edges")
    if len(edges) > max(bins, DISCRETE_VALUES + 1):
        raise ProfileError(f"{where}: {len(edges)} edges, more than {bins} bins have")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"{where}: edges must be strictly increasing")
    shares = _shares(obj["shares"], f"{where}: shares", len(edges) + 1)
    means_raw = obj["bin_means"]
    if not isinstance(means_raw, list) or len(means_raw) != len(edges) + 1:
        raise ProfileError(f"{where}: bin_means must be a list of {len(edges) + 1} numbers or nulls")
    means: list[float | None] = []
    for i, (value, share) in enumerate(zip(means_raw, shares, strict=True)):
        if value is None:
            if share > 0:
                raise ProfileError(f"{where}: bin {i} has a share but no mean")
            means.append(None)
            continue
        mean = _float(value, f"{where}: bin_means[{i}]")
        low = edges[i - 1] if i > 0 else -math.inf
        high = edges[i] if i < len(edges) else math.inf
        if not low <= mean <= high:
            raise ProfileError(f"{where}: the mean of bin {i} ({mean}) is outside the bin [{low}, {high}]")
        means.append(mean)
    return NumericProfile(
        edges=tuple(edges),
        shares=tuple(shares),
        bin_means=tuple(means),
        missing_rate=_rate(obj["missing_rate"], f"{where}: missing_rate"),
        mean=_float(obj["mean"], f"{where}: mean"),
        std=_nonnegative(obj["std"], f"{where}: std"),
        distinct=_int(obj["distinct"], f"{where}: distinct", 0),
    )


def _parse_categorical(raw: Any, where: str, top_k: int) -> CategoricalProfile:
    obj = _mapping(raw, where, {"categories", "shares", "missing_rate"})
    categories = obj["categories"]
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise ProfileError(f"{where}: categories must be a list of strings")
    if len(categories) > top_k:
        raise ProfileError(f"{where}: {len(categories)} categories, more than top_k ({top_k})")
    if len(set(categories)) != len(categories):
        raise ProfileError(f"{where}: categories repeat")
    shares = _shares(obj["shares"], f"{where}: shares", len(categories) + 1)
    return CategoricalProfile(tuple(categories), tuple(shares), _rate(obj["missing_rate"], f"{where}: missing_rate"))


def _mapping(raw: Any, where: str, keys: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected an object, got {type(raw).__name__}")
    if keys is not None and set(raw) != keys:
        missing, extra = sorted(keys - set(raw)), sorted(set(raw) - keys)
        raise ProfileError(f"{where}: fields missing {missing}, unexpected {extra}")
    return raw


def _name(name: str, source: str) -> str:
    if not name or len(name) > 256:
        raise ProfileError(f"{source}: column name {name[:40]!r} is empty or too long")
    return name


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _floats(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise ProfileError(f"{where}: expected a list of numbers")
    return [_float(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _nonnegative(value: Any, where: str) -> float:
    f = _float(value, where)
    if f < 0:
        raise ProfileError(f"{where}: must be >= 0, got {f}")
    return f


def _rate(value: Any, where: str) -> float:
    f = _float(value, where)
    if not 0.0 <= f <= 1.0:
        raise ProfileError(f"{where}: must be in [0, 1], got {f}")
    return f


def _int(value: Any, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ProfileError(f"{where}: expected an integer {bound}, got {value!r}")
    return value


def _shares(value: Any, where: str, length: int) -> list[float]:
    shares = _floats(value, where)
    if len(shares) != length:
        raise ProfileError(f"{where}: expected {length} shares, got {len(shares)}")
    if any(s < 0 for s in shares):
        raise ProfileError(f"{where}: shares must be >= 0")
    total = math.fsum(shares)
    if total != 0 and abs(total - 1.0) > 1e-6:
        raise ProfileError(f"{where}: shares sum to {total}, not 1 (or 0 for a column without values)")
    return shares


# ------------------------------------------------------------------------------ counting a stream
@dataclass
class ColumnCounts:
    """What a stream of values of one column adds up to: rows, missing, and per bin (numeric) the
    count and the sum of the values, or per category (then ``other``) the count."""

    counts: np.ndarray
    sums: np.ndarray  # empty for a categorical column
    rows: int = 0
    missing: int = 0

    @property
    def present(self) -> int:
        return self.rows - self.missing


class ProfileCounter:
    """Bins batches of rows against a profile; memory is one small array per column, whatever the rows."""

    def __init__(self, profile: ReferenceProfile, columns: Sequence[str] | None = None) -> None:
        import numpy as np

        self.profile = profile
        wanted = list(columns) if columns is not None else profile.columns
        unknown = [c for c in wanted if c not in profile.numeric and c not in profile.categorical and c != PREDICTION]
        if unknown:
            raise ProfileError(f"the drift profile has no column(s) {unknown}; it profiles {profile.columns}")
        self._numeric: dict[str, Binner] = {}
        self._categorical: dict[str, dict[str, int]] = {}
        self.columns: dict[str, ColumnCounts] = {}
        for name in wanted:
            if name in profile.categorical:
                cats = profile.categorical[name].categories
                self._categorical[name] = {c: i for i, c in enumerate(cats)}
                self.columns[name] = ColumnCounts(np.zeros(len(cats) + 1, dtype=np.int64), np.zeros(0))
            else:
                p = self.numeric_profile(name)
                self._numeric[name] = Binner(np.asarray(p.edges, dtype=np.float64))
                self.columns[name] = ColumnCounts(
                    counts=np.zeros(len(p.edges) + 1, dtype=np.int64), sums=np.zeros(len(p.edges) + 1)
                )

    def numeric_profile(self, name: str) -> NumericProfile:
        if name == PREDICTION and name not in self.profile.numeric:
            if self.profile.prediction is None:
                raise ProfileError("the drift profile has no profile of the model's predictions")
            return self.profile.prediction
        return self.profile.numeric[name]

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Count one batch (it must hold every column this counter counts; others are ignored)."""
        for name, edges in self._numeric.items():
            _count_numeric(_column(batch, name), edges, self.columns[name])
        for name, index in self._categorical.items():
            _count_categorical(_column(batch, name), index, self.columns[name])

    def add_all(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> ProfileCounter:
        for batch in batches:
            self.add(batch)
        return self


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> Any:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise ProfileError(f"the rows lack column {name!r} of the drift profile; they have {batch.schema.names}")
    return batch.column(index)


def _as_float_array(column: Any) -> np.ndarray:
    """A float64 numpy view of an Arrow column, nulls as NaN (zero copy when it can be)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_floating(column.type) or column.type != pa.float64():
        if pa.types.is_boolean(column.type):
            column = pc.cast(column, pa.int8())
        column = pc.cast(column, pa.float64(), safe=False)
    values = column.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _count_numeric(column: Any, edges: Binner, acc: ColumnCounts) -> None:
    _count_values(_as_float_array(column), edges, acc)


class Binner:
    """``bin_of(x)`` = the number of edges <= x (``np.searchsorted(edges, x, side="right")``), faster.

    A binary search per value is slow on unsorted values; instead the range of the edges is cut
    into ``cells`` equal cells, each knowing how many edges lie below it and the (at most two)
    edges near it: a value's bin is a multiply, two table look-ups and two comparisons. The
    cells are widened by a small margin so that rounding in the cell computation can never put a
    value on the wrong side of an edge. Edges too close together for the table (or at positions
    far from zero compared with their spread) fall back to the binary search.
    """

    MAX_CELLS = 1 << 15
    MARGIN = 1e-6  # of a cell: far above the rounding of (x - lo) * scale in the ranges allowed

    def __init__(self, edges: np.ndarray) -> None:
        import numpy as np

        self.edges = edges
        self.table: tuple[float, float, np.ndarray, np.ndarray, np.ndarray] | None = None
        if len(edges) < 2:
            return
        lo, hi = float(edges[0]), float(edges[-1])
        spread = hi - lo
        min_gap = float(np.diff(edges).min())
        # |x| / spread <= 1e4 keeps the rounding of (x - lo) * scale under 1e-7 of a cell (2**-52 * 1e4 * cells)
        if spread <= 0 or max(abs(lo), abs(hi)) / spread > 1e4 or spread / min_gap > self.MAX_CELLS / 2:
            return
        cells = int(min(self.MAX_CELLS, max(64, 2 * math.ceil(spread / min_gap))))
        scale = cells / spread
        # cell k covers [lo + (k-1)/scale, lo + k/scale); values below lo go to cell 0, above hi to cells+1
        starts = lo + (np.arange(cells + 2) - 1) / scale
        width = 1.0 / scale
        below = np.searchsorted(edges, starts - self.MARGIN * width, side="left")  # edges surely below the cell
        near_end = np.searchsorted(edges, starts + width * (1 + self.MARGIN), side="left")
        if int((near_end - below).max()) > 2:
            return
        first = np.where(near_end - below >= 1, edges[np.minimum(below, len(edges) - 1)], np.nan)
        second = np.where(near_end - below >= 2, edges[np.minimum(below + 1, len(edges) - 1)], np.nan)
        self.table = (lo, scale, below.astype(np.intp), first, second)

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        import numpy as np

        if self.table is None:
            return np.searchsorted(self.edges, values, side="right")
        lo, scale, below, first, second = self.table
        with np.errstate(over="ignore", invalid="ignore"):  # far out: +-inf, clipped to the outer cells
            cell = (values - lo) * scale + 1.0
        np.clip(cell, 0.0, len(below) - 1, out=cell)
        index = cell.astype(np.intp)
        bins = below[index]
        bins += values >= first[index]
        bins += values >= second[index]
        return bins


def _count_values(values: np.ndarray, edges: np.ndarray | Binner, acc: ColumnCounts) -> None:
    import numpy as np

    n = len(values)
    finite = np.isfinite(values)
    if not finite.all():  # nulls, NaN and +-inf count as missing (as Evidently drops them)
        values = values[finite]
    binner = edges if isinstance(edges, Binner) else Binner(edges)
    bins = binner.bin_of(values)
    edges = binner.edges
    nbins = len(edges) + 1
    acc.counts += np.bincount(bins, minlength=nbins)
    acc.sums += np.bincount(bins, weights=values, minlength=nbins)
    acc.rows += n
    acc.missing += n - len(values)


def _count_categorical(column: Any, index: Mapping[str, int], acc: ColumnCounts) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        column = pc.cast(column, pa.string())
    counts = pc.value_counts(column)
    other = len(index)
    for value, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
        if value is None:
            continue
        acc.counts[index.get(value, other)] += count
    acc.rows += len(column)
    acc.missing += column.null_count


# ------------------------------------------------------------------------------ building a profile
def build_profile(
    table: pa.Table | pd.DataFrame,
    dataset: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    bins: int = 20,
    top_k: int = 20,
    predictions: Any = None,
) -> ReferenceProfile:
    """The profile of the training rows ``table`` (``predictions``: the model's scores on them, or None)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [1, {MAX_BINS}], got {bins}")
    if not 1 <= top_k <= MAX_CATEGORIES:
        raise ValueError(f"top_k must be in [1, {MAX_CATEGORIES}], got {top_k}")
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table[list(numeric) + list(categorical)], preserve_index=False)
    numeric_profiles: dict[str, NumericProfile] = {}
    for name in numeric:
        numeric_profiles[name] = _numeric_profile(_as_float_array(_column(table, name)), bins)
    categorical_profiles: dict[str, CategoricalProfile] = {}
    for name in categorical:
        column = _column(table, name)
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        counts = pc.value_counts(column)
        pairs = [
            (v, c)
            for v, c in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
            if v is not None
        ]
        pairs.sort(key=lambda vc: (-vc[1], vc[0]))
        present = sum(c for _, c in pairs)
        kept = pairs[:top_k]
        rest = present - sum(c for _, c in kept)
        shares = [c / present for _, c in kept] + [rest / present] if present else [0.0] * (len(kept) + 1)
        rows = len(column)
        categorical_profiles[name] = CategoricalProfile(
            tuple(v for v, _ in kept), tuple(shares), (rows - present) / rows if rows else 0.0
        )
    prediction = None
    if predictions is not None:
        prediction = _numeric_profile(np.asarray(predictions, dtype=np.float64).ravel(), bins)
    return ReferenceProfile(
        dataset, int(table.num_rows), numeric_profiles, categorical_profiles, prediction, bins=bins, top_k=top_k
    )


def contract_profile(
    table: pa.Table | pd.DataFrame,
    contract: DatasetContract,
    monitoring: MonitoringSettings,
    *,
    predictions: Any = None,
) -> ReferenceProfile:
    """:func:`build_profile` of ``table`` with the contract's numeric and categorical features and the
    bins of ``monitoring`` (``profile_bins``, ``profile_top_categories``): training and the monitor's
    fallback for champions trained before profiles make the same profile."""
    return build_profile(
        table,
        contract.name,
        [c for c in contract.feature_columns if c in contract.numeric_features],
        [c for c in contract.feature_columns if c in contract.categorical_features],
        bins=monitoring.profile_bins,
        top_k=monitoring.profile_top_categories,
        predictions=predictions,
    )


def _numeric_profile(values: np.ndarray, bins: int) -> NumericProfile:
    import numpy as np

    rows = len(values)
    present = values[np.isfinite(values)]
    missing_rate = (rows - len(present)) / rows if rows else 0.0
    if len(present) == 0:
        return NumericProfile((), (0.0,), (None,), missing_rate, 0.0, 0.0, 0)
    distinct = np.unique(present)
    if len(distinct) <= DISCRETE_VALUES:
        # every value a bin of its own: the lowest value starts bin 1, and a value above the highest
        # one (a new value) falls in the last bin, apart from the highest value
        inner = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    elif bins > 1:
        inner = np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    else:
        inner = np.array([])
    edges = np.unique(inner)
    acc = ColumnCounts(counts=np.zeros(len(edges) + 1, dtype=np.int64), sums=np.zeros(len(edges) + 1))
    _count_values(present, edges, acc)
    shares = acc.counts / len(present)
    means: list[float | None] = []
    for i, (count, total) in enumerate(zip(acc.counts, acc.sums, strict=True)):
        if count == 0:
            means.append(None)
            continue
        low = edges[i - 1] if i > 0 else -np.inf
        high = edges[i] if i < len(edges) else np.inf
        means.append(float(min(max(total / count, low), high)))  # rounding may step over an edge
    return NumericProfile(
        edges=tuple(float(e) for e in edges),
        shares=tuple(float(s) for s in shares),
        bin_means=tuple(means),
        missing_rate=float(missing_rate),
        mean=float(present.mean()),
        std=float(present.std()),
        distinct=int(min(len(distinct), DISCRETE_VALUES + 1)),
    )


# ------------------------------------------------------------------------------ the decision
@dataclass(frozen=True)
class ProfileThresholds:
    """When a column, and when the dataset, counts as drifted against a profile.

    - ``drift_share``: the dataset drifted when at least this share of the columns drifted.
    - ``numeric_method``: ``wasserstein`` (normed, as Evidently) or ``psi`` decides numeric columns
      (both are computed and reported).
    - ``wasserstein``, ``psi``, ``jensenshannon``: a column drifted when its statistic is >= this.
    - ``missing_rate_change``: a column drifted when its missing rate moved by at least this much.
    - ``min_rows``: with fewer current rows no drift is computed.
    """

    drift_share: float = 0.3
    numeric_method: str = "wasserstein"
    wasserstein: float = 0.1
    psi: float = 0.2
    jensenshannon: float = 0.1
    missing_rate_change: float = 0.1
    min_rows: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share!r}")
        if self.numeric_method not in NUMERIC_METHODS:
            raise ValueError(f"numeric_method must be one of {NUMERIC_METHODS}, got {self.numeric_method!r}")
        for name in ("wasserstein", "psi", "jensenshannon"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} threshold must be a finite number > 0, got {value!r}")
        if not 0.0 < self.missing_rate_change <= 1.0:
            raise ValueError(f"missing_rate_change must be in (0, 1], got {self.missing_rate_change!r}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows!r}")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's statistics against the profile, and its verdict."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    stats: dict[str, float] = field(default_factory=dict)
    why: str = ""


def column_drift(
    name: str, reference: NumericProfile | CategoricalProfile, counts: ColumnCounts, t: ProfileThresholds
) -> ColumnDrift:
    """The statistics of one column's counts against its reference, and the verdict."""
    import numpy as np

    cur_missing = counts.missing / counts.rows if counts.rows else 0.0
    stats: dict[str, float] = {"missing_rate_reference": reference.missing_rate, "missing_rate_current": cur_missing}
    ref_shares = np.asarray(reference.shares, dtype=np.float64)
    present = counts.present
    cur_shares = counts.counts / present if present else np.zeros_like(ref_shares)
    if present == 0 or ref_shares.sum() == 0:
        # empty on one side: drifted (as detect_drift); empty on both: nothing to compare but the missing rate
        both_empty = present == 0 and ref_shares.sum() == 0
        drifted = not both_empty
        return ColumnDrift(
            name,
            "empty",
            math.nan,
            math.nan,
            drifted,
            stats,
            "no values on either side" if both_empty else "no values on one side only",
        )
    js = _jensenshannon(ref_shares, cur_shares)
    stats["jensenshannon"] = js
    if isinstance(reference, CategoricalProfile):
        method, score, threshold = "jensenshannon", js, t.jensenshannon
    else:
        stats["psi"] = _psi(ref_shares, cur_shares)
        stats["wasserstein"] = _normed_wasserstein(reference, cur_shares, counts.sums / present)
        if reference.discrete:
            method, score, threshold = "jensenshannon", js, t.jensenshannon
        elif t.numeric_method == "psi":
            method, score, threshold = "psi", stats["psi"], t.psi
        else:
            method, score, threshold = "wasserstein", stats["wasserstein"], t.wasserstein
    drifted = score >= threshold
    why = f"{method} {score:.3g} {'>=' if drifted else '<'} {threshold:g}"
    missing_change = abs(cur_missing - reference.missing_rate)
    if missing_change >= t.missing_rate_change:
        drifted = True
        why += f"; missing rate {reference.missing_rate:.1%} -> {cur_missing:.1%}"
    return ColumnDrift(name, method, float(score), float(threshold), bool(drifted), stats, why)


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, natural log (``scipy.spatial.distance.jensenshannon``)."""
    import numpy as np

    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        right = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max((left + right) / 2.0, 0.0)))


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    import numpy as np

    r = np.maximum(ref, PSI_EPSILON)
    c = np.maximum(cur, PSI_EPSILON)
    return float(((c - r) * np.log(c / r)).sum())


def _normed_wasserstein(reference: NumericProfile, cur_shares: np.ndarray, cur_mass_sums: np.ndarray) -> float:
    """W1 between the binned distributions over the reference's std (floored at 0.001, as Evidently).

    Per bin [a, b): integral of F(x) dx = P(X < a) (b - a) + b P(X in bin) - E[X; X in bin], which
    needs only the share and the mean of each bin; the tails likewise. The sum of the absolute
    per-bin integrals of F_ref - F_cur is the distance unless the CDFs cross inside a bin.
    """
    import numpy as np

    edges = np.asarray(reference.edges, dtype=np.float64)
    ref_shares = np.asarray(reference.shares, dtype=np.float64)
    ref_sums = np.array(
        [s * (m if m is not None else 0.0) for s, m in zip(reference.shares, reference.bin_means, strict=True)]
    )
    norm = max(reference.std, 0.001)
    if len(edges) == 0:  # one bin: W1 is the difference of the means
        return float(abs(ref_sums[0] - cur_mass_sums[0]) / norm)
    delta_share = ref_shares - cur_shares  # P_ref(bin) - P_cur(bin)
    delta_sum = ref_sums - cur_mass_sums  # E_ref[X; bin] - E_cur[X; bin]
    below = np.concatenate([[0.0], np.cumsum(delta_share)[:-1]])  # F_ref - F_cur just below each bin
    total = abs(delta_share[0] * edges[0] - delta_sum[0])  # lower tail: E[(a - X); X < a]
    widths = np.diff(edges)
    inner = below[1:-1] * widths + delta_share[1:-1] * edges[1:] - delta_sum[1:-1]
    total += float(np.abs(inner).sum())
    total += abs(delta_sum[-1] - delta_share[-1] * edges[-1])  # upper tail: E[(X - b); X >= b]
    return float(total / norm)


def decide(
    profile: ReferenceProfile, counter: ProfileCounter, thresholds: ProfileThresholds
) -> tuple[list[ColumnDrift], float, bool]:
    """Per-column verdicts, the share of drifted columns (those with values on some side), and the verdict."""
    verdicts = []
    for name, counts in counter.columns.items():
        reference: NumericProfile | CategoricalProfile = (
            profile.categorical[name] if name in profile.categorical else counter.numeric_profile(name)
        )
        verdicts.append(column_drift(name, reference, counts, thresholds))
    counted = [v for v in verdicts if not (v.method == "empty" and not v.drifted)]
    share = sum(v.drifted for v in counted) / len(counted) if counted else 0.0
    return verdicts, share, bool(counted) and share >= thresholds.drift_share
