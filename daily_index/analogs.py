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


def standardised_changes(values: np.ndarray, unit: str) -> np.ndarray:
    """Each observation's change over the move scale of the changes before it.

    NaN for the first observation and wherever fewer than 10 earlier changes are known.
    """
    out = np.full(len(values), np.nan)
    if len(values) < MIN_CHANGES + 2:
        return out
    changes = pd.Series(_changes(values, unit))
    finite = changes.dropna()
    earlier_std = finite.rolling(SCALE_WINDOW, min_periods=MIN_CHANGES).std(ddof=1).shift(1)
    moved = finite.abs().where(finite != 0)
    earlier_median = moved.rolling(SCALE_WINDOW, min_periods=1).median().shift(1)
    enough = finite.notna().astype(float).rolling(SCALE_WINDOW, min_periods=1).sum().shift(1)
    scale = np.fmax(earlier_std.to_numpy(), earlier_median.to_numpy())
    scale[~(enough.to_numpy() >= MIN_CHANGES)] = np.nan
    change = finite.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = change / scale
    z[(scale == 0) & (change == 0)] = 0.0
    z[(scale == 0) & (change != 0)] = np.nan
    out[1:][finite.index.to_numpy()] = z
    return out


def build_history(
    specs: Sequence[KpiSpec], histories: Mapping[str, pd.DataFrame], end: date
) -> HistoryMatrix | None:
    """The matrix over every stored day up to `end` (None when nothing is stored)."""
    series = {}
    for spec in specs:
        frame = histories.get(spec.id)
        if frame is None or not len(frame):
            continue
        days = pd.to_datetime(pd.Series(frame["date"])).dt.date
        values = pd.to_numeric(pd.Series(frame["value"]), errors="coerce").to_numpy(float)
        keep = np.isfinite(values) & (days.to_numpy() <= end)
        if keep.sum() < 2:
            continue
        pairs = sorted(zip(days[keep], values[keep], strict=True))
        series[spec.id] = (spec.change_unit, [d for d, _ in pairs], np.array([v for _, v in pairs]))
    if not series:
        return None
    first = min(d[0] for _, d, _ in series.values())
    days = [first + timedelta(days=n) for n in range((end - first).days + 1)]
    ids = list(series)
    z = np.full((len(days), len(ids)), np.nan)
    level = np.full((len(days), len(ids)), np.nan)
    for column, kpi_id in enumerate(ids):
        unit, obs_days, values = series[kpi_id]
        rows = np.array([(d - first).days for d in obs_days])
        z[rows, column] = standardised_changes(values, unit)
        observed = np.full(len(days), np.nan)
        observed[rows] = values
        level[:, column] = pd.Series(observed).ffill().to_numpy()
    return HistoryMatrix(days=days, ids=ids, units=[series[i][0] for i in ids], z=z, level=level)


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
