"""The quality check of a KPI-day, behind the UI's Checks tab, the analyst and the PDF.

One Dagster check per KPI (`quality`) carries every rule's verdict in its metadata: a check
result is an event Dagster records (15-50 ms each on a loaded 2-core machine), so one per
KPI-day costs 200 events a day where one per rule would cost 1,000. The rules:

- present: a value, or an expected gap (outside the calendar, beyond the source's history);
- finite: the stored value is a finite number;
- range: within the bounds of its type (prices above 0, percentages 0-100) and the registry's;
- stale: not the same value `staleDays` observations running for a KPI that normally moves;
- jump: the change is within `jumpSigma` standard deviations of the last 30 changes (a
  warning: big moves happen, but they deserve a look).

`present`, `finite`, `range` and `stale` fail the check with severity ERROR; a failed `jump`
alone gives WARN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

from daily_index.registry import KpiSpec


def move_scale(changes: np.ndarray) -> float:
    """The size of a usual move: the changes' std, but at least their median nonzero size.

    A series that mostly sits still (a policy rate: 85 of 90 days unchanged, the rest
    +-0.01) has a tiny std, and its smallest possible step would read as a 4-sigma move.
    """
    sigma = float(np.std(changes, ddof=1)) if len(changes) > 1 else 0.0
    moved = np.abs(changes[changes != 0])
    return max(sigma, float(np.median(moved))) if len(moved) else sigma


CHECK_NAME = "quality"
JUMP_WINDOW = 30
JUMP_MIN_CHANGES = 10

Severity = Literal["ERROR", "WARN"]
FetchState = Literal["ok", "failed", "gap"]

# Observations running with the same value that make a KPI stale, by type (0: never).
# Policy rates and some indexes sit still for weeks, so they are never stale by default.
DEFAULT_STALE_DAYS: dict[str, int] = {
    "price": 3,
    "ratio": 3,
    "market_cap": 3,
    "volume": 3,
    "supply": 5,
    "dominance": 5,
    "yield": 5,
    "index": 0,
    "rate": 0,
}

# Bounds every KPI of a type must respect: (lower, upper, lower is exclusive).
TYPE_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "price": (0.0, None, True),
    "ratio": (0.0, None, True),
    "market_cap": (0.0, None, True),
    "supply": (0.0, None, True),
    "volume": (0.0, None, False),
    "dominance": (0.0, 100.0, False),
}


@dataclass(frozen=True)
class Verdict:
    rule: str
    passed: bool
    severity: Severity
    detail: str


@dataclass(frozen=True)
class CheckOutcome:
    """All verdicts of one KPI-day and what they add up to."""

    kpi_id: str
    day: date
    verdicts: tuple[Verdict, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def severity(self) -> Severity:
        failed = [v for v in self.verdicts if not v.passed]
        return "ERROR" if any(v.severity == "ERROR" for v in failed) or not failed else "WARN"

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    def summary(self) -> str:
        """One line: what passed, or every failed rule with its detail."""
        if self.passed:
            return "all checks passed"
        return "; ".join(f"{v.rule}: {v.detail}" for v in self.failed)


def stale_days(spec: KpiSpec) -> int:
    if spec.checks.stale_days is not None:
        return spec.checks.stale_days
    return DEFAULT_STALE_DAYS.get(spec.type, 0)


def bounds(spec: KpiSpec) -> tuple[float | None, float | None, bool]:
    """Lower bound, upper bound and whether the lower one is exclusive.

    The type's bounds, narrowed by the registry's `checks.min` and `checks.max`.
    """
    lower, upper, exclusive = TYPE_BOUNDS.get(spec.type, (None, None, False))
    if spec.checks.min is not None and (lower is None or spec.checks.min >= lower):
        lower, exclusive = spec.checks.min, False
    if spec.checks.max is not None:
        upper = spec.checks.max if upper is None else min(upper, spec.checks.max)
    return lower, upper, exclusive


def _range_verdict(spec: KpiSpec, value: float) -> Verdict:
    lower, upper, exclusive = bounds(spec)
    low_ok = lower is None or (value > lower if exclusive else value >= lower)
    high_ok = upper is None or value <= upper
    described = _describe_bounds(lower, upper, exclusive)
    if low_ok and high_ok:
        return Verdict("range", True, "ERROR", f"{value:g} is within {described}")
    return Verdict("range", False, "ERROR", f"{value:g} is outside {described}")


def _describe_bounds(lower: float | None, upper: float | None, exclusive: bool) -> str:
    if lower is None and upper is None:
        return "no bounds"
    if upper is None:
        return f"({lower:g}, ∞)" if exclusive else f"[{lower:g}, ∞)"
    if lower is None:
        return f"(-∞, {upper:g}]"
    return f"{'(' if exclusive else '['}{lower:g}, {upper:g}]"


def _stale_verdict(spec: KpiSpec, value: float, earlier: np.ndarray) -> Verdict:
    runs = stale_days(spec)
    if runs <= 1:
        return Verdict("stale", True, "ERROR", "not checked for this KPI type")
    recent = earlier[-(runs - 1) :]
    if len(recent) == runs - 1 and np.all(recent == value):
        return Verdict(
            "stale",
            False,
            "ERROR",
            f"the same value {value:g} {runs} observations running (limit {runs}); "
            "the source may have stopped updating",
        )
    return Verdict("stale", True, "ERROR", f"moved within the last {runs} observations")


def _jump_verdict(spec: KpiSpec, value: float, earlier: np.ndarray) -> Verdict:
    series = np.append(earlier[-(JUMP_WINDOW + 1) :], value)
    changes = np.diff(series)
    history, today = changes[:-1], changes[-1] if len(changes) else None
    if today is None or len(history) < JUMP_MIN_CHANGES:
        return Verdict(
            "jump", True, "WARN", f"fewer than {JUMP_MIN_CHANGES} earlier changes to compare with"
        )
    sigma = move_scale(history)
    k = spec.checks.jump_sigma
    if sigma == 0:
        passed = today == 0
        detail = "no earlier change; the value moved" if not passed else "no change"
        return Verdict("jump", bool(passed), "WARN", detail)
    score = float(today) / sigma
    detail = f"change {float(today):+g} is {score:+.1f} σ of the last {len(history)} changes"
    return Verdict("jump", abs(score) <= k, "WARN", detail + f" (limit {k:g} σ)")


def evaluate(
    spec: KpiSpec,
    day: date,
    value: float | None,
    history: pd.DataFrame | None,
    *,
    status: FetchState,
    reason: str | None = None,
) -> CheckOutcome:
    """The verdicts for one KPI-day.

    Args:
        spec: the KPI.
        day: the partition's day.
        value: the value stored for the day (None when there is none).
        history: stored observations (`date`, `value`); only those before `day` are used.
        status: this fetch's outcome: ok, failed (with `reason`) or an expected gap.
        reason: why the fetch failed or why no observation is expected.
    """
    earlier = np.array([], dtype=float)
    if history is not None and len(history):
        before = history[history["date"] < day]
        earlier = before["value"].to_numpy(dtype=float)
    return evaluate_after(spec, day, value, earlier, status=status, reason=reason)


def evaluate_after(
    spec: KpiSpec,
    day: date,
    value: float | None,
    earlier: np.ndarray,
    *,
    status: FetchState,
    reason: str | None = None,
) -> CheckOutcome:
    """`evaluate` with the stored values before `day` given as an array, oldest first.

    The KPI step checks a range of days against one series: slicing an array per day keeps
    a 5-year range of 200 KPIs cheap.
    """
    if value is None:
        if status == "gap":
            verdict = Verdict("present", True, "ERROR", f"expected gap: {reason}")
        else:
            verdict = Verdict("present", False, "ERROR", f"no value: {reason or 'not fetched'}")
        return CheckOutcome(spec.id, day, (verdict,))
    present = Verdict("present", True, "ERROR", "a value is stored for the day")
    if status == "failed":
        present = Verdict(
            "present", True, "ERROR", f"stored by an earlier fetch; this fetch failed: {reason}"
        )
    if not math.isfinite(value):
        return CheckOutcome(
            spec.id, day, (present, Verdict("finite", False, "ERROR", f"value is {value!r}"))
        )
    verdicts = (
        present,
        Verdict("finite", True, "ERROR", "a finite number"),
        _range_verdict(spec, value),
        _stale_verdict(spec, value, earlier),
        _jump_verdict(spec, value, earlier),
    )
    return CheckOutcome(spec.id, day, verdicts)
