"""CoinGecko (keyless public API): coin prices and global market figures.

`coingecko_price` (params `coin`, `vs`): today from `/simple/price`, a past day from
`/coins/{coin}/market_chart/range` (the last point inside that UTC day).
`coingecko_global` (param `field`, a dotted path into `data` of `/global`): today only; the
keyless API keeps no history of these figures, so a past day is an error that says so.
"""

from __future__ import annotations

from typing import Any

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import data_update, day_bounds_s, number, shape_error
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
            f"{base}/simple/price", params={"ids": coin, "vs_currencies": vs}
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
        value = number(quotes[vs], f"/simple/price field {coin}.{vs}")
        return data_update(request, value, endpoint="coingecko/simple/price", coin=coin, vs=vs)

    start, end = day_bounds_s(request.day)
    body = await http.get_json(
        f"{base}/coins/{coin}/market_chart/range",
        params={"vs_currency": vs, "from": start, "to": end},
    )
    prices = body.get("prices") if isinstance(body, dict) else None
    if not isinstance(prices, list):
        raise shape_error("/market_chart/range field 'prices'", "a list of [ms, price]", prices)
    in_day = [
        point
        for point in prices
        if isinstance(point, list) and len(point) == 2 and _in_range(point[0], start, end)
    ]
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
        endpoint="coingecko/coins/market_chart/range",
        coin=coin,
        vs=vs,
        pointTime=int(moment_ms),
    )


def _in_range(moment_ms: Any, start_s: int, end_s: int) -> bool:
    return isinstance(moment_ms, int | float) and start_s * 1000 <= moment_ms <= end_s * 1000 + 999


async def fetch_global(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    path = _param(request, "field")
    if request.is_past:
        raise SourceError(
            f"CoinGecko's keyless API has no history for /global (field {path!r}), so "
            f"{request.day} cannot be fetched; import it from a CSV instead",
            "no_history",
        )
    base = settings.base_url(request.spec, FAMILY)
    body = await http.get_json(f"{base}/global")
    node: Any = body.get("data") if isinstance(body, dict) else None
    if not isinstance(node, dict):
        raise shape_error("/global field 'data'", "an object", node)
    walked = "data"
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SourceError(
                f"/global has no field {walked}.{part} (asked for data.{path})", "no_data"
            )
        node = node[part]
        walked = f"{walked}.{part}"
    value = number(node, f"/global field data.{path}")
    return data_update(request, value, endpoint="coingecko/global", field=path)
