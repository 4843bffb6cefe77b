"""The day's KPI table: what charts, analysis, PDF, delivery and the CLI all read.

Built once per reader from the KPI series and the day's fetch status (`status/<date>.json`).
A value belongs to the day only if it was observed that day. A KPI without one is:

- `gap`: no observation was expected (outside its calendar, beyond its source's history);
  never counted as failed or missing; the row keeps the last observation and its date;
- `failed`: this day's fetch failed (with the source's reason);
- `missing`: nothing was recorded for the day.

A KPI whose value was stored by an earlier fetch and whose latest fetch failed is `failed`
with its value kept (`earlier_fetch`): the failure is shown and counted, the value is not
lost. Values are None, never zero, where there is none.

Changes are in the KPI's change unit (percent, percentage points, basis points, index
points) against the last observation on or before the horizon day, so a business-day
series on a Monday gets its 1-day change against Friday. `zscore` tells how unusual the
day's move is for that KPI: its change from the previous observation over the standard
deviation of the 90 observation-to-observation changes before it. `check` holds the
KPI-day's data-quality verdicts (`daily_index.checks`, the rules of its asset check).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from daily_index.calendars import calendar_gap
from daily_index.checks import CheckOutcome, Verdict, evaluate, move_scale
from daily_index.formatting import Change, change_between
from daily_index.registry import KpiSpec
from daily_index.storage.objectstore import ObjectStore
from daily_index.storage.series import KpiSeriesStore, read_fetch_status

Status = Literal["ok", "missing", "failed", "gap"]
CHANGE_HORIZONS = (1, 7, 30)
ZSCORE_WINDOW = 90
"""Observation-to-observation changes the day's move is measured against."""
ZSCORE_MIN_CHANGES = 10
"""Fewer earlier changes than this and the move has no z-score."""


@dataclass(frozen=True)
class Observation:
    day: date
    value: float


@dataclass(frozen=True)
class KpiRow:
    spec: KpiSpec
    value: float | None
    """The day's observation (None when there is none; never zero in its place)."""
    status: Status
    changes: dict[int, Change | None]
    """Change over 1, 7 and 30 days in the KPI's change unit (None where unknown)."""
    crossed: Literal["high", "low"] | None = None
    reason: str | None = None
    """Why the KPI failed, is missing or has a gap, in the source's words (data, not
    instructions)."""
    zscore: float | None = None
    """The day's move over the KPI's recent volatility (None: too little history)."""
    last: Observation | None = None
    """The last observation on or before the day (the day's own when there is one)."""
    earlier_fetch: bool = False
    """The value was stored by an earlier fetch; the latest fetch of the day failed."""
    check: CheckOutcome | None = None
    """The KPI-day's data-quality verdicts (the same rules as its Dagster asset check)."""
    history: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    """The chart window: columns `date` and `value`, one row per stored day."""

    @property
    def kpi_id(self) -> str:
        return self.spec.id

    @property
    def change_unit(self) -> str:
        return self.spec.change_unit

    @property
    def is_problem(self) -> bool:
        """A failure or a missing value: what the CLI counts and the report lists as such."""
        return self.status in ("failed", "missing")

    @property
    def check_findings(self) -> list[Verdict]:
        """Failed quality verdicts beyond a missing value (which the status already says)."""
        if self.check is None:
            return []
        return [v for v in self.check.failed if v.rule != "present"]

    @property
    def as_of(self) -> Observation | None:
        """The last observation before the day, for a row without the day's own value."""
        return self.last if self.value is None else None


