"""FRED (St. Louis Fed) series observations; needs an API key (`FRED_API_KEY`).

A run asks for each series once, from its first day to its last (`observation_start`,
`observation_end`); each day then reads only its own rows. A past day reads exactly that
date: "." (FRED's marker for no value, e.g. a market holiday) is an expected gap
(`no_observation`); no row at all is a failure (`no_data`); a neighbour's value is never
taken. Today reads the ten days up to the day so the answer shows how far the series has
got: FRED publishes daily series a day or more late, so its newest observation is usually
older than today, which is `stale` (retried later), never stored under today's date.
"""

from __future__ import annotations

from datetime import date, timedelta

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import data_update, number, require_day, shape_error
from daily_index.sources.http import Http, SourceError

FAMILY = "fred"
TODAY_WINDOW_DAYS = 10


def _window_start(day: date, today: date) -> date:
    """The first date a day's answer covers: the day itself, or ten days back for today."""
    return day if day < today else day - timedelta(TODAY_WINDOW_DAYS - 1)


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    series_id = request.spec.source.params.get("series_id")
    if not isinstance(series_id, str) or not series_id:
        raise SourceError(
            f"registry: source param 'series_id' of KPI {request.spec.id!r} is missing",
            "bad_params",
        )
    if not settings.fred_api_key:
        raise SourceError(
            "FRED needs an API key: set FRED_API_KEY (free at fred.stlouisfed.org)",
            "missing_secret",
        )
    first = _window_start(request.day, request.today)
    days = http.batch.days_of(request)
    base = settings.base_url(request.spec, FAMILY)
    # One request for the series over every day of the run; each day reads its own window.
    body = await http.get_json(
        f"{base}/fred/series/observations",
        family=FAMILY,
        params={
            "series_id": series_id,
            "api_key": settings.fred_api_key,
            "file_type": "json",
            "observation_start": min(
                first, *(_window_start(d, request.today) for d in days)
            ).isoformat(),
            "observation_end": max(request.day, days[-1]).isoformat(),
        },
    )
    observations = body.get("observations") if isinstance(body, dict) else None
    if not isinstance(observations, list):
        raise shape_error("FRED observations", "an object with 'observations'", body)
    window = (first.isoformat(), request.day.isoformat())
    rows = [
        o
        for o in observations
        if isinstance(o, dict) and window[0] <= str(o.get("date")) <= window[1]
    ]

    day = request.day.isoformat()
    row = next((o for o in rows if o.get("date") == day), None)
    if row is not None and row.get("value") == ".":
        raise SourceError(
            f"FRED has no observation of {series_id} for {request.day}: it marks no value "
            "that day ('.'), e.g. a market holiday",
            "no_observation",
        )
    if request.is_past and row is None:
        raise SourceError(
            f"FRED has no observation for {request.day} in {series_id} (no row that day; "
            "business-day series skip weekends)",
            "no_data",
        )
    if row is None:
        real = [o for o in rows if o.get("value") != "."]
        if not real:
            raise SourceError(
                f"FRED has no observation of {series_id} between {first} and {request.day}",
                "no_data",
                retryable=True,
            )
        newest = max(real, key=lambda o: str(o.get("date")))
        try:
            observed = date.fromisoformat(str(newest.get("date")))
        except ValueError:
            raise SourceError(
                f"FRED {series_id} observation date {str(newest.get('date'))[:20]!r} is not "
                "YYYY-MM-DD",
                "invalid_value",
            ) from None
        # Every row is on or before the day and none is of it: this always refuses.
        require_day(
            request,
            observed,
            f"FRED's newest {series_id} observation (FRED publishes daily series with a lag "
            "of a day or more)",
        )
    value = number(row.get("value"), f"FRED {series_id} value on {day}")
    return data_update(
        request,
        value,
        observed_on=request.day,
        endpoint="fred/series/observations",
        seriesId=series_id,
    )
