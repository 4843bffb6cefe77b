"""Backtest of alert rules: when each rule would have fired over the stored history.

The live engine's own rule evaluation decides: `rules.evaluate_day` on each day a rule may
fire, and the ledger's `in_cooldown` on what fired, in day order as the sensor sees it. Going
through every day of five years that way costs a second per rule (a z-score recomputes its
changes each day), so numpy first screens each rule's series for the days it can fire on:

- above, below, crossing: exactly (the same comparisons on the same floats; a crossing's
  armed state follows its last value outside the hysteresis band within the replayed window);
- change and zscore: a superset (a tolerance on the threshold; a z-score's usual move is at
  least the standard deviation of the past changes, so a day whose change is below threshold
  times that deviation cannot fire).

Each screened day is then judged by `evaluate_day` on the tail of the series that the rule
reads (the same result as the whole series), so a backtest fires on the days the sensor
would have, with the same detail. The KPI's move over the next 7 days after each firing is
the change from the day's value to the last observation on or before day + 7, in the KPI's
change unit (None while day + 7 is beyond the stored history).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from daily_index.alerts.ledger import Notice, in_cooldown
from daily_index.alerts.rules import (
    CROSSING_REPLAY,
    ZSCORE_MIN_CHANGES,
    Alert,
    Point,
    change_between,
    evaluate_day,
)
from daily_index.calendars import in_calendar
from daily_index.registry import AlertRule, KpiSpec

MOVE_DAYS = 7
"""The horizon of the move reported after each firing."""
_SCREEN_TOLERANCE = 1e-9
"""Relative slack of the change and z-score screens: a superset of the days, never fewer."""


@dataclass(frozen=True)
class Firing:
    """One day the rule would have alerted (or was held back by its cooldown)."""

    alert: Alert
    move: float | None
    """The KPI's change over the next 7 days, in its change unit (None: not known yet)."""
    move_day: date | None
    """The observation the move is measured to."""

    @property
    def day(self) -> date:
        return self.alert.day


@dataclass(frozen=True)
class RuleResult:
    """What one rule of one KPI would have done over the period."""

    kpi: KpiSpec
    rule: AlertRule
    start: date | None
    end: date | None
    observations: int
    """Days with a value in the period (the days a value rule is judged on)."""
    fired: list[Firing] = field(default_factory=list)
    held_back: list[Firing] = field(default_factory=list)
    """Days it fired within the cooldown of an earlier firing: recorded, not sent."""

    @property
    def moves(self) -> list[float]:
        return [f.move for f in self.fired if f.move is not None]

    def summary(self) -> dict[str, float | int | None]:
        moves = np.array(self.moves, dtype=float)
        return {
            "fired": len(self.fired),
            "held_back": len(self.held_back),
            "with_move": len(moves),
            "median_move": float(np.median(moves)) if len(moves) else None,
            "mean_move": float(np.mean(moves)) if len(moves) else None,
            "share_up": float(np.mean(moves > 0)) if len(moves) else None,
        }


def _single(spec: KpiSpec, rule: AlertRule) -> KpiSpec:
    """The KPI with this one rule: `evaluate_day` then judges only it."""
    return spec.model_copy(update={"alerts": (rule,)})


def _changes(values: np.ndarray, unit: str) -> np.ndarray:
    """The change from each value to the next, as `change_between` gives it (NaN for None)."""
    return _change(values[1:], values[:-1], unit)


def _change(now: np.ndarray, before: np.ndarray, unit: str) -> np.ndarray:
    """`change_between` element-wise (NaN where it gives None)."""
    if unit == "pct":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (now - before) / np.abs(before) * 100.0
        return np.where(before == 0, np.nan, out)
    if unit == "bp":
        return (now - before) * 100.0
    return now - before


def _crossing_candidates(values: np.ndarray, threshold: float, hysteresis: float) -> np.ndarray:
    """Indexes where `rules.crossing` over the replayed window ending there fires (either way).

    Within a window, a side's armed state is set by its last value outside the hysteresis
    band (above the threshold disarms "up", below threshold - hysteresis arms it; mirrored for
    "down"); with none, by the window's first value (armed up when it is at most the
    threshold, armed down when it is at least the threshold).
    """
    n = len(values)
    index = np.arange(n)
    starts = np.maximum(0, index - (CROSSING_REPLAY - 1))

    def armed_before(disarm: np.ndarray, arm: np.ndarray, initially: np.ndarray) -> np.ndarray:
        decisive = disarm | arm
        last = np.where(decisive, index, -1)
        last = np.maximum.accumulate(last)
        # The last decisive value before i (index i - 1 or earlier), inside the window.
        previous = np.concatenate(([-1], last[:-1]))
        inside = previous > starts
        state = np.where(inside, arm[np.maximum(previous, 0)], initially[starts])
        return state

    up = armed_before(values > threshold, values < threshold - hysteresis, values <= threshold)
    down = armed_before(values < threshold, values > threshold + hysteresis, values >= threshold)
    fires = ((up & (values > threshold)) | (down & (values < threshold))) & (index > starts)
    return np.flatnonzero(fires)