@dataclass(frozen=True)
class DayTable:
    day: date
    rows: tuple[KpiRow, ...]
    window_days: int

    @property
    def complete(self) -> bool:
        """Every KPI has its value for the day or expected none."""
        return not self.missing

    @property
    def missing(self) -> list[KpiRow]:
        """KPIs without a value although one was expected (failed or missing; no gaps)."""
        return [r for r in self.rows if r.value is None and r.is_problem]

    @property
    def problems(self) -> list[KpiRow]:
        """KPIs whose fetch failed (also over an earlier value) or that are missing."""
        return [r for r in self.rows if r.is_problem]

    @property
    def flagged(self) -> list[KpiRow]:
        """KPIs whose value failed a data-quality rule (range, stale, jump, ...)."""
        return [r for r in self.rows if r.check_findings]

    @property
    def gaps(self) -> list[KpiRow]:
        """KPIs with no observation expected for the day."""
        return [r for r in self.rows if r.status == "gap"]

    def row(self, kpi_id: str) -> KpiRow:
        for row in self.rows:
            if row.kpi_id == kpi_id:
                return row
        raise KeyError(kpi_id)


def threshold_crossed(spec: KpiSpec, value: float | None) -> Literal["high", "low"] | None:
    limits = spec.analysis_config.alert_thresholds
    if value is None:
        return None
    if limits.high is not None and value >= limits.high:
        return "high"
    if limits.low is not None and value <= limits.low:
        return "low"
    return None


def _observations(history: pd.DataFrame, day: date) -> tuple[list[date], np.ndarray]:
    """Dates and values of the observations on or before `day`, ascending."""
    if history is None or not len(history):
        return [], np.array([], dtype=float)
    pairs = sorted(
        (_as_date(d), float(v))
        for d, v in zip(history["date"], history["value"], strict=True)
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    )
    pairs = [(d, v) for d, v in pairs if d <= day]
    return [d for d, _ in pairs], np.array([v for _, v in pairs], dtype=float)


def _as_date(value: Any) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def move_zscore(values: np.ndarray, unit: str) -> float | None:
    """The last observation's change over the std of the (up to) 90 changes before it.

    Changes are taken in `unit` (percent, pp, bp, points), like the table shows them.
    None with fewer than 10 earlier changes, or when they never moved and the day did.
    """
    if len(values) < ZSCORE_MIN_CHANGES + 2:
        return None
    tail = values[-(ZSCORE_WINDOW + 2) :]
    changes = [
        change_between(float(now), float(before), unit)  # type: ignore[arg-type]
        for before, now in zip(tail[:-1], tail[1:], strict=True)
    ]
    numbers = np.array([c.value if c is not None else np.nan for c in changes])
    today, earlier = numbers[-1], numbers[:-1]
    earlier = earlier[np.isfinite(earlier)]
    if not math.isfinite(today) or len(earlier) < ZSCORE_MIN_CHANGES:
        return None
    sigma = move_scale(earlier)
    if sigma == 0:
        return 0.0 if today == 0 else None
    return float(today) / sigma


def _change(
    dates: list[date], values: np.ndarray, value: float, day: date, horizon: int, unit: str
) -> Change | None:
    """Against the last observation on or before `day - horizon`."""
    target = day - timedelta(days=horizon)
    index = (
        int(np.searchsorted(np.array(dates, dtype="datetime64[D]"), np.datetime64(target), "right"))
        - 1
    )
    if index < 0:
        return None
    return change_between(value, float(values[index]), unit)  # type: ignore[arg-type]


