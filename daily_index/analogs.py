"""Historical analog days: past days that looked like today, and what followed them.

History, not a forecast.

A day's picture is the vector of its standardised KPI changes: each KPI's change from its
previous observation (in the KPI's change unit) over its move scale (`checks.move_scale` of
the up to 90 changes before it), the same number as the report's σ. Two days are compared
by the cosine of their vectors over the KPIs present on both; a past day sharing fewer
than half of today's KPIs (or fewer than 3) is skipped. Each standardised change is clipped
to ±8 so that one freak move cannot decide the match alone.

What followed an analog day: each chosen KPI's change from that day to 7 and 30 days later
(last observation on or before each day), as median and range over the analog days whose
horizon has already passed by today.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from daily_index.registry import KpiSpec

K = 5
HORIZONS = (7, 30)
SCALE_WINDOW = 90
MIN_CHANGES = 10
MIN_OVERLAP = 3
MIN_OVERLAP_SHARE = 0.5
CLIP = 8.0


@dataclass(frozen=True)
class HistoryMatrix:
    """Calendar days × KPIs: standardised changes and the last observed values."""

    days: list[date]
    ids: list[str]
    units: list[str]
    z: np.ndarray
    """(days, KPIs): standardised change on the days a KPI was observed, NaN otherwise."""
    level: np.ndarray
    """(days, KPIs): the last observation on or before each day (NaN before the first)."""

    def index_of(self, day: date) -> int:
        offset = (day - self.days[0]).days
        if not 0 <= offset < len(self.days):
            raise KeyError(day)
        return offset


def _changes(values: np.ndarray, unit: str) -> np.ndarray:
    """Observation-to-observation changes in `unit` (the report's `change_between`)."""
    return _pairwise(values[:-1], values[1:], unit)


def _rolling_median_above_std(moved: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Where a window's median nonzero move can exceed its std (a cheap necessary test).

    A median above s needs at least half of the window's values above s; continuous series
    almost never pass, series that mostly sit still (policy rates) do.
    """
    rows, columns = moved.shape
    padded = np.vstack([np.full((SCALE_WINDOW - 1, columns), np.nan), moved])
    need = np.zeros((rows, columns), dtype=bool)
    known = np.isfinite(padded)
    for start in range(0, columns, 32):  # bounded temporaries: rows x 32 x 90 booleans
        part = slice(start, start + 32)
        windows = sliding_window_view(padded[:, part], SCALE_WINDOW, axis=0)
        counted = sliding_window_view(known[:, part], SCALE_WINDOW, axis=0).sum(axis=2)
        with np.errstate(invalid="ignore"):
            above = (windows > std[:, part, None]).sum(axis=2)
        need[:, part] = (counted > 0) & (2 * above >= counted)
    return need


def _scaled(changes: np.ndarray) -> np.ndarray:
    """Each row's change over the move scale of the (up to) 90 rows before it, per column.

    Columns are right-aligned sequences of finite changes (NaN padding on top), so rolling
    over rows is rolling over each KPI's own observations: one pass for every KPI. The
    move scale is `checks.move_scale`: the std, but at least the median nonzero move; the
    (slow) rolling median is only computed for the KPIs where it can exceed the std.
    """
    frame = pd.DataFrame(changes)
    std = frame.rolling(SCALE_WINDOW, min_periods=MIN_CHANGES).std(ddof=1).to_numpy()
    absolute = np.abs(changes)
    moved = np.where(absolute != 0, absolute, np.nan)
    scale = std.copy()
    columns = np.flatnonzero(_rolling_median_above_std(moved, std).any(axis=0))
    if len(columns):
        median = pd.DataFrame(moved[:, columns]).rolling(SCALE_WINDOW, min_periods=1).median()
        floored = np.fmax(std[:, columns], median.to_numpy())
        floored[np.isnan(std[:, columns])] = np.nan
        scale[:, columns] = floored
    # The scale of row t is that of the rows before it.
    scale = np.vstack([np.full((1, changes.shape[1]), np.nan), scale[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = changes / scale
    z[(scale == 0) & (changes == 0)] = 0.0
    z[(scale == 0) & (changes != 0)] = np.nan
    return z


def _standardise(columns: Sequence[tuple[np.ndarray, str]]) -> list[np.ndarray]:
    """For each (ascending observations, unit): each observation's standardised change."""
    finite_changes, positions = [], []
    for values, unit in columns:
        changes = _changes(values, unit)
        where = np.flatnonzero(np.isfinite(changes))
        finite_changes.append(changes[where])
        positions.append(where + 1)
    longest = max((len(c) for c in finite_changes), default=0)
    stacked = np.full((longest, len(columns)), np.nan)
    for column, changes in enumerate(finite_changes):
        if len(changes):
            stacked[longest - len(changes) :, column] = changes
    z = _scaled(stacked) if longest else stacked
    out = []
    for column, ((values, _), where) in enumerate(zip(columns, positions, strict=True)):
        result = np.full(len(values), np.nan)
        if len(where):
            result[where] = z[longest - len(where) :, column]
        out.append(result)
    return out


def standardised_changes(values: np.ndarray, unit: str) -> np.ndarray:
    """Each observation's change over the move scale of the changes before it.

    NaN for the first observation and wherever fewer than 10 earlier changes are known.
    """
    return _standardise([(np.asarray(values, dtype=float), unit)])[0]


def _ordinal(day: object) -> int:
    if isinstance(day, date):  # also a pandas Timestamp (a datetime)
        return day.toordinal()
    return date.fromisoformat(str(day)[:10]).toordinal()


def _observations(frame: pd.DataFrame, end: date) -> tuple[np.ndarray, np.ndarray]:
    """Days (proleptic ordinals) and values of the finite observations up to `end`."""
    column = frame["date"].tolist()
    try:
        days = np.array([d.toordinal() for d in column], dtype=np.int64)
    except AttributeError:  # ISO strings
        days = np.array([_ordinal(d) for d in column], dtype=np.int64)
    values = pd.to_numeric(pd.Series(frame["value"]), errors="coerce").to_numpy(float)
    keep = np.isfinite(values) & (days <= end.toordinal())
    days, values = days[keep], values[keep]
    order = np.argsort(days, kind="stable")
    return days[order], values[order]


def build_history(
    specs: Sequence[KpiSpec], histories: Mapping[str, pd.DataFrame], end: date
) -> HistoryMatrix | None:
    """The matrix over every stored day up to `end` (None when nothing is stored)."""
    series = {}
    for spec in specs:
        frame = histories.get(spec.id)
        if frame is None or not len(frame):
            continue
        days, values = _observations(frame, end)
        if len(values) >= 2:
            series[spec.id] = (spec.change_unit, days, values)
    if not series:
        return None
    first = min(days[0] for _, days, _ in series.values())
    count = end.toordinal() - int(first) + 1
    ids = list(series)
    standardised = _standardise([(values, unit) for unit, _, values in series.values()])
    z = np.full((count, len(ids)), np.nan)
    observed = np.full((count, len(ids)), np.nan)
    for column, (unit_days_values, scaled) in enumerate(
        zip(series.values(), standardised, strict=True)
    ):
        _, days, values = unit_days_values
        rows = days - first
        z[rows, column] = scaled
        observed[rows, column] = values
    level = pd.DataFrame(observed).ffill().to_numpy()
    start = date.fromordinal(int(first))
    return HistoryMatrix(
        days=[start + timedelta(days=n) for n in range(count)],
        ids=ids,
        units=[series[i][0] for i in ids],
        z=z,
        level=level,
    )


def similarities(z: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cosine of every day's vector with the target day's over the KPIs both have.

    Returns (similarity per day, NaN where undefined; overlap per day; KPIs of the target).
    """
    clipped = np.clip(z, -CLIP, CLIP)
    present = np.isfinite(clipped)
    values = np.where(present, clipped, 0.0)
    today, today_present = values[target], present[target].astype(float)
    overlap = present.astype(float) @ today_present
    dot = values @ today
    norm_past = np.sqrt((values**2) @ today_present)
    norm_today = np.sqrt(present.astype(float) @ (today**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = dot / (norm_past * norm_today)
    similarity[~np.isfinite(similarity)] = np.nan
    return similarity, overlap.astype(int), int(today_present.sum())


@dataclass(frozen=True)
class AnalogDay:
    day: date
    similarity: float
    overlap: int
    """KPIs compared (present on both days)."""


@dataclass(frozen=True)
class Followed:
    kpi_id: str
    horizon: int
    unit: str
    median: float
    low: float
    high: float
    count: int
    """Analog days whose horizon has passed."""


@dataclass(frozen=True)
class Analogs:
    day: date
    kpis_today: int
    days: list[AnalogDay] = field(default_factory=list)
    followed: list[Followed] = field(default_factory=list)
    reason: str | None = None
    """Why no analog day is given (too little history, too few KPIs today)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["day"] = self.day.isoformat()
        for entry in data["days"]:
            entry["day"] = entry["day"].isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Analogs:
        return cls(
            day=date.fromisoformat(data["day"]),
            kpis_today=int(data["kpis_today"]),
            days=[
                AnalogDay(date.fromisoformat(d["day"]), float(d["similarity"]), int(d["overlap"]))
                for d in data.get("days") or []
            ],
            followed=[Followed(**f) for f in data.get("followed") or []],
            reason=data.get("reason"),
        )


def find_analogs(
    matrix: HistoryMatrix,
    day: date,
    *,
    k: int = K,
    follow: Sequence[str] = (),
    horizons: Sequence[int] = HORIZONS,
) -> Analogs:
    """The k past days most like `day` and what followed them for the KPIs in `follow`."""
    try:
        target = matrix.index_of(day)
    except KeyError:
        return Analogs(day=day, kpis_today=0, reason=f"no stored KPI history up to {day}")
    similarity, overlap, count = similarities(matrix.z, target)
    if count < MIN_OVERLAP:
        return Analogs(
            day=day,
            kpis_today=count,
            reason=f"only {count} KPI(s) with a standardised change today "
            f"(at least {MIN_OVERLAP} needed)",
        )
    needed = max(MIN_OVERLAP, math.ceil(MIN_OVERLAP_SHARE * count))
    eligible = np.zeros(len(similarity), dtype=bool)
    eligible[:target] = True
    eligible &= (overlap >= needed) & np.isfinite(similarity)
    candidates = np.flatnonzero(eligible)
    if not len(candidates):
        return Analogs(
            day=day,
            kpis_today=count,
            reason=f"no earlier day shares at least {needed} of today's {count} KPIs",
        )
    order = candidates[np.argsort(-similarity[candidates], kind="stable")][:k]
    chosen = [
        AnalogDay(matrix.days[i], round(float(similarity[i]), 4), int(overlap[i])) for i in order
    ]
    followed = []
    columns = {kpi_id: n for n, kpi_id in enumerate(matrix.ids)}
    for kpi_id in follow:
        column = columns.get(kpi_id)
        if column is None:
            continue
        unit = matrix.units[column]
        for horizon in horizons:
            starts = np.array([i for i in order if i + horizon <= target], dtype=int)
            if not len(starts):
                continue
            before = matrix.level[starts, column]
            after = matrix.level[starts + horizon, column]
            change = _pairwise(before, after, unit)
            change = change[np.isfinite(change)]
            if not len(change):
                continue
            followed.append(
                Followed(
                    kpi_id=kpi_id,
                    horizon=horizon,
                    unit=unit,
                    median=round(float(np.median(change)), 6),
                    low=round(float(change.min()), 6),
                    high=round(float(change.max()), 6),
                    count=len(change),
                )
            )
    return Analogs(day=day, kpis_today=count, days=chosen, followed=followed)


def _pairwise(before: np.ndarray, after: np.ndarray, unit: str) -> np.ndarray:
    if unit == "pct":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (after - before) / np.abs(before) * 100.0
        out[before == 0] = np.nan
        return out
    if unit == "bp":
        return (after - before) * 100.0
    return after - before


def analog_days(
    specs: Sequence[KpiSpec],
    histories: Mapping[str, pd.DataFrame],
    day: date,
    *,
    follow: Sequence[str] = (),
    k: int = K,
) -> Analogs:
    """The analogs of `day` over the stored histories (each a `date`, `value` frame)."""
    matrix = build_history(specs, histories, day)
    if matrix is None:
        return Analogs(day=day, kpis_today=0, reason="no stored KPI history")
    return find_analogs(matrix, day, k=k, follow=follow)
