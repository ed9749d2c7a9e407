"""Deterministic demo data: daily partitions of a subscription-churn dataset.

The generated columns are exactly those of ``include/contracts/churn.yaml``. A fixed pool of
customers (derived from the seed only) appears across days with slowly evolving attributes
(tenure grows, plans change now and then, autopay is switched on or off), so the same
``customer_id`` shows up on several days with different ``event_time`` values: entity key +
event time, as in a real feature store.

Every day is generated from its own random stream seeded from ``(seed, day)``: the same
``(seed, day)`` gives the same rows whichever other days are generated, and in whatever order.
Within a day each column draws from its own child stream, so switching drift on changes only
what the drift is meant to change (the same customers, times and noise are used).

Drift can be switched on from a given day (:class:`DriftSpec`):

- ``covariate``: the feature distributions move (usage drops, support calls rise, the plan mix
  shifts toward ``basic`` while prices go up); the label still follows the same function of
  the features.
- ``concept``: the features keep their distributions but the label relationship changes (the
  effects of autopay, support calls and usage flip), so a model trained before degrades.
- ``both``: both at once.

Command line::

    python -m mlops_core.demo_data --drop-zone data/drop --days 0-2
    python -m mlops_core.demo_data --drop-zone data/drop --days 3-9 --drift covariate --drift-start 5
    python -m mlops_core.demo_data --drop-zone data/drop --days 0 --bad-files
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlops_core.atomic_files import write_atomic  # a hidden temp name: watchers never see half a file

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "customer_id",
    "event_time",
    "tenure_months",
    "monthly_charges",
    "usage_hours",
    "support_calls",
    "plan",
    "region",
    "autopay",
    "last_payment_delay_days",
    "churned",
)
PLANS: tuple[str, ...] = ("basic", "standard", "premium")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")
DRIFT_KINDS: tuple[str, ...] = ("none", "covariate", "concept", "both")
FILE_PREFIX = "churn_"
POOL_SIZE = 5000

_PLAN_SHARES = np.array([0.5, 0.35, 0.15])
_PLAN_PRICE = np.array([29.99, 59.99, 99.99])
_PLAN_USAGE = np.array([35.0, 60.0, 95.0])  # median hours of use per 30 days
_REGION_SHARES = np.array([0.3, 0.25, 0.25, 0.2])
_NULL_DELAY_SHARE = 0.10
_SECONDS_PER_DAY = 86_400
_BAD_SEED_OFFSET = 1_000_003  # bad demo files use other rows than the good file of the same day
_BAD_ROWS_DEFAULT = 60

# Label model: logit P(churned) = sum of these terms (see _churn_logit).
_INTERCEPT = -0.35
_COEF_TENURE = -0.05  # per month, capped at 60 months
_COEF_CHARGES = 0.018  # per currency unit above 50
_COEF_USAGE = -1.2  # per unit of log(usage / 50)
_COEF_SUPPORT = 0.55  # per call
_COEF_AUTOPAY = -1.3
_COEF_DELAY = 0.07  # per day of payment delay, capped at 30
_COEF_PLAN = np.array([0.35, 0.0, -0.3])
_CUSTOMER_EFFECT_SD = 0.25


@dataclass(frozen=True)
class DriftSpec:
    """Which drift to simulate, from which day on, and how strongly.

    ``strength`` scales the effect: 0 is no drift, 1.0 is the documented default (strong enough
    for Evidently's default data-drift test to flag at least 30% of the columns for ``covariate``,
    and to flip the label effects of autopay, support calls and usage for ``concept``).
    """

    kind: Literal["none", "covariate", "concept", "both"] = "none"
    start_day: int = 0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"DriftSpec.kind must be one of {DRIFT_KINDS}, got {self.kind!r}")
        if not math.isfinite(self.strength) or self.strength < 0:
            raise ValueError(f"DriftSpec.strength must be a finite number >= 0, got {self.strength!r}")

    def covariate_on(self, day: int) -> float:
        """Strength of the covariate shift on ``day`` (0.0 when off)."""
        return self.strength if self.kind in ("covariate", "both") and day >= self.start_day else 0.0

    def concept_on(self, day: int) -> float:
        """Strength of the concept shift on ``day`` (0.0 when off)."""
        return self.strength if self.kind in ("concept", "both") and day >= self.start_day else 0.0


@dataclass(frozen=True)
class _CustomerPool:
    """Per-customer attributes that only depend on the seed (not on the day)."""

    customer_id: np.ndarray  # str
    region: np.ndarray  # index into REGIONS
    plan: np.ndarray  # index into PLANS before the plan change
    new_plan: np.ndarray  # index into PLANS after the plan change
    plan_change_day: np.ndarray
    tenure_at_start: np.ndarray  # months at day 0
    tenure_phase: np.ndarray  # day offset within the month, so tenures do not all tick on the same day
    usage_level: np.ndarray  # multiplicative, log-normal around 1
    support_rate: np.ndarray  # Poisson mean of support calls
    autopay: np.ndarray  # bool before the autopay switch
    autopay_switch_day: np.ndarray
    price_factor: np.ndarray  # discounts and add-ons, around 1
    delay_level: np.ndarray  # multiplicative, log-normal around 1
    customer_effect: np.ndarray  # unobserved propensity to churn (logit units)


_POOL_CACHE: dict[tuple[int, int], _CustomerPool] = {}


def _customer_pool(seed: int, size: int = POOL_SIZE) -> _CustomerPool:
    """The pool of customers for ``seed``: deterministic, cached per process."""
    key = (seed, size)
    pool = _POOL_CACHE.get(key)
    if pool is not None:
        return pool
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9001]))
    plan = rng.choice(len(PLANS), size=size, p=_PLAN_SHARES)
    # A plan change moves one step up or down (standard goes either way), so the mix stays stable.
    step = np.where(plan == 0, 1, np.where(plan == 2, -1, rng.choice([-1, 1], size=size)))
    pool = _CustomerPool(
        customer_id=np.array([f"C{i:06d}" for i in range(1, size + 1)], dtype=object),
        region=rng.choice(len(REGIONS), size=size, p=_REGION_SHARES),
        plan=plan,
        new_plan=plan + step,
        plan_change_day=rng.exponential(400.0, size=size).astype(int),
        tenure_at_start=np.minimum(rng.gamma(1.3, 22.0, size=size).astype(int), 200),
        tenure_phase=rng.integers(0, 30, size=size),
        usage_level=rng.lognormal(0.0, 0.45, size=size),
        support_rate=rng.gamma(2.0, 0.45, size=size),
        autopay=rng.random(size=size) < 0.6,
        autopay_switch_day=rng.exponential(500.0, size=size).astype(int),
        price_factor=np.clip(rng.normal(1.0, 0.06, size=size), 0.8, 1.3),
        delay_level=rng.lognormal(0.0, 0.5, size=size),
        customer_effect=rng.normal(0.0, _CUSTOMER_EFFECT_SD, size=size),
    )
    _POOL_CACHE[key] = pool
    return pool


def _churn_logit(
    *,
    tenure: np.ndarray,
    charges: np.ndarray,
    usage: np.ndarray,
    support: np.ndarray,
    plan: np.ndarray,
    autopay: np.ndarray,
    delay: np.ndarray,
    customer_effect: np.ndarray,
    concept: float,
) -> np.ndarray:
    """Logit of P(churned) given the features; ``concept`` > 0 flips autopay/support/usage effects.

    At ``concept`` = 1 the three flipped coefficients have the opposite sign of the base model;
    0.5 removes their effect; values in between interpolate.
    """
    flip = 1.0 - 2.0 * concept
    delay_filled = np.where(np.isnan(delay), 2.0, np.minimum(delay, 30.0))
    logit = (
        _INTERCEPT
        + _COEF_TENURE * np.minimum(tenure, 60)
        + _COEF_CHARGES * (charges - 50.0)
        + flip * _COEF_USAGE * np.log((usage + 1.0) / 50.0)
        + flip * _COEF_SUPPORT * (support - 1.0)
        + flip * _COEF_AUTOPAY * (autopay.astype(float) - 0.6)
        + _COEF_DELAY * (delay_filled - 3.0)
        + _COEF_PLAN[plan]
        + customer_effect
    )
    return np.asarray(logit, dtype=float)


def _day_streams(seed: int, day: int, n: int) -> list[np.random.Generator]:
    """``n`` independent random streams for one day, derived from ``(seed, day)`` only."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, day, 0xDA7]).spawn(n)]


