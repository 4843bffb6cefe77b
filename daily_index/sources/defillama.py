"""DefiLlama stablecoins: total circulating USD-pegged supply (`/stablecoincharts/all`)."""

from __future__ import annotations

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import (
    data_update,
    day_bounds_s,
    iso_utc,
    number,
    shape_error,
)
from daily_index.sources.http import Http, SourceError

FAMILY = "defillama_stablecoins"


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    base = settings.base_url(request.spec, FAMILY)
    points = await http.get_json(f"{base}/stablecoincharts/all")
    if not isinstance(points, list) or not points:
        raise shape_error("/stablecoincharts/all", "a non-empty list of daily points", points)
    start, end = day_bounds_s(request.day)
    dated: list[tuple[float, dict]] = []
    for point in points:
        if isinstance(point, dict):
            try:
                dated.append((number(point.get("date"), "/stablecoincharts/all 'date'"), point))
            except SourceError:
                continue
    if request.is_past:
        # History is daily at 00:00 UTC: a past day must be that day's own point.
        candidates = [(stamp, p) for stamp, p in dated if start <= stamp <= end]
    else:
        # Today's point may not be out yet; the latest one not after the day stands in.
        candidates = [(stamp, p) for stamp, p in dated if stamp <= end]
    if not candidates:
        raise SourceError(
            f"/stablecoincharts/all has no point for {request.day} ({len(points)} points, "
            f"latest {iso_utc(max(s for s, _ in dated)) if dated else 'none'})",
            "no_data",
            retryable=not request.is_past,
        )
    stamp, point = max(candidates, key=lambda item: item[0])
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
        request, value, endpoint="defillama/stablecoincharts/all", pointTime=iso_utc(stamp)
    )