def _screen(rule: AlertRule, days: np.ndarray, values: np.ndarray, unit: str) -> np.ndarray:
    """Indexes of the observations on which `rule` may fire (a superset for change/zscore)."""
    threshold = float(rule.threshold or 0.0)
    loose = abs(threshold) * (1 - _SCREEN_TOLERANCE)
    if rule.kind == "above":
        return np.flatnonzero(values > threshold)
    if rule.kind == "below":
        return np.flatnonzero(values < threshold)
    if rule.kind == "crossing":
        return _crossing_candidates(values, threshold, rule.hysteresis)
    if rule.kind == "change":
        horizon = days - rule.days
        # The last observation on or before the horizon, among the earlier ones.
        before = np.searchsorted(days, horizon, side="right") - 1
        before = np.minimum(before, np.arange(len(days)) - 1)
        ok = before >= 0
        change = np.where(ok, _change(values, values[np.where(ok, before, 0)], unit), np.nan)
        if rule.direction == "up":
            hit = change >= loose
        elif rule.direction == "down":
            hit = change <= -loose
        else:
            hit = np.abs(change) >= loose
        return np.flatnonzero(np.nan_to_num(hit, nan=False))
    if rule.kind == "zscore":
        changes = pd.Series(_changes(values, unit))
        # The deviation of the last `window` valid changes before each change (ddof 1).
        past = changes.dropna()
        sigma = past.rolling(rule.window, min_periods=2).std().shift(1)
        count = past.notna().cumsum().shift(1).fillna(0).clip(upper=rule.window)
        sigma = sigma.reindex(changes.index)
        count = count.reindex(changes.index)
        enough = count >= min(rule.window, ZSCORE_MIN_CHANGES)
        today = changes.abs()
        # A zero deviation with nonzero changes leaves the median move as the scale: keep it.
        may = enough & ((sigma.fillna(0) == 0) | (today >= loose * sigma.fillna(0)))
        may &= changes.notna()
        return np.flatnonzero(may.to_numpy()) + 1  # change k ends at observation k + 1
    return np.array([], dtype=int)


def _tail_start(rule: AlertRule, i: int, before: int, valid_cumulative: np.ndarray) -> int:
    """The first index of the tail `evaluate_day` needs to judge observation `i` identically."""
    if rule.kind in ("above", "below"):
        return max(0, i - 1)
    if rule.kind == "crossing":
        return max(0, i - CROSSING_REPLAY + 1)
    if rule.kind == "change":
        return max(0, before)
    # zscore: `rule.window` valid changes before the day's own, or the whole prefix.
    need = rule.window
    # valid_cumulative[k]: the valid changes among those ending at observations 1..k. A tail
    # from s holds valid_cumulative[i - 1] - valid_cumulative[s] of them before the day's own:
    # the largest s that leaves `need`.
    have_before = valid_cumulative[i - 1] if i >= 1 else 0
    if have_before <= need:
        return 0
    last = int(np.searchsorted(valid_cumulative, have_before - need, side="right")) - 1
    return max(0, last)


def _move(points: Sequence[Point], ordinals: np.ndarray, day: date, value: float, unit: str):
    """The change from `value` on `day` to the last observation on or before day + 7."""
    horizon = day + timedelta(days=MOVE_DAYS)
    if points[-1][0] < horizon:
        return None, None
    j = int(np.searchsorted(ordinals, horizon.toordinal(), side="right")) - 1
    later_day, later = points[j]
    return change_between(later, value, unit), later_day


@dataclass(frozen=True)
class _Arrays:
    """A KPI's observations as arrays, built once for all of its rules."""

    days: np.ndarray
    """Day ordinals."""
    values: np.ndarray
    valid: np.ndarray
    """valid[k]: how many of the changes ending at observations 1..k exist (not None)."""

    @classmethod
    def of(cls, points: Sequence[Point], unit: str) -> _Arrays:
        days = np.fromiter((p[0].toordinal() for p in points), dtype=np.int64, count=len(points))
        values = np.fromiter((p[1] for p in points), dtype=float, count=len(points))
        valid = np.concatenate(([0], np.cumsum(~np.isnan(_changes(values, unit)))))
        return cls(days, values, valid)


