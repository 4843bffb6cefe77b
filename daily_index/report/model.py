"""The day's KPI table: what charts, analysis, PDF and delivery all read.

Built once per report from the KPI series and the day's fetch errors. A KPI without a
value for the day is `missing` (or `failed` with the source's reason); its value is None,
never zero.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

import pandas as pd

from daily_index.registry import KpiSpec
from daily_index.storage.objectstore import ObjectStore
from daily_index.storage.series import KpiSeriesStore, read_fetch_status

Status = Literal["ok", "missing", "failed"]
CHANGE_HORIZONS = (1, 7, 30)


@dataclass(frozen=True)
class KpiRow:
    spec: KpiSpec
    value: float | None
    status: Status
    changes: dict[int, float | None]
    """Percent change over 1, 7 and 30 days (None where either end is missing)."""
    crossed: Literal["high", "low"] | None = None
    reason: str | None = None
    """Why the KPI is missing or failed, in the source's words (data, not instructions)."""
    history: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    """The chart window: columns `date` and `value`, one row per stored day."""

    @property
    def kpi_id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class DayTable:
    day: date
    rows: tuple[KpiRow, ...]
    window_days: int

    @property
    def complete(self) -> bool:
        return all(r.status == "ok" for r in self.rows)

    @property
    def missing(self) -> list[KpiRow]:
        return [r for r in self.rows if r.status != "ok"]

    def row(self, kpi_id: str) -> KpiRow:
        for row in self.rows:
            if row.kpi_id == kpi_id:
                return row
        raise KeyError(kpi_id)


def pct_change(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return (now - before) / abs(before) * 100.0


def threshold_crossed(spec: KpiSpec, value: float | None) -> Literal["high", "low"] | None:
    limits = spec.analysis_config.alert_thresholds
    if value is None:
        return None
    if limits.high is not None and value >= limits.high:
        return "high"
    if limits.low is not None and value <= limits.low:
        return "low"
    return None


def build_row(spec: KpiSpec, history: pd.DataFrame, day: date, reason: str | None) -> KpiRow:
    by_day = dict(zip(history["date"], history["value"], strict=True)) if len(history) else {}
    value = by_day.get(day)
    value = None if value is None else float(value)
    changes = {h: pct_change(value, by_day.get(day - timedelta(days=h))) for h in CHANGE_HORIZONS}
    status: Status = "ok" if value is not None else ("failed" if reason else "missing")
    return KpiRow(
        spec=spec,
        value=value,
        status=status,
        changes=changes,
        crossed=threshold_crossed(spec, value),
        reason=None if value is not None else reason,
        history=history[["date", "value"]].reset_index(drop=True) if len(history) else history,
    )


def build_day_table(
    specs: list[KpiSpec],
    series: KpiSeriesStore,
    day: date,
    *,
    window_days: int = 90,
    errors: dict[str, str] | None = None,
) -> DayTable:
    """Read each KPI's window (one GET per KPI) and build the table for `day`."""
    start = day - timedelta(days=max(window_days - 1, max(CHANGE_HORIZONS)))
    errors = errors or {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        histories = list(pool.map(lambda spec: series.read(spec.id, start, day), specs))
    rows = tuple(
        build_row(spec, history, day, errors.get(spec.id))
        for spec, history in zip(specs, histories, strict=True)
    )
    return DayTable(day=day, rows=rows, window_days=window_days)


def load_day_table(
    specs: list[KpiSpec], store: ObjectStore, day: date, *, window_days: int = 90
) -> DayTable:
    """The day's table from the store: series windows plus the day's fetch failures."""
    status = read_fetch_status(store, day)
    errors = {
        kpi_id: entry.get("reason", "fetch failed")
        for kpi_id, entry in status.items()
        if entry.get("status") == "failed"
    }
    return build_day_table(
        specs, KpiSeriesStore(store), day, window_days=window_days, errors=errors
    )
