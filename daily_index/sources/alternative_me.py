"""alternative.me Crypto Fear & Greed index (`/fng/`), newest entry first, one per UTC day."""

from __future__ import annotations

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

FAMILY = "alternative_me"


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    base = settings.base_url(request.spec, FAMILY)
    # Entries are daily and newest first: enough of them to reach back to the run's first
    # day (one request for all its days), plus one in case today's is not published yet.
    # Timestamps stay unix seconds (no date_format): the only unambiguous format.
    first = http.batch.days_of(request)[0]
    limit = max((request.today - min(first, request.day)).days, 0) + 2
    body = await http.get_json(f"{base}/fng/", family=FAMILY, params={"limit": limit})
    if not isinstance(body, dict):
        raise shape_error("/fng/", "an object with 'data'", body)
    metadata = body.get("metadata")
    error = metadata.get("error") if isinstance(metadata, dict) else None
    if error:
        raise SourceError(f"/fng/ reported an error: {str(error)[:200]}", "api_error")
    entries = body.get("data")
    if not isinstance(entries, list) or not entries:
        raise shape_error("/fng/ field 'data'", "a non-empty list of entries", entries)
    days = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            stamp = number(entry.get("timestamp"), "/fng/ field 'timestamp'")
            day = utc_day(stamp)
        except (SourceError, ValueError, OverflowError, OSError):
            continue
        days.append(day)
        if day == request.day:
            value = number(entry.get("value"), f"/fng/ field 'value' for {request.day}")
            return data_update(
                request,
                value,
                observed_on=day,
                observed_at=iso_utc(stamp),
                endpoint="alternative_me/fng",
                classification=entry.get("value_classification"),
            )
    if days and max(days) < request.day:
        require_day(request, max(days), "alternative.me's newest Fear & Greed entry")
    newest = entries[0].get("timestamp") if isinstance(entries[0], dict) else None
    raise SourceError(
        f"/fng/ has no entry for {request.day} among its {len(entries)} newest "
        f"(newest timestamp {newest!r})",
        "no_data",
        retryable=not request.is_past,
    )
