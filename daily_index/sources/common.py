"""Helpers the source modules share: day bounds, number parsing, building the update."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from daily_index.contract import KPIDataUpdate, check_domain
from daily_index.sources.base import FetchRequest
from daily_index.sources.http import SourceError


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_bounds_s(day: date) -> tuple[int, int]:
    """First and last second (unix) of the UTC day."""
    start = int(day_start(day).timestamp())
    return start, start + 86_400 - 1


def day_bounds_ms(day: date) -> tuple[int, int]:
    """First and last millisecond (unix) of the UTC day."""
    start = int(day_start(day).timestamp()) * 1000
    return start, start + 86_400_000 - 1


def utc_day(unix_seconds: float) -> date:
    return datetime.fromtimestamp(unix_seconds, tz=UTC).date()


def iso_utc(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def iso_utc_ms(unix_ms: float) -> str:
    return iso_utc(unix_ms / 1000)


def require_day(request: FetchRequest, observed: date, what: str) -> None:
    """Refuse an observation that is not of the request's day (UTC).

    `what` names the observation in the reason, e.g. "DefiLlama's newest stablecoin point".
    An older one is `stale`: worth retrying today (the source may still publish the day),
    final for a past day. A later one is `wrong_day`: storing it would put a future value
    under this date.

    Raises:
        SourceError: `stale` or `wrong_day`, with both dates in the reason.
    """
    if observed == request.day:
        return
    if observed < request.day:
        later = (
            "; it may still be published, so a later run can retry" if not request.is_past else ""
        )
        raise SourceError(
            f"{what} is {observed}, not {request.day}: stale, nothing stored{later}",
            "stale",
            retryable=not request.is_past,
            observedOn=observed.isoformat(),
        )
    raise SourceError(
        f"{what} is {observed}, after {request.day}: another day's value, nothing stored",
        "wrong_day",
        observedOn=observed.isoformat(),
    )


def number(value: Any, what: str) -> float:
    """A finite float from a JSON number or a numeric string, else a SourceError.

    APIs such as Binance and alternative.me send numbers as strings; that is their documented
    shape, so the source parses them (the n8n wire contract, by contrast, is strict).
    """
    if value is None:
        raise SourceError(f"{what} is null; expected a number", "missing_value")
    if isinstance(value, bool):
        raise SourceError(f"{what} is a boolean ({value}); expected a number", "invalid_value")
    if isinstance(value, int | float):
        parsed = float(value)
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise SourceError(
                f"{what} is {value[:40]!r}; expected a number", "invalid_value"
            ) from None
    else:
        raise SourceError(f"{what} is a {type(value).__name__}; expected a number", "invalid_value")
    if not math.isfinite(parsed):
        raise SourceError(f"{what} is {value!r}; expected a finite number", "invalid_value")
    return parsed


def shape_error(what: str, expected: str, got: Any) -> SourceError:
    """The response does not have the documented shape."""
    kind = "null" if got is None else type(got).__name__
    if isinstance(got, list | dict) and not got:
        kind = f"an empty {kind}"
    return SourceError(f"{what}: expected {expected}, got {kind}", "unexpected_shape")


def next_day(day: date) -> date:
    return day + timedelta(days=1)


def data_update(
    request: FetchRequest,
    value: float,
    *,
    observed_on: date,
    observed_at: str | None = None,
    **metadata: Any,
) -> KPIDataUpdate:
    """The success update for a request, after the KPI type's domain check.

    `observed_on` is the day of the source's own observation (checked against the request:
    only a value of the request's day is ever stored under it); `observed_at` its time, ISO
    UTC, where the API gives one. Both go into the metadata as `observedOn` / `observedAt`.

    Raises:
        SourceError: the value is impossible for the KPI's type (negative price, ...).
    """
    require_day(request, observed_on, "the observation")
    observed = {"observedOn": observed_on.isoformat()}
    if observed_at is not None:
        observed["observedAt"] = observed_at
    spec = request.spec
    update = KPIDataUpdate(
        traceId=request.trace_id,
        kpiId=spec.id,
        timestamp=request.timestamp,
        value=value,
        unit=spec.unit or None,
        source=spec.metadata.source,
        metadata={"sourceKind": spec.source.kind, **metadata, **observed},
    )
    problem = check_domain(update, spec.type)
    if problem:
        raise SourceError(problem, "out_of_domain", value=value)
    return update