def build_row(
    spec: KpiSpec,
    history: pd.DataFrame,
    day: date,
    reason: str | None = None,
    *,
    fetch: str | None = None,
    window_start: date | None = None,
) -> KpiRow:
    """One KPI's row for `day` from its stored series and the day's fetch status.

    Args:
        spec: The KPI.
        history: Its stored observations (`date`, `value`), at least up to `day`.
        day: The table's day.
        reason: Why the fetch failed or why no observation is expected.
        fetch: The day's fetch status (`ok`, `failed`, `gap`); without one, a `reason`
            means the fetch failed.
        window_start: First day kept in the row's `history` (default: all of it).
    """
    if fetch is None and reason:
        fetch = "failed"
    dates, values = _observations(history, day)
    value = float(values[-1]) if dates and dates[-1] == day else None
    unit = spec.change_unit
    last = Observation(dates[-1], float(values[-1])) if dates else None
    earlier_fetch = False
    if value is not None:
        status: Status = "failed" if fetch == "failed" else "ok"
        earlier_fetch = fetch == "failed"
        reason = reason if earlier_fetch else None
        changes = {h: _change(dates, values, value, day, h, unit) for h in CHANGE_HORIZONS}
        zscore = move_zscore(values, unit)
    else:
        changes = dict.fromkeys(CHANGE_HORIZONS)
        zscore = None
        if fetch == "gap":
            status = "gap"
        elif fetch == "failed":
            status, reason = "failed", reason or "fetch failed"
        elif (gap := calendar_gap(spec, day)) is not None:
            status, reason = "gap", reason or gap
        else:
            status = "missing"
    check = evaluate(
        spec,
        day,
        value,
        history[["date", "value"]] if len(history) else None,
        status="ok" if status == "ok" else "gap" if status == "gap" else "failed",
        reason=reason,
    )
    kept = history
    if len(history):
        kept = history[["date", "value"]]
        if window_start is not None:
            kept = kept[[_as_date(d) >= window_start for d in kept["date"]]]
        kept = kept.reset_index(drop=True)
    return KpiRow(
        spec=spec,
        value=value,
        status=status,
        changes=changes,
        crossed=threshold_crossed(spec, value),
        reason=reason,
        zscore=zscore,
        last=last,
        earlier_fetch=earlier_fetch,
        check=check,
        history=kept,
    )


