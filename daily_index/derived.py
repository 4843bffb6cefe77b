"""Derived KPIs: values computed from other KPIs' stored series (registry source `derived`).

The KPI step computes them after it stored the day's fetched values, so a derived KPI of day
D sees its inputs of D. A day is computed only when every input has a value for it: an input
with an expected gap (outside its calendar, published later) makes the derived day a gap too;
an input that failed, or that has not been fetched, is a failure naming that input.

The formulas (docs/user-guide.md, "Derived KPIs"):

- `volatility`: the sample standard deviation (n - 1) of the last `window` log returns of the
  input, annualised with the square root of the input's observations per year (365 for a
  daily calendar, 252 for business days, 52 weekly, 12 monthly), in percent.
- `drawdown`: the day's value against the highest value of the last `window` calendar days
  (the day included), in percent: 0 at a new high, -25 a quarter below it.
- `correlation`: the Pearson correlation of the two inputs' last `window` returns over the
  days both have an observation; a return is the percent change for KPIs whose changes are
  shown in percent, else the difference.
- `ratio`: input a divided by input b on the day.
- `moving_average`: the mean of the input's last `window` observations (the day included).

Window ops need a full window: with less history the day is a gap (`no_history`).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from daily_index.calendars import expected_gap
from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, make_error
from daily_index.registry import DerivedParams, KpiSpec, derived_order
from daily_index.sources import FetchOutcome, FetchRequest

PERIODS_PER_YEAR: dict[str, int] = {"daily": 365, "business_days": 252, "weekly": 52, "monthly": 12}
"""Observations per year by the input's calendar: what annualises a volatility."""

GAP_INPUT, GAP_HISTORY = "no_observation", "no_history"
"""Expected-gap codes (calendars.EXPECTED_GAP_CODES): an input has no day, or too little history."""
INPUT_FAILED, INPUT_MISSING, UNDEFINED = "input_failed", "input_missing", "derived_undefined"


@dataclass(frozen=True)
class Series:
    """One KPI's observations, sorted by day."""

    days: list[date]
    values: np.ndarray

    @classmethod
    def of(cls, points: Mapping[date, float]) -> Series:
        days = sorted(points)
        return cls(days, np.array([points[d] for d in days], dtype=float))

    def upto(self, day: date) -> np.ndarray:
        """The values observed on or before `day`."""
        return self.values[: bisect.bisect_right(self.days, day)]

    def has(self, day: date) -> bool:
        return self.at(day) is not None

    def at(self, day: date) -> float | None:
        """The value observed on `day`, or None."""
        index = bisect.bisect_left(self.days, day)
        if index < len(self.days) and self.days[index] == day:
            return float(self.values[index])
        return None


