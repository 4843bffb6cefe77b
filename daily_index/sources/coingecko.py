"""CoinGecko (keyless public API): coin prices and global market figures.

`coingecko_price` (params `coin`, `vs`): today from `/simple/price` with the coin's
`last_updated_at`, which must fall on the day; a past day from
`/coins/{coin}/market_chart/range` (the last point inside that UTC day), asked once for
every past day of the run (from the first day's 00:00 to the last day's 23:59:59 UTC).
CoinGecko picks the granularity from the span (documented: 5-minutely up to a day, hourly
up to 90 days, daily at 00:00 UTC beyond), so the day's last point is about 23:55 in a
one-day run, 23:00 in a range of up to 90 days and 00:00 in a longer one.
`coingecko_global` (param `field`, a dotted path into `data` of `/global`): today only, and
only when `data.updated_at` falls on the day; the keyless API keeps no history of these
figures, so a past day is an expected gap (`no_history`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import (
    data_update,
    day_bounds_s,
    iso_utc,
    iso_utc_ms,
    number,
    require_day,
    shape_error,
    utc_day,
)
from daily_index.sources.http import Http, SourceError

FAMILY = "coingecko"


def _param(request: FetchRequest, name: str) -> str:
    value = request.spec.source.params.get(name)
    if not isinstance(value, str) or not value:
        raise SourceError(
            f"registry: source param {name!r} of KPI {request.spec.id!r} is missing",
            "bad_params",
        )
    return value


async def fetch_price(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    coin = _param(request, "coin").lower()
    vs = _param(request, "vs").lower()
    base = settings.base_url(request.spec, FAMILY)
    if not request.is_past:
        body = await http.get_json(
            f"{base}/simple/price",
            family=FAMILY,
            params={"ids": coin, "vs_currencies": vs, "include_last_updated_at": "true"},
        )
        if not isinstance(body, dict):
            raise shape_error("/simple/price", "an object keyed by coin id", body)
        quotes = body.get(coin)
        if not isinstance(quotes, dict) or vs not in quotes:
            raise SourceError(
                f"/simple/price has no {coin!r} quote in {vs!r} (coin ids in the answer: "
                f"{sorted(body)[:5]})",
                "no_data",
            )
        updated = _unix_seconds(
            quotes.get("last_updated_at"), f"/simple/price field {coin}.last_updated_at"
        )
        require_day(
            request, utc_day(updated), f"CoinGecko's {coin} quote (last updated {iso_utc(updated)})"
        )
        value = number(quotes[vs], f"/simple/price field {coin}.{vs}")
        return data_update(
            request,
            value,
            observed_on=utc_day(updated),
            observed_at=iso_utc(updated),
            endpoint="coingecko/simple/price",
            coin=coin,
            vs=vs,
        )

    start, end = day_bounds_s(request.day)
    past = [day for day in http.batch.days_of(request) if day < request.today] or [request.day]
    body = await http.get_json(
        f"{base}/coins/{coin}/market_chart/range",
        family=FAMILY,
        params={
            "vs_currency": vs,
            "from": day_bounds_s(past[0])[0],
            "to": day_bounds_s(past[-1])[1],
        },
    )
    prices = body.get("prices") if isinstance(body, dict) else None
    if not isinstance(prices, list):
        raise shape_error("/market_chart/range field 'prices'", "a list of [ms, price]", prices)
    by_day = await http.shared(("coingecko_by_day", id(prices)), lambda _: _by_day(prices))
    in_day = [point for point in by_day.get(request.day, []) if _in_range(point[0], start, end)]
    if not in_day:
        raise SourceError(
            f"/market_chart/range has no {coin}/{vs} price inside {request.day} "
            f"({len(prices)} points in the answer)",
            "no_data",
        )
    moment_ms, raw = max(in_day, key=lambda point: point[0])
    value = number(raw, f"/market_chart/range price of {coin}/{vs} at {moment_ms}")
    return data_update(
        request,
        value,
        observed_on=request.day,
        observed_at=iso_utc_ms(moment_ms),
        endpoint="coingecko/coins/market_chart/range",
        coin=coin,
        vs=vs,
        pointTime=int(moment_ms),
    )


def _unix_seconds(value: Any, what: str) -> float:
    """A unix time in seconds that the answer must carry: the only date it gives."""
    if value is None:
        raise SourceError(
            f"{what} is missing; without it the day of the value is unknown, nothing stored",
            "missing_field",
        )
    stamp = number(value, what)
    if not 0 < stamp < 32_503_680_000:  # 3000-01-01: anything later is not unix seconds
        raise SourceError(f"{what} is {value!r}; expected unix seconds", "invalid_value")
    return stamp


async def _by_day(prices: list) -> dict[date, list]:
    """The [ms, price] points of a range answer by UTC day, parsed once for all its days."""
    days: dict[date, list] = {}
    for point in prices:
        if isinstance(point, list) and len(point) == 2 and isinstance(point[0], int | float):
            try:
                day = utc_day(point[0] / 1000)
            except (ValueError, OverflowError, OSError):
                continue
            days.setdefault(day, []).append(point)
    return days


def _in_range(moment_ms: Any, start_s: int, end_s: int) -> bool:
    return isinstance(moment_ms, int | float) and start_s * 1000 <= moment_ms <= end_s * 1000 + 999


async def fetch_global(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    path = _param(request, "field")
    if request.is_past:
        raise SourceError(
            f"CoinGecko's keyless API has no history for /global (field {path!r}), so "
            f"{request.day} cannot be fetched; loading history from a file is planned (its "
            "own issue), until then the day stays empty",
            "no_history",
        )
    base = settings.base_url(request.spec, FAMILY)
    body = await http.get_json(f"{base}/global", family=FAMILY)
    node: Any = body.get("data") if isinstance(body, dict) else None
    if not isinstance(node, dict):
        raise shape_error("/global field 'data'", "an object", node)
    updated = _unix_seconds(node.get("updated_at"), "/global field data.updated_at")
    require_day(
        request, utc_day(updated), f"CoinGecko's /global figures (updated {iso_utc(updated)})"
    )
    walked = "data"
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SourceError(
                f"/global has no field {walked}.{part} (asked for data.{path})", "no_data"
            )
        node = node[part]
        walked = f"{walked}.{part}"
    value = number(node, f"/global field data.{path}")
    return data_update(
        request,
        value,
        observed_on=utc_day(updated),
        observed_at=iso_utc(updated),
        endpoint="coingecko/global",
        field=path,
    )