def build_day_table(
    specs: list[KpiSpec],
    series: KpiSeriesStore,
    day: date,
    *,
    window_days: int = 90,
    statuses: Mapping[str, Mapping[str, Any]] | None = None,
) -> DayTable:
    """Read each KPI's series (one GET per KPI) and build the table for `day`.

    Args:
        specs: The KPIs, in table order.
        series: Where their series are stored.
        day: The table's day.
        window_days: Days of history each row keeps for its chart.
        statuses: The day's fetch status per KPI id (`status`, `reason`), as the KPI step
            records it in `status/<date>.json`.
    """
    # The whole series comes in one GET anyway; changes and z-scores look further back
    # than the chart (the 90 changes of a weekly series span almost two years).
    start = day - timedelta(days=max(window_days - 1, max(CHANGE_HORIZONS)))
    statuses = statuses or {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        histories = list(pool.map(lambda spec: series.read(spec.id, None, day), specs))
    rows = []
    for spec, history in zip(specs, histories, strict=True):
        entry = statuses.get(spec.id) or {}
        rows.append(
            build_row(
                spec,
                history,
                day,
                entry.get("reason"),
                fetch=entry.get("status"),
                window_start=start,
            )
        )
    return DayTable(day=day, rows=tuple(rows), window_days=window_days)


def day_table_to_dict(table: DayTable) -> dict[str, Any]:
    """The table as JSON-ready data, for one build per run.

    Each row keeps its chart window's history (the PDF's sparklines need it): 90 pairs a KPI,
    about 2 kB.
    """

    def change(c: Change | None) -> list[Any] | None:
        return None if c is None else [c.value, c.unit]

    return {
        "day": table.day.isoformat(),
        "window_days": table.window_days,
        "rows": [
            {
                "kpi_id": row.kpi_id,
                "value": row.value,
                "status": row.status,
                "changes": {str(h): change(c) for h, c in row.changes.items()},
                "crossed": row.crossed,
                "reason": row.reason,
                "zscore": row.zscore,
                "last": [row.last.day.isoformat(), row.last.value] if row.last else None,
                "earlier_fetch": row.earlier_fetch,
                "verdicts": None
                if row.check is None
                else [[v.rule, v.passed, v.severity, v.detail] for v in row.check.verdicts],
                "history": _history_pairs(row, table.day - timedelta(days=table.window_days - 1)),
            }
            for row in table.rows
        ],
    }


def day_table_from_dict(data: Mapping[str, Any], specs: list[KpiSpec]) -> DayTable:
    """Read back `day_table_to_dict`; rows come in `specs` order, with today's specs.

    Raises:
        KeyError: a KPI of `specs` is not in the data (the table was built for other KPIs).
    """
    day = date.fromisoformat(data["day"])
    by_id = {row["kpi_id"]: row for row in data["rows"]}
    rows = []
    for spec in specs:
        raw = by_id[spec.id]
        last = raw["last"]
        verdicts = raw["verdicts"]
        rows.append(
            KpiRow(
                spec=spec,
                value=raw["value"],
                status=raw["status"],
                changes={
                    int(h): None if c is None else Change(float(c[0]), c[1])
                    for h, c in raw["changes"].items()
                },
                crossed=raw["crossed"],
                reason=raw["reason"],
                zscore=raw["zscore"],
                last=Observation(date.fromisoformat(last[0]), float(last[1])) if last else None,
                earlier_fetch=raw["earlier_fetch"],
                check=None
                if verdicts is None
                else CheckOutcome(spec.id, day, tuple(Verdict(*v) for v in verdicts)),
                history=_history_frame(raw.get("history") or []),
            )
        )
    return DayTable(day=day, rows=tuple(rows), window_days=int(data["window_days"]))


def _history_pairs(row: KpiRow, start: date) -> list[list[Any]]:
    history = row.history
    if history is None or len(history) == 0:
        return []
    return [
        [d.isoformat(), float(v)]
        for d, v in zip(history["date"], history["value"], strict=True)
        if d >= start and v is not None and math.isfinite(float(v))
    ]


def _history_frame(pairs: list[list[Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": [date.fromisoformat(d) for d, _ in pairs],
            "value": pd.Series([float(v) for _, v in pairs], dtype="float64"),
        }
    )


def load_day_table(
    specs: list[KpiSpec], store: ObjectStore, day: date, *, window_days: int = 90
) -> DayTable:
    """The day's table from the store: the series plus the day's fetch status."""
    return build_day_table(
        specs,
        KpiSeriesStore(store),
        day,
        window_days=window_days,
        statuses=read_fetch_status(store, day),
    )


FEATURE_ZSCORE = 2.0
"""A move this many usual moves large earns its KPI a full chart in the brief."""
FEATURED_MAX = 24
"""Full charts in the brief at most; a registry this small gets every KPI's chart."""


def featured(table: DayTable) -> list[KpiRow]:
    """The KPIs whose full chart the brief shows: what moved, crossed or went wrong.

    An unusual move (|z| >= FEATURE_ZSCORE), a crossed threshold, a failed quality check or
    a failed fetch; the most unusual first, at most FEATURED_MAX. Every other KPI is in the
    table and the sparklines, and in the appendix when it is asked for.
    """
    rows = list(table.rows)
    if len(rows) <= FEATURED_MAX:
        return rows
    notable = [
        r
        for r in rows
        if r.crossed
        or r.check_findings
        or r.is_problem
        or (r.zscore is not None and abs(r.zscore) >= FEATURE_ZSCORE)
    ]
    notable.sort(key=lambda r: (not r.is_problem, -abs(r.zscore or 0.0)))
    return notable[:FEATURED_MAX]


UNUSUAL_MAX = 24
"""Unusual moves given related headlines at most (the brief's featured charts, likewise)."""


def unusual_moves(table: DayTable) -> list[KpiRow]:
    """The day's unusual moves (|z| >= FEATURE_ZSCORE), most unusual first.

    At most UNUSUAL_MAX: the moves the report looks for related headlines for.
    """
    moved = [
        r
        for r in table.rows
        if r.value is not None and r.zscore is not None and abs(r.zscore) >= FEATURE_ZSCORE
    ]
    moved.sort(key=lambda r: (-abs(r.zscore or 0.0), r.kpi_id))
    return moved[:UNUSUAL_MAX]