def generate_day(
    day: int,
    *,
    start_date: date = date(2026, 1, 1),
    rows: int = 1000,
    seed: int = 7,
    drift: DriftSpec = DriftSpec(),
) -> pd.DataFrame:
    """Generate the rows of one daily partition (``start_date + day``), sorted by event time.

    Deterministic: the same arguments always give the same frame, independent of other days.
    Column dtypes: ``customer_id``/``plan``/``region`` pandas ``string``, ``event_time``
    ``datetime64[ns, UTC]``, ``tenure_months``/``support_calls``/``churned`` ``int64``,
    ``monthly_charges``/``usage_hours``/``last_payment_delay_days`` ``float64`` (the latter with
    about 10% NaN), ``autopay`` ``bool``.
    """
    import pandas as pd

    if isinstance(day, bool) or not isinstance(day, (int, np.integer)) or day < 0:
        raise ValueError(f"day must be an integer >= 0 (days after start_date), got {day!r}")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
    if not isinstance(drift, DriftSpec):
        raise TypeError(f"drift must be a DriftSpec, got {type(drift).__name__}")
    day = int(day)
    rows = int(rows)
    pool = _customer_pool(seed)
    (
        r_pick,
        r_time,
        r_usage,
        r_support,
        r_plan,
        r_charge,
        r_delay,
        r_null,
        r_label,
    ) = _day_streams(seed, day, 9)
    cov = drift.covariate_on(day)
    concept = drift.concept_on(day)

    idx = r_pick.choice(POOL_SIZE, size=rows, replace=rows > POOL_SIZE)
    seconds = np.sort(r_time.integers(0, _SECONDS_PER_DAY, size=rows))
    if rows > POOL_SIZE:  # a customer can appear twice a day: keep (customer_id, event_time) unique
        idx, seconds = _unique_keys(idx, seconds)
    day_start = datetime.combine(start_date + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
    event_time = pd.to_datetime(day_start) + pd.to_timedelta(seconds, unit="s")

    # Slowly evolving attributes.
    tenure = np.minimum(pool.tenure_at_start[idx] + (day + pool.tenure_phase[idx]) // 30, 240)
    plan = np.where(day >= pool.plan_change_day[idx], pool.new_plan[idx], pool.plan[idx])
    autopay = np.where(day >= pool.autopay_switch_day[idx], ~pool.autopay[idx], pool.autopay[idx])

    # Covariate shift: a share of customers is moved to the basic plan (always the same draw).
    u_plan = r_plan.random(size=rows)
    plan = np.where(u_plan < min(0.45 * cov, 1.0), 0, plan)

    season = 1.0 + 0.02 * math.sin(2.0 * math.pi * day / 30.0)  # mild, not enough to count as drift
    usage = _PLAN_USAGE[plan] * pool.usage_level[idx] * season * r_usage.lognormal(0.0, 0.25, size=rows)
    usage = usage * max(1.0 - 0.55 * cov, 0.05)
    usage = np.clip(np.round(usage, 1), 0.0, 744.0)

    support_mean = pool.support_rate[idx] * (1.0 + 1.2 * cov) + 0.01 * np.maximum(10.0 - usage, 0.0)
    support = np.minimum(r_support.poisson(support_mean), 100).astype(np.int64)

    charges = _PLAN_PRICE[plan] * pool.price_factor[idx] * (1.0 + 0.45 * cov)
    charges = charges + np.abs(r_charge.normal(0.0, 4.0, size=rows))  # add-ons
    charges = np.clip(np.round(charges, 2), 0.0, 1000.0)

    delay = pool.delay_level[idx] * r_delay.exponential(1.0, size=rows) * np.where(autopay, 1.0, 5.0)
    delay = np.clip(np.round(delay, 1), 0.0, 365.0)
    delay = np.where(r_null.random(size=rows) < _NULL_DELAY_SHARE, np.nan, delay)

    logit = _churn_logit(
        tenure=tenure,
        charges=charges,
        usage=usage,
        support=support,
        plan=plan,
        autopay=autopay,
        delay=delay,
        customer_effect=pool.customer_effect[idx],
        concept=concept,
    )
    churned = (r_label.random(size=rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    frame = pd.DataFrame(
        {
            "customer_id": pd.array(pool.customer_id[idx], dtype="string"),
            "event_time": event_time,
            "tenure_months": tenure.astype(np.int64),
            "monthly_charges": charges.astype(np.float64),
            "usage_hours": usage.astype(np.float64),
            "support_calls": support,
            "plan": pd.array(np.array(PLANS, dtype=object)[plan], dtype="string"),
            "region": pd.array(np.array(REGIONS, dtype=object)[pool.region[idx]], dtype="string"),
            "autopay": autopay.astype(bool),
            "last_payment_delay_days": delay.astype(np.float64),
            "churned": churned,
        },
        columns=list(COLUMNS),
    )
    return frame


def _unique_keys(idx: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move repeated (customer, second) pairs to a later second; return them sorted by time."""
    if len(idx) > POOL_SIZE * _SECONDS_PER_DAY:
        raise ValueError(f"at most {POOL_SIZE * _SECONDS_PER_DAY} rows per day fit distinct (customer, second) keys")
    seconds = seconds.copy()
    while True:
        keys = idx.astype(np.int64) * _SECONDS_PER_DAY + seconds
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(len(keys), dtype=bool)
        repeated[first] = False
        if not repeated.any():
            break
        seconds[repeated] = (seconds[repeated] + 1) % _SECONDS_PER_DAY
    order = np.argsort(seconds, kind="stable")
    return idx[order], seconds[order]


def day_file_name(day: int, *, start_date: date = date(2026, 1, 1), fmt: str = "csv") -> str:
    """The drop-zone file name of a day: ``churn_YYYY-MM-DD.csv`` (or ``.parquet``)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    return f"{FILE_PREFIX}{(start_date + timedelta(days=day)).isoformat()}.{fmt}"


def _to_csv_text(frame: pd.DataFrame) -> str:
    """CSV text with ISO 8601 UTC timestamps (``2026-01-01T08:15:00Z``), true/false booleans, empty nulls."""
    import pandas as pd

    out = frame.copy()
    for name in out.columns:
        series = out[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            out[name] = series.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif series.dtype == bool:
            out[name] = np.where(series, "true", "false")
    return out.to_csv(index=False, lineterminator="\n")


def _frame_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return _to_csv_text(frame).encode("utf-8")
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def write_day_files(
    drop_zone: Path,
    days: Iterable[int],
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    **generate_kwargs: Any,
) -> list[Path]:
    """Write one file per day into ``drop_zone`` (created if missing) and return their paths.

    File names are ``churn_YYYY-MM-DD.<fmt>``; each file is written atomically (hidden temp name,
    then rename). ``generate_kwargs`` go to :func:`generate_day` (``start_date``, ``rows``,
    ``seed``, ``drift``). Re-writing the same day with the same arguments gives identical bytes.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    unknown = sorted(set(generate_kwargs) - {"start_date", "rows", "seed", "drift"})
    if unknown:
        raise TypeError(f"unknown argument(s) for generate_day: {unknown}")
    drop_zone = Path(drop_zone)
    start_date = generate_kwargs.get("start_date", date(2026, 1, 1))
    written: list[Path] = []
    for day in days:
        frame = generate_day(day, **generate_kwargs)
        target = drop_zone / day_file_name(day, start_date=start_date, fmt=fmt)
        write_atomic(target, _frame_bytes(frame, fmt))
        log.info("wrote %s (%s rows, churn rate %.3f)", target, len(frame), frame["churned"].mean())
        written.append(target)
    return written


def write_bad_files(drop_zone: Path, day: int, **kw: Any) -> dict[str, str]:
    """Write demo files that must end up in quarantine; return ``{file name: what is wrong}``.

    - ``churn_YYYY-MM-DD_bad_rows.csv``: mostly good rows plus three bad ones: ``usage_hours``
      above the contract maximum (744), ``plan`` not among the allowed values, and a non-numeric
      ``support_calls``. The good rows must be accepted, the bad rows quarantined.
    - ``churn_YYYY-MM-DD_missing_column.csv``: a wrong schema (column ``usage_hours`` missing);
      the whole file must be quarantined.

    ``kw`` goes to :func:`generate_day` (``start_date``, ``rows``, ``seed``, ``drift``); the rows
    come from a different random stream than the day's regular file (``seed`` offset), so their
    ``(customer_id, event_time)`` keys differ from the regular file's (almost surely).
    Deterministic: the same arguments give the same files and descriptions.
    """
    unknown = sorted(set(kw) - {"start_date", "rows", "seed", "drift"})
    if unknown:
        raise TypeError(f"unknown argument(s) for generate_day: {unknown}")
    drop_zone = Path(drop_zone)
    start_date = kw.get("start_date", date(2026, 1, 1))
    seed = int(kw.get("seed", 7)) + _BAD_SEED_OFFSET
    rows = int(kw.get("rows", _BAD_ROWS_DEFAULT))
    if rows < 10:
        raise ValueError(f"write_bad_files needs rows >= 10 to mix good and bad rows, got {rows}")
    gen_kw = {"start_date": start_date, "rows": rows, "seed": seed, "drift": kw.get("drift", DriftSpec())}
    stem = day_file_name(day, start_date=start_date, fmt="csv")[: -len(".csv")]
    results: dict[str, str] = {}

    # 1) Bad rows mixed with good rows. Values are written as text so a non-numeric one fits.
    frame = generate_day(day, **gen_kw)
    text = _csv_frame_as_text(frame)
    positions = (rows // 6, rows // 2, (5 * rows) // 6)
    text.loc[positions[0], "usage_hours"] = "9999.0"
    text.loc[positions[1], "plan"] = "platinum"
    text.loc[positions[2], "support_calls"] = "lots"
    name = f"{stem}_bad_rows.csv"
    write_atomic(drop_zone / name, text.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    where = [f"data row {p + 1} (file line {p + 2})" for p in positions]  # 1-based, header is line 1
    results[name] = (
        f"3 bad rows among {rows}: {where[0]} usage_hours=9999.0 is above the maximum 744; "
        f"{where[1]} plan='platinum' is not one of {list(PLANS)}; "
        f"{where[2]} support_calls='lots' is not numeric; the other {rows - 3} rows are valid"
    )

    # 2) Wrong schema: a required column is missing.
    frame = generate_day(day, **{**gen_kw, "seed": seed + 1})
    name = f"{stem}_missing_column.csv"
    write_atomic(drop_zone / name, _to_csv_text(frame.drop(columns=["usage_hours"])).encode("utf-8"))
    results[name] = f"wrong schema: required column 'usage_hours' is missing ({rows} rows, all rejected)"

    for file_name, problem in results.items():
        log.info("wrote bad demo file %s: %s", drop_zone / file_name, problem)
    return results


def delayed_labels(
    scored: pd.DataFrame,
    scored_at: pd.Series | datetime,
    *,
    seed: int = 7,
    batch: int = 0,
    missing_share: float = 0.1,
    min_delay_minutes: float = 1.0,
    max_delay_hours: float = 48.0,
) -> pd.DataFrame:
    """The labels that land after the rows of ``scored`` were scored at ``scored_at``: a label drop.

    ``scored``: generated rows (:func:`generate_day`) that a client sent for scoring; their
    ``churned`` is the outcome that becomes known later. Each row's label arrives between
    ``min_delay_minutes`` after its scoring time and ``max_delay_hours`` after it (its
    ``event_time`` in the label file is that arrival); a ``missing_share`` of the rows never get a
    label. Columns: ``customer_id``, ``event_time``, ``churned`` (the contract's entity key, event
    time and target), ordered by label time. Deterministic: the same arguments give the same labels;
    give each scored batch its own ``batch`` number so their delays and gaps are drawn independently.
    """
    import pandas as pd

    if not 0 <= missing_share < 1:
        raise ValueError(f"missing_share must be in [0, 1), got {missing_share!r}")
    if not 0 < min_delay_minutes <= max_delay_hours * 60:
        raise ValueError("need 0 < min_delay_minutes <= max_delay_hours * 60")
    n = len(scored)
    keys = scored["customer_id"].astype(str).tolist()
    entropy = [seed, 0x1ABE1, batch]
    r_missing, r_delay = (np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(2))
    arrives = r_missing.random(n) >= missing_share
    delay_seconds = r_delay.uniform(min_delay_minutes * 60, max_delay_hours * 3600, size=n).round()
    at = (
        pd.Series(pd.to_datetime(scored_at, utc=True), index=range(n))
        if isinstance(scored_at, datetime)
        else pd.to_datetime(pd.Series(scored_at).reset_index(drop=True), utc=True)
    )
    labels = pd.DataFrame(
        {
            "customer_id": pd.array(keys, dtype="string"),
            "event_time": at + pd.to_timedelta(delay_seconds, unit="s"),
            "churned": scored["churned"].to_numpy(dtype=np.int64),
        }
    )[arrives]
    return labels.sort_values(["event_time", "customer_id"], kind="stable").reset_index(drop=True)


def write_label_file(folder: Path, name: str, labels: pd.DataFrame) -> Path:
    """Write ``labels`` (:func:`delayed_labels`) as ``<folder>/<name>.csv``, atomically, and return its path."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"a label file name is a plain name, got {name!r}")
    target = Path(folder) / f"{name}.csv"
    write_atomic(target, _to_csv_text(labels).encode("utf-8"))
    log.info("wrote %s (%d delayed labels)", target, len(labels))
    return target


def _csv_frame_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as strings exactly as :func:`_to_csv_text` would write them (nulls stay empty)."""
    import io

    import pandas as pd

    return pd.read_csv(io.StringIO(_to_csv_text(frame)), dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------------------- CLI
def parse_days(spec: str) -> list[int]:
    """Parse ``"0-2"``, ``"4"`` or ``"0,3,5-6"`` into a sorted list of distinct day numbers."""
    days: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                days.update(range(lo, hi + 1))
            else:
                days.add(int(part))
        except ValueError:
            raise ValueError(f"invalid day spec {part!r} in {spec!r}; use e.g. '0-2', '4' or '0,3,5-6'") from None
    if not days or min(days) < 0:
        raise ValueError(f"day spec {spec!r} must name at least one day, all >= 0")
    return sorted(days)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops_core.demo_data",
        description="Write deterministic daily churn demo files into a drop zone.",
    )
    parser.add_argument("--drop-zone", required=True, type=Path, help="folder to write the files into")
    parser.add_argument("--days", default="0", help="days after --start-date: '0-2', '4' or '0,3,5-6' (default 0)")
    parser.add_argument("--start-date", default="2026-01-01", type=date.fromisoformat, help="date of day 0")
    parser.add_argument("--drift", choices=DRIFT_KINDS, default="none", help="drift to simulate")
    parser.add_argument("--drift-start", type=int, default=0, help="first day with drift (default 0)")
    parser.add_argument("--drift-strength", type=float, default=1.0, help="drift strength (default 1.0)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per day (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--format", dest="fmt", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--bad-files", action="store_true", help="also write files that must be quarantined")
    args = parser.parse_args(argv)
    try:
        days = parse_days(args.days)
        drift = DriftSpec(kind=args.drift, start_day=args.drift_start, strength=args.drift_strength)
        kwargs = {"start_date": args.start_date, "rows": args.rows, "seed": args.seed, "drift": drift}
        paths = write_day_files(args.drop_zone, days, fmt=args.fmt, **kwargs)
        bad_kwargs = {k: v for k, v in kwargs.items() if k != "rows"}  # bad files stay small
        bad = write_bad_files(args.drop_zone, days[0], **bad_kwargs) if args.bad_files else {}
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    drift_note = "no drift" if drift.kind == "none" else f"{drift.kind} drift from day {drift.start_day}"
    for day, path in zip(days, paths, strict=True):
        note = drift_note if drift.kind == "none" or day >= drift.start_day else "no drift"
        print(f"wrote {path} (day {day}, {args.rows} rows, {note})")
    for name, problem in bad.items():
        print(f"wrote {args.drop_zone / name} (bad on purpose: {problem})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