def backtest_rule(
    spec: KpiSpec,
    rule: AlertRule,
    points: Sequence[Point],
    *,
    start: date | None = None,
    end: date | None = None,
    arrays: _Arrays | None = None,
) -> RuleResult:
    """Replay one rule over a KPI's observations between `start` and `end` (inclusive).

    Args:
        spec: The KPI.
        rule: One of its rules.
        points: The KPI's observations, sorted by day, finite (`rules.points_from`).
        start: The first day judged (default: the first observation).
        end: The last day judged (default: the last observation).
        arrays: `points` as arrays, when the caller has them (one KPI, many rules).

    Returns:
        The firings and the cooldown's held-back days, in day order.
    """
    one = _single(spec, rule)
    if not points:
        return RuleResult(spec, rule, start, end, 0)
    first_day, last_day = points[0][0], points[-1][0]
    start = start or first_day
    end = end or last_day
    arrays = arrays or _Arrays.of(points, spec.change_unit)
    days, values = arrays.days, arrays.values
    lo = int(np.searchsorted(days, start.toordinal(), side="left"))
    hi = int(np.searchsorted(days, end.toordinal(), side="right"))
    alerts: list[Alert] = []
    if rule.kind == "no_data":
        # Each calendar day of the period without a value, from the KPI's first observation on.
        present = set(p[0] for p in points)
        day = max(start, first_day)
        while day <= end:
            if day not in present and in_calendar(spec, day):
                k = int(np.searchsorted(days, day.toordinal(), side="left"))
                alerts.extend(
                    evaluate_day(one, day, points[max(0, k - 1) : k], deadline_passed=True)
                )
            day += timedelta(days=1)
    else:
        valid = arrays.valid
        horizons = np.searchsorted(days, days - rule.days, side="right") - 1
        for i in _screen(rule, days, values, spec.change_unit):
            if not lo <= i < hi:
                continue
            before = int(min(horizons[i], i - 1))
            tail = points[_tail_start(rule, int(i), before, valid) : i + 1]
            day = points[i][0]
            alerts.extend(evaluate_day(one, day, tail, deadline_passed=False))
    result = RuleResult(spec, rule, start, end, observations=max(0, hi - lo))
    last_fired: dict[str, dict[str, object]] = {}
    for alert in sorted(alerts, key=lambda a: a.day):
        notice = Notice(
            key=alert.key,
            title="",
            text="",
            kpi_id=alert.kpi_id,
            day=alert.day,
            rule=alert.rule,
            kind=alert.kind,
            cooldown_days=alert.cooldown_days,
        )
        move, move_day = (None, None)
        if alert.value is not None:
            move, move_day = _move(points, days, alert.day, alert.value, spec.change_unit)
        firing = Firing(alert, move, move_day)
        # In day order only the latest firing can hold a later one back: the ledger's test.
        if in_cooldown(last_fired, notice):
            result.held_back.append(firing)
            continue
        result.fired.append(firing)
        last_fired = {
            alert.key: {"kpi": alert.kpi_id, "rule": alert.rule, "day": alert.day.isoformat()}
        }
    return result


def backtest(
    kpis: Sequence[KpiSpec],
    read_points: Callable[[str], list[Point]],
    *,
    start: date | None = None,
    end: date | None = None,
    rule_name: str | None = None,
) -> list[RuleResult]:
    """Replay every rule of `kpis` (or only those named `rule_name`) over their stored series.

    Each KPI's series is read once.
    """
    results = []
    for spec in kpis:
        rules = [r for r in spec.alerts if rule_name in (None, r.name, r.kind)]
        if not rules:
            continue
        points = read_points(spec.id)
        arrays = _Arrays.of(points, spec.change_unit)
        results.extend(
            backtest_rule(spec, r, points, start=start, end=end, arrays=arrays) for r in rules
        )
    return results


def to_json(results: Sequence[RuleResult]) -> list[dict]:
    """The results as plain JSON values, for programs."""

    def number(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else round(value, 10)

    def firing(f: Firing) -> dict:
        return {
            "day": f.day.isoformat(),
            "value": number(f.alert.value),
            "change": number(f.alert.change),
            "detail": f.alert.detail,
            "move_7d": number(f.move),
            "move_to": f.move_day.isoformat() if f.move_day else None,
        }

    return [
        {
            "kpi": r.kpi.id,
            "rule": r.rule.name,
            "kind": r.rule.kind,
            "cooldown_days": r.rule.cooldown_days,
            "from": r.start.isoformat() if r.start else None,
            "to": r.end.isoformat() if r.end else None,
            "observations": r.observations,
            "change_unit": r.kpi.change_unit,
            **{k: number(v) if isinstance(v, float) else v for k, v in r.summary().items()},
            "firings": [firing(f) for f in r.fired],
            "held_back_days": [f.day.isoformat() for f in r.held_back],
        }
        for r in results
    ]
