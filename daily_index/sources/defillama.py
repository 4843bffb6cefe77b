"""DefiLlama stablecoins: total circulating USD-pegged supply (`/stablecoincharts/all`).

The answer is the whole history, one point per UTC day stamped at 00:00 (`date`, unix
seconds as a string), so a run asks for it once whatever its days. A day's value is that
day's own point: today's point may not be out yet, and the newest one then is yesterday's,
which is `stale`, never stored under today.
"""

from __future__ import annotations

import bisect
from datetime import date

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import (
    data_update,
    iso_utc,
    number,
    require_day,
    shape_error,
    utc_day,
)
from daily_index.sources.http import Http, SourceError

FAMILY = "defillama_stablecoins"


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    base = settings.base_url(request.spec, FAMILY)
    points = await http.get_json(f"{base}/stablecoincharts/all", family=FAMILY)
    if not isinstance(points, list) or not points:
        raise shape_error("/stablecoincharts/all", "a non-empty list of daily points", points)
    # The chart is one answer for every day of the run: its dates are parsed once too (the
    # shared answer stays alive for the batch, so its id names it).
    dated, days = await http.shared(("defillama_dated", id(points)), lambda _: _dated(points))
    unparseable = len(points) - len(dated)
    skipped = (
        f"; {unparseable} of {len(points)} points had no valid date and were skipped"
        if unparseable
        else ""
    )
    # The latest point not after the day: the day's own, or the newest before it.
    before = bisect.bisect_right(days, request.day)
    if not before:
        newest = iso_utc(max(s for s, _ in dated)) if dated else "none"
        raise SourceError(
            f"/stablecoincharts/all has no point on or before {request.day} "
            f"({len(points)} points, newest {newest}){skipped}",
            "no_data",
            retryable=not request.is_past,
            unparseablePoints=unparseable,
        )
    stamp, point = dated[before - 1]
    try:
        return _value_of(
            request, points, stamp, point, later=days[-1] > request.day, unparseable=unparseable
        )
    except SourceError as exc:
        # Skipped points may be why the day is missing: every reason says how many.
        exc.reason += skipped
        exc.metadata["unparseablePoints"] = unparseable
        raise


async def _dated(points: list) -> tuple[list[tuple[float, dict]], list[date]]:
    """The points with a valid date (unix seconds) and their stamps, oldest first.

    Also their UTC days, in the same order, for bisecting.
    """
    dated: list[tuple[float, dict]] = []
    for point in points:
        if isinstance(point, dict):
            try:
                stamp = number(point.get("date"), "/stablecoincharts/all 'date'")
                utc_day(stamp)
            except (SourceError, ValueError, OverflowError, OSError):
                continue
            dated.append((stamp, point))
    dated.sort(key=lambda item: item[0])
    return dated, [utc_day(stamp) for stamp, _ in dated]


def _value_of(
    request: FetchRequest, points: list, stamp: float, point: dict, *, later: bool, unparseable: int
) -> KPIUpdate:
    """The value of the latest point not after the day; `later`: points after the day exist."""
    observed = utc_day(stamp)
    if observed != request.day and later:
        # Points after the day but none on it: a hole in DefiLlama's history, not lateness.
        raise SourceError(
            f"/stablecoincharts/all has no point for {request.day} ({len(points)} points; the "
            f"one before it is {observed}, later ones exist)",
            "no_data",
        )
    require_day(request, observed, "DefiLlama's newest stablecoin point")
    circulating = point.get("totalCirculatingUSD")
    if not isinstance(circulating, dict):
        raise shape_error(
            f"/stablecoincharts/all field 'totalCirculatingUSD' at {iso_utc(stamp)}",
            "an object with peggedUSD",
            circulating,
        )
    value = number(
        circulating.get("peggedUSD"),
        f"/stablecoincharts/all field totalCirculatingUSD.peggedUSD at {iso_utc(stamp)}",
    )
    return data_update(
        request,
        value,
        observed_on=observed,
        observed_at=iso_utc(stamp),
        endpoint="defillama/stablecoincharts/all",
        pointTime=iso_utc(stamp),
        unparseablePoints=unparseable,
    )