class NotComputed(Exception):
    """A derived day without a value: an expected gap, or a failure, with the reason."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _history(kpi_id: str, have: int, need: int, what: str) -> NotComputed:
    return NotComputed(
        GAP_HISTORY,
        f"not enough history yet: {need} {what} of kpi/{kpi_id} needed, {have} stored",
    )


def _returns(values: np.ndarray, unit: str) -> np.ndarray:
    if unit == "pct":
        return values[1:] / values[:-1] - 1.0
    return np.diff(values)


def value_on(
    params: DerivedParams,
    day: date,
    inputs: Sequence[tuple[KpiSpec, Series]],
) -> float:
    """The derived value of `day` from its inputs' series (each has a value on `day`).

    Raises:
        NotComputed: too little history (a gap), or an undefined value (a failure).
    """
    window = params.size
    (first, series), *rest = inputs
    if params.op == "ratio":
        (second, other) = rest[0]
        numerator, denominator = series.upto(day)[-1], other.upto(day)[-1]
        if denominator == 0:
            raise NotComputed(UNDEFINED, f"kpi/{second.id} is 0 on {day}: the ratio is undefined")
        return float(numerator / denominator)
    if params.op == "correlation":
        (second, other) = rest[0]
        # The last window + 1 days on which both have an observation, walking back from the day.
        pairs: list[tuple[float, float]] = []
        for index in range(bisect.bisect_right(series.days, day) - 1, -1, -1):
            paired = other.at(series.days[index])
            if paired is not None:
                pairs.append((float(series.values[index]), paired))
                if len(pairs) == window + 1:
                    break
        if len(pairs) < window + 1:
            raise NotComputed(
                GAP_HISTORY,
                f"not enough history yet: {window + 1} days on which both kpi/{first.id} and "
                f"kpi/{second.id} have an observation needed, {len(pairs)} stored",
            )
        pairs.reverse()
        a = _returns(np.array([p[0] for p in pairs]), first.change_unit)
        b = _returns(np.array([p[1] for p in pairs]), second.change_unit)
        for spec, returns in ((first, a), (second, b)):
            if not np.all(np.isfinite(returns)):
                raise NotComputed(UNDEFINED, f"kpi/{spec.id} has a 0 value inside the window")
            if float(np.std(returns)) == 0.0:
                raise NotComputed(
                    UNDEFINED,
                    f"kpi/{spec.id} did not move over the last {window} observations: "
                    "its correlation is undefined",
                )
        return float(np.corrcoef(a, b)[0, 1])
    values = series.upto(day)
    if params.op == "moving_average":
        if len(values) < window:
            raise _history(first.id, len(values), window, "observations")
        return float(np.mean(values[-window:]))
    if params.op == "volatility":
        if len(values) < window + 1:
            raise _history(first.id, len(values), window + 1, "observations")
        picked = values[-(window + 1) :]
        if np.any(picked <= 0):
            raise NotComputed(
                UNDEFINED,
                f"kpi/{first.id} has a value at or below 0 inside the window: no log return",
            )
        returns = np.diff(np.log(picked))
        per_year = PERIODS_PER_YEAR[first.calendar.kind]
        return float(np.std(returns, ddof=1) * math.sqrt(per_year) * 100.0)
    # drawdown: against the high of the last `window` calendar days, the day included.
    start = day - timedelta(days=window - 1)
    if not series.days or series.days[0] > start:
        have = (day - series.days[0]).days + 1 if series.days else 0
        raise _history(first.id, have, window, "days")
    high = float(np.max(series.values[bisect.bisect_left(series.days, start) : len(values)]))
    if high <= 0:
        raise NotComputed(UNDEFINED, f"kpi/{first.id}'s high is not above 0: no drawdown")
    return (float(values[-1]) / high - 1.0) * 100.0


StatusOf = Callable[[str, date], tuple[str, str] | None]
"""(KPI id, day) -> ("gap" | "failed", reason) when known, else None."""


def compute_outcomes(
    requests: Sequence[FetchRequest],
    *,
    specs: Mapping[str, KpiSpec],
    read: Callable[[str], Mapping[date, float]],
    status_of: StatusOf,
) -> list[FetchOutcome]:
    """One outcome per derived KPI-day requested, as a fetch would give it.

    Args:
        requests: The derived KPI-days to compute.
        specs: Every KPI the run knows, by id (the inputs among them).
        read: A KPI's stored series (day -> value), after this run's writes.
        status_of: Why an input has no value for a day, when the run or a status file says.

    Returns:
        Outcomes in the order of `requests`: a value, an expected gap or a failure.
    """
    by_kpi: dict[str, list[FetchRequest]] = {}
    for request in requests:
        by_kpi.setdefault(request.spec.id, []).append(request)
    cache: dict[str, dict[date, float]] = {}
    built: dict[str, Series] = {}
    computed: dict[tuple[str, date], FetchOutcome] = {}

    def series_of(kpi_id: str) -> dict[date, float]:
        if kpi_id not in cache:
            cache[kpi_id] = dict(read(kpi_id))
        return cache[kpi_id]

    def arrays_of(kpi_id: str) -> Series:
        # Built once per input: a KPI's own days are all computed before those derived from it.
        if kpi_id not in built:
            built[kpi_id] = Series.of(series_of(kpi_id))
        return built[kpi_id]

    for spec in derived_order([r.spec for r in requests]):
        params = spec.derived
        for request in by_kpi.get(spec.id, []):
            started = time.perf_counter()
            try:
                inputs = [
                    (_input_spec(specs, name, spec), arrays_of(name)) for name in params.inputs
                ]
                for input_spec, series in inputs:
                    _require(input_spec, series, request, computed, status_of)
                value = value_on(params, request.day, inputs)
                update: KPIDataUpdate | KPIErrorUpdate = KPIDataUpdate(
                    traceId=request.trace_id,
                    kpiId=spec.id,
                    timestamp=request.timestamp,
                    value=value,
                    unit=spec.unit,
                    source=spec.metadata.source,
                    metadata={
                        "op": params.op,
                        "inputs": list(params.inputs),
                        **({"window": params.size} if params.size else {}),
                    },
                )
                series_of(spec.id)[request.day] = value
                built.pop(spec.id, None)
            except NotComputed as exc:
                update = make_error(
                    kpi_id=spec.id,
                    trace_id=request.trace_id,
                    timestamp=request.timestamp,
                    reason=exc.reason,
                    code=exc.code,
                    sourceKind="derived",
                )
            outcome = FetchOutcome(
                request=request,
                update=update,
                latency_ms=(time.perf_counter() - started) * 1000,
                attempts=0,
            )
            computed[(spec.id, request.day)] = outcome
    return [computed[(r.spec.id, r.day)] for r in requests]


def _input_spec(specs: Mapping[str, KpiSpec], name: str, spec: KpiSpec) -> KpiSpec:
    found = specs.get(name)
    if found is None:
        raise NotComputed(
            INPUT_MISSING, f"input kpi/{name} of kpi/{spec.id} is not an enabled KPI here"
        )
    return found


def _require(
    spec: KpiSpec,
    series: Series,
    request: FetchRequest,
    computed: Mapping[tuple[str, date], FetchOutcome],
    status_of: StatusOf,
) -> None:
    """Raise unless the input `spec` has a value on the request's day."""
    day = request.day
    if series.has(day):
        return
    own = computed.get((spec.id, day))
    if own is not None and isinstance(own.update, KPIErrorUpdate):
        # An input that is itself derived, computed just before in this run.
        gap = own.update.error_code in (GAP_INPUT, GAP_HISTORY)
        code = GAP_INPUT if gap else INPUT_FAILED
        verb = "has no value" if gap else "failed"
        raise NotComputed(code, f"input kpi/{spec.id} {verb} for {day}: {own.update.error}")
    reason = expected_gap(spec, day, request.today)
    if reason:
        raise NotComputed(GAP_INPUT, f"input kpi/{spec.id} has no observation for {day}: {reason}")
    known = status_of(spec.id, day)
    if known is not None:
        state, why = known
        if state == "gap":
            raise NotComputed(GAP_INPUT, f"input kpi/{spec.id} has no observation for {day}: {why}")
        raise NotComputed(INPUT_FAILED, f"input kpi/{spec.id} failed for {day}: {why}")
    raise NotComputed(
        INPUT_MISSING,
        f"input kpi/{spec.id} has no value for {day} (not fetched yet: materialise kpi/{spec.id} "
        f"for {day}, or both together)",
    )
