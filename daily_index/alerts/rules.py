"""Alert rules evaluated over a KPI's stored series: pure functions, no I/O.

The sensor and `daily-index alerts check` both call `evaluate_day` with the same inputs (the
KPI's spec, the series up to the day, whether the report deadline of the day has passed),
so a rule means the same thing in both. docs/alerts.md describes each kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from daily_index.calendars import in_calendar
from daily_index.checks import move_scale
from daily_index.formatting import Change, format_change, format_value, format_zscore
from daily_index.formatting import change_between as _change
from daily_index.registry import AlertRule, KpiSpec

Point = tuple[date, float]
"""One observation: (day, value)."""

CROSSING_REPLAY = 400
"""Observations replayed to know whether a crossing rule is armed (a year and some)."""
ZSCORE_MIN_CHANGES = 10
"""A z-score needs at least this many past changes to mean anything."""


@dataclass(frozen=True)
class Alert:
    """One rule that fired for one KPI on one day."""

    kpi_id: str
    kpi_name: str
    day: date
    rule: str
    kind: str
    value: float | None
    previous: float | None
    previous_day: date | None
    change: float | None
    change_unit: str
    unit: str
    detail: str
    cooldown_days: int = 0

    @property
    def key(self) -> str:
        """The alert's identity: at most one alert per (KPI, day, rule)."""
        return alert_key(self.kpi_id, self.day, self.rule)

    @property
    def value_text(self) -> str:
        return "no data" if self.value is None else format_value(self.value, self.unit)

    @property
    def previous_text(self) -> str:
        return format_value(self.previous, self.unit)

    @property
    def change_text(self) -> str:
        return format_change(None if self.change is None else Change(self.change, self.change_unit))


def alert_key(kpi_id: str, day: date, rule: str) -> str:
    return f"{kpi_id}|{day.isoformat()}|{rule}"


def change_between(now: float, before: float, unit: str) -> float | None:
    """The change from `before` to `now` in a change unit (the shared formatter's arithmetic).

    None when a percent change has no base (before is 0).
    """
    change = _change(now, before, unit)  # type: ignore[arg-type]
    return None if change is None else change.value


def _fmt_change(change: float, unit: str) -> str:
    return format_change(Change(change, unit))  # type: ignore[arg-type]


def points_from(rows: Iterable[tuple[date, float]]) -> list[Point]:
    """Observations sorted by day, non-finite values dropped."""
    return sorted((d, float(v)) for d, v in rows if v is not None and math.isfinite(float(v)))


def _on_or_before(points: Sequence[Point], day: date) -> Point | None:
    for point in reversed(points):
        if point[0] <= day:
            return point
    return None


def _passes(change: float, threshold: float, direction: str) -> bool:
    if direction == "up":
        return change >= threshold
    if direction == "down":
        return change <= -threshold
    return abs(change) >= threshold


def crossing(values: Sequence[float], threshold: float, hysteresis: float) -> str | None:
    """Whether the last value crossed the threshold: "up", "down" or None.

    A side is armed when the series is on the other side of the threshold; it fires once when
    the value goes past the threshold, and re-arms only after the value has gone back beyond
    threshold - hysteresis (for up) or threshold + hysteresis (for down).
    """
    if len(values) < 2:
        return None
    armed_up = values[0] <= threshold
    armed_down = values[0] >= threshold
    fired: str | None = None
    for value in values[1:]:
        fired = None
        if armed_up and value > threshold:
            fired, armed_up = "up", False
        elif not armed_up and value < threshold - hysteresis:
            armed_up = True
        if armed_down and value < threshold:
            fired, armed_down = "down", False
        elif not armed_down and value > threshold + hysteresis:
            armed_down = True
    return fired


def _zscore(points: Sequence[Point], unit: str, window: int) -> tuple[float, float, int] | None:
    """(day's change, its z-score, changes measured against) for the last point, or None."""
    changes = []
    for (_, before), (_, now) in zip(points, points[1:], strict=False):
        changes.append(change_between(now, before, unit))
    if not changes or changes[-1] is None:
        return None
    today = changes[-1]
    past = [c for c in changes[:-1] if c is not None][-window:]
    if len(past) < min(window, ZSCORE_MIN_CHANGES):
        return None
    # The same measure as the report's "unusual moves": the change over the usual move size.
    spread = move_scale(np.array(past, dtype=float))
    if spread == 0:
        return None
    return today, today / spread, len(past)


