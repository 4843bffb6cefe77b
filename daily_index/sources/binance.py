"""Binance public market data: spot daily klines and perpetual funding rates.

`binance_kline` (params `symbol`, `field` = close | quote_volume): the 1d kline opening at
the day's 00:00 UTC from `/api/v3/klines` (spot). Today's kline is still open.
`binance_funding` (param `symbol`): mean of the day's funding rates (every 8 h) from
`/fapi/v1/fundingRate` (USD-M futures), times 100, i.e. percent.
"""

from __future__ import annotations

from daily_index.contract import KPIUpdate
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.common import (
    data_update,
    day_bounds_ms,
    iso_utc_ms,
    number,
    require_day,
    shape_error,
    utc_day,
)
from daily_index.sources.http import Http, SourceError

SPOT = "binance_spot"
FUTURES = "binance_futures"

# Column of each field in a kline row, per Binance's documented array layout.
KLINE_FIELDS = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7}


def _symbol(request: FetchRequest) -> str:
    symbol = request.spec.source.params.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise SourceError(
            f"registry: source param 'symbol' of KPI {request.spec.id!r} is missing", "bad_params"
        )
    return symbol.upper()


def _is_ms(value: object) -> bool:
    """A plausible unix time in milliseconds (Binance's only time format)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 32_503_680_000_000


async def fetch_kline(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    symbol = _symbol(request)
    field = request.spec.source.params.get("field", "close")
    if field not in KLINE_FIELDS:
        raise SourceError(
            f"registry: kline field {field!r} of KPI {request.spec.id!r} is not one of "
            f"{sorted(KLINE_FIELDS)}",
            "bad_params",
        )
    start, end = day_bounds_ms(request.day)
    base = settings.base_url(request.spec, SPOT)
    rows = await http.get_json(
        f"{base}/api/v3/klines",
        params={"symbol": symbol, "interval": "1d", "startTime": start, "endTime": end},
    )
    if not isinstance(rows, list):
        raise shape_error("/api/v3/klines", "a list of kline arrays", rows)
    row = next((r for r in rows if isinstance(r, list) and len(r) >= 8 and r[0] == start), None)
    if row is None:
        opens = [r[0] for r in rows if isinstance(r, list) and r and _is_ms(r[0])]
        if opens and max(opens) < start:
            newest = utc_day(max(opens) / 1000)
            require_day(request, newest, f"Binance's newest {symbol} 1d kline")
        raise SourceError(
            f"/api/v3/klines has no {symbol} 1d kline opening {request.day} 00:00 UTC "
            f"({len(rows)} rows in the answer)",
            "no_data",
            retryable=not request.is_past,
        )
    value = number(row[KLINE_FIELDS[field]], f"/api/v3/klines {symbol} {field} of {request.day}")
    return data_update(
        request,
        value,
        observed_on=request.day,
        endpoint="binance/api/v3/klines",
        symbol=symbol,
        field=field,
        klineOpen=start,
        inProgress=not request.is_past,
    )


async def fetch_funding(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    symbol = _symbol(request)
    start, end = day_bounds_ms(request.day)
    base = settings.base_url(request.spec, FUTURES)
    rows = await http.get_json(
        f"{base}/fapi/v1/fundingRate",
        params={"symbol": symbol, "startTime": start, "endTime": end, "limit": 1000},
    )
    if not isinstance(rows, list):
        raise shape_error("/fapi/v1/fundingRate", "a list of funding events", rows)
    in_day = [
        r
        for r in rows
        if isinstance(r, dict) and _is_ms(r.get("fundingTime")) and start <= r["fundingTime"] <= end
    ]
    rates = [
        number(r.get("fundingRate"), f"/fapi/v1/fundingRate {symbol} fundingRate") for r in in_day
    ]
    if not rates:
        times = [
            r["fundingTime"] for r in rows if isinstance(r, dict) and _is_ms(r.get("fundingTime"))
        ]
        if times and max(times) < start:
            newest = utc_day(max(times) / 1000)
            require_day(request, newest, f"Binance's newest {symbol} funding event")
        raise SourceError(
            f"/fapi/v1/fundingRate returned no {symbol} funding events for {request.day} "
            f"({len(rows)} rows in the answer)",
            "no_data",
            retryable=not request.is_past,
        )
    average_percent = sum(rates) / len(rates) * 100
    return data_update(
        request,
        average_percent,
        observed_on=request.day,
        observed_at=iso_utc_ms(max(r["fundingTime"] for r in in_day)),
        endpoint="binance/fapi/v1/fundingRate",
        symbol=symbol,
        samples=len(rates),
    )
