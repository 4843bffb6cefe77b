"""Binance public market data: spot daily klines and perpetual funding rates.

`binance_kline` (params `symbol`, `field` = close | quote_volume): the 1d kline opening at
the day's 00:00 UTC from `/api/v3/klines` (spot). Today's kline is still open.
`binance_funding` (param `symbol`): mean of the day's funding rates (every 8 h) from
`/fapi/v1/fundingRate` (USD-M futures), times 100, i.e. percent.

Both are asked for once over every day of the run (`startTime` the first day's 00:00,
`endTime` the last day's 23:59:59.999 UTC), in pages of `PAGE_LIMIT` rows, Binance's most per
request; each day then reads its own rows, as from a one-day answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

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

PAGE_LIMIT = 1000
# A run of 5 years needs 2 pages of klines and 6 of funding events; more means a loop.
MAX_PAGES = 50

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


async def _pages(
    http: Http,
    url: str,
    family: str,
    params: dict[str, object],
    time_of: Callable[[object], int | None],
    what: tuple[str, str],
) -> list:
    """Every row from `startTime` to `endTime`, page after page of PAGE_LIMIT rows.

    A page with fewer rows is the last; the next starts 1 ms after the last row's time.
    """
    rows: list = []
    query = {**params, "limit": PAGE_LIMIT}
    for _ in range(MAX_PAGES):
        page = await http.get_json(url, family=family, params=query)
        if not isinstance(page, list):
            raise shape_error(*what, page)
        rows.extend(page)
        times = [t for t in (time_of(row) for row in page) if t is not None]
        if len(page) < PAGE_LIMIT or not times or max(times) >= int(str(params["endTime"])):
            return rows
        query = {**query, "startTime": max(times) + 1}
    raise SourceError(
        f"{what[0]}: more than {MAX_PAGES} pages of {PAGE_LIMIT} rows for one run; not read "
        "further",
        "too_large",
    )


async def _indexed(
    http: Http,
    url: str,
    family: str,
    params: dict[str, object],
    time_of: Callable[[object], int | None],
    what: tuple[str, str],
) -> tuple[list, dict[date, list], int | None]:
    """Every row of the range (`_pages`), its rows by UTC day, and the newest row's time.

    Computed once per range and shared by its days: each day reads its own rows instead of
    scanning the whole range.
    """
    rows = await _pages(http, url, family, params, time_of, what)
    by_day: dict[date, list] = {}
    newest: int | None = None
    for row in rows:
        moment = time_of(row)
        if moment is None:
            continue
        by_day.setdefault(utc_day(moment / 1000), []).append(row)
        newest = moment if newest is None else max(newest, moment)
    return rows, by_day, newest


def _kline_open(row: object) -> int | None:
    return row[0] if isinstance(row, list) and row and _is_ms(row[0]) else None


def _funding_time(row: object) -> int | None:
    stamp = row.get("fundingTime") if isinstance(row, dict) else None
    return stamp if _is_ms(stamp) else None


def _span_ms(http: Http, request: FetchRequest) -> tuple[int, int]:
    days = http.batch.days_of(request)
    return day_bounds_ms(min(days[0], request.day))[0], day_bounds_ms(max(days[-1], request.day))[1]


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
    first, last = _span_ms(http, request)
    url = f"{base}/api/v3/klines"
    rows, by_day, newest_ms = await http.shared(
        ("klines", url, symbol, first, last),
        lambda own: _indexed(
            own,
            url,
            SPOT,
            {"symbol": symbol, "interval": "1d", "startTime": first, "endTime": last},
            _kline_open,
            ("/api/v3/klines", "a list of kline arrays"),
        ),
    )
    row = next((r for r in by_day.get(request.day, []) if len(r) >= 8 and r[0] == start), None)
    if row is None:
        if newest_ms is not None and newest_ms < start:
            newest = utc_day(newest_ms / 1000)
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
    first, last = _span_ms(http, request)
    url = f"{base}/fapi/v1/fundingRate"
    rows, by_day, newest_ms = await http.shared(
        ("funding", url, symbol, first, last),
        lambda own: _indexed(
            own,
            url,
            FUTURES,
            {"symbol": symbol, "startTime": first, "endTime": last},
            _funding_time,
            ("/fapi/v1/fundingRate", "a list of funding events"),
        ),
    )
    in_day = [r for r in by_day.get(request.day, []) if start <= r["fundingTime"] <= end]
    rates = [
        number(r.get("fundingRate"), f"/fapi/v1/fundingRate {symbol} fundingRate") for r in in_day
    ]
    if not rates:
        if newest_ms is not None and newest_ms < start:
            newest = utc_day(newest_ms / 1000)
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