def _fires(
    rule: AlertRule, spec: KpiSpec, day: date, points: Sequence[Point], value: float
) -> tuple[str, Point | None, float | None] | None:
    """Whether a value rule fires: (detail, compared point, change) or None."""
    unit, shown = spec.change_unit, spec.unit
    threshold = rule.threshold if rule.threshold is not None else 0.0
    previous = points[-2] if len(points) >= 2 else None
    prev_change = change_between(value, previous[1], unit) if previous else None
    if rule.kind == "above":
        if value > threshold:
            return f"above {format_value(threshold, shown)}", previous, prev_change
        return None
    if rule.kind == "below":
        if value < threshold:
            return f"below {format_value(threshold, shown)}", previous, prev_change
        return None
    if rule.kind == "crossing":
        side = crossing([v for _, v in points[-CROSSING_REPLAY:]], threshold, rule.hysteresis)
        if side is None or rule.direction not in ("both", side):
            return None
        band = f" (re-arms past ±{format_value(rule.hysteresis, shown)})" if rule.hysteresis else ""
        word = "above" if side == "up" else "below"
        return f"crossed {word} {format_value(threshold, shown)}{band}", previous, prev_change
    if rule.kind == "change":
        before = _on_or_before(points[:-1], day - timedelta(days=rule.days))
        if before is None:
            return None
        change = change_between(value, before[1], unit)
        if change is None or not _passes(change, threshold, rule.direction):
            return None
        limit = _fmt_change(threshold, unit).lstrip("+")
        return (
            f"changed {_fmt_change(change, unit)} over {rule.days} day(s) (limit {limit}, "
            f"against {before[0].isoformat()})",
            before,
            change,
        )
    if rule.kind == "zscore":
        measured = _zscore(points, unit, rule.window)
        if measured is None:
            return None
        change, z, n = measured
        if not _passes(z, threshold, rule.direction):
            return None
        return (
            f"unusual move: {_fmt_change(change, unit)} is {format_zscore(z)} against the last "
            f"{n} changes (limit {threshold:g}σ)",
            previous,
            change,
        )
    return None


def evaluate_day(spec: KpiSpec, day: date, points: Sequence[Point], *, deadline_passed: bool):
    """Every rule of `spec` that fires for `day`.

    Args:
        spec: The KPI and its rules.
        day: The day evaluated.
        points: The KPI's observations (sorted by day); those after `day` are ignored.
        deadline_passed: Whether the report deadline of `day` has passed (for no_data).

    Returns:
        The alerts, in the order of the KPI's rules.
    """
    upto = [p for p in points if p[0] <= day]
    value = upto[-1][1] if upto and upto[-1][0] == day else None
    alerts: list[Alert] = []
    for rule in spec.alerts:
        if rule.kind == "no_data":
            if value is None and deadline_passed and in_calendar(spec, day):
                last = upto[-1] if upto else None
                alerts.append(
                    _alert(spec, day, rule, None, last, None, "no data by the report deadline")
                )
            continue
        if value is None:
            continue
        fired = _fires(rule, spec, day, upto, value)
        if fired is not None:
            detail, compared, change = fired
            alerts.append(_alert(spec, day, rule, value, compared, change, detail))
    return alerts


def _alert(
    spec: KpiSpec,
    day: date,
    rule: AlertRule,
    value: float | None,
    compared: Point | None,
    change: float | None,
    detail: str,
) -> Alert:
    return Alert(
        kpi_id=spec.id,
        kpi_name=spec.name,
        day=day,
        rule=rule.name,
        kind=rule.kind,
        value=value,
        previous=compared[1] if compared else None,
        previous_day=compared[0] if compared else None,
        change=change,
        change_unit=spec.change_unit,
        unit=spec.unit,
        detail=detail,
        cooldown_days=rule.cooldown_days,
    )
