"""FRED (St. Louis Fed) series observations; needs an API key (`FRED_API_KEY`).

A past day asks for exactly that date: "." (FRED's marker for no value) or no row is an
error, never a neighbour's value. Today asks for the ten days up to the day and takes the
latest real observation, because daily series are published a day or more late; the date
actually observed goes into the metadata as `observedOn`.
"""

from __future__ import annotations

from datetime import timedelta

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import data_update, number, shape_error
from daily_index.sources.http import Http, SourceError

FAMILY = "fred"
TODAY_WINDOW_DAYS = 10


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
    first = request.day if request.is_past else request.day - timedelta(TODAY_WINDOW_DAYS - 1)
    base = settings.base_url(request.spec, FAMILY)
    body = await http.get_json(
        f"{base}/fred/series/observations",
        params={
            "series_id": series_id,
            "api_key": settings.fred_api_key,
            "file_type": "json",
            "observation_start": first.isoformat(),
            "observation_end": request.day.isoformat(),
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

    if request.is_past:
        row = next((o for o in rows if o.get("date") == request.day.isoformat()), None)
        if row is None:
            raise SourceError(
                f"FRED has no observation for {request.day} in {series_id} (no row that day; "
                "business-day series skip weekends)",
                "no_data",
            )
        if row.get("value") == ".":
            raise SourceError(
                f"FRED has no observation for {request.day} (value '.') in {series_id}",
                "no_data",
            )
    else:
        real = [o for o in rows if o.get("value") != "."]
        if not real:
            raise SourceError(
                f"FRED has no observation of {series_id} between {first} and {request.day}",
                "no_data",
                retryable=True,
            )
        row = max(real, key=lambda o: str(o.get("date")))
    value = number(row.get("value"), f"FRED {series_id} value on {row.get('date')}")
    return data_update(
        request,
        value,
        endpoint="fred/series/observations",
        seriesId=series_id,
        observedOn=row.get("date"),
    )
