"""Imitations of the keyless APIs over years of synthetic history, for range-fetch tests.

The recorded replay (daily_index/replay.py) covers four months; a 365-day load needs more.
Each route answers the way the API's documentation says, with the limits that shape a range
fetch:
- CoinGecko `/coins/{id}/market_chart/range`: the keyless tier refuses `from` more than 365
  days back (401, error 10012); granularity follows the span (up to 1 day: 5-minutely, up to
  90 days: hourly, beyond: daily at 00:00 UTC). `/simple/price`, `/global`: as of today.
- Binance `/api/v3/klines` (`limit` 500 by default, at most 1,000; rows ascending by open
  time; today's kline still open) and `/fapi/v1/fundingRate` (`limit` 100 by default, at
  most 1,000; events at 00:00, 08:00, 16:00 UTC).
- alternative.me `/fng/?limit=N`: the newest N daily entries, newest first (`limit=0`: all).
- DefiLlama `/stablecoincharts/all`: the whole history, one point per day at 00:00 UTC.
- FRED `/fred/series/observations`: business days (DFF: every day), "." on a holiday,
  nothing newer than two days ago.

`missing` removes a family's observation of some days (a hole in its history); `requests`
logs every request (path and query) in arrival order, through `ApiServer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from daily_index.replay import DEMO_DAY
from daily_index_tests.apiserver import ApiServer, Handler

FIRST_DAY = date(2021, 1, 1)
KEYLESS_DAYS = 365
DAY_S = 86_400
PREFIXES = {
    "coingecko": "/coingecko/api/v3",
    "alternative_me": "/alternative_me",
    "binance_spot": "/binance_spot",
    "binance_futures": "/binance_futures",
    "defillama_stablecoins": "/defillama_stablecoins",
    "fred": "/fred",
}
COINS = {("bitcoin", "usd"): 60_000.0, ("ethereum", "usd"): 3_000.0, ("solana", "usd"): 150.0}
COINS[("ethereum", "btc")] = 0.05
SERIES = {"DGS10": 4.0, "DTWEXBGS": 120.0, "DFF": 4.33}
SEVEN_DAY_SERIES = {"DFF"}  # the effective federal funds rate is published for every day
SYMBOLS = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}


def unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def utc_day(seconds: float) -> date:
    return datetime.fromtimestamp(seconds, tz=UTC).date()


def price(base: float, seconds: float) -> float:
    """A value that differs every hour and every day, so a wrong point shows."""
    return round(base * (1 + 0.1 * math.sin(seconds / DAY_S / 9)) + seconds % DAY_S / 3600, 6)


def requests_of(kpi: Any, log: list[tuple[str, dict[str, str]]]) -> int:
    """How many logged requests a KPI needed (a shared one counts for each KPI reading it)."""
    params = kpi.source.params
    kind = kpi.source.kind

    def wanted(path: str, query: dict[str, str]) -> bool:
        if kind == "coingecko_price":
            coin, vs = params["coin"], params["vs"]
            chart = f"/coins/{coin}/" in path and query.get("vs_currency") == vs
            live = path.endswith("/simple/price") and (query.get("ids"), query.get("vs_currencies"))
            return chart or live == (coin, vs)
        if kind == "coingecko_global":
            return path.endswith("/global")
        if kind in ("binance_kline", "binance_funding"):
            endpoint = "/klines" if kind == "binance_kline" else "/fundingRate"
            return path.endswith(endpoint) and query.get("symbol") == params["symbol"]
        if kind == "fred":
            return path.endswith("/observations") and query.get("series_id") == params["series_id"]
        if kind == "alternative_me_fng":
            return path.endswith("/fng/")
        if kind == "defillama_stablecoins":
            return path.endswith("/stablecoincharts/all")
        return False

    return sum(1 for path, query in log if wanted(path, query))


@dataclass
class Imitations:
    """The imitation APIs on one ApiServer; `today` is the imitations' present."""

    today: date = DEMO_DAY
    missing: dict[str, set[date]] = field(default_factory=dict)
    holidays: set[date] = field(default_factory=set)
    server: ApiServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = ApiServer(self._routes())

    def __enter__(self) -> Imitations:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def base_urls(self) -> dict[str, str]:
        return {family: f"{self.server.url}{prefix}" for family, prefix in PREFIXES.items()}

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        return self.server.requests

    def count(self, path_part: str) -> int:
        return sum(1 for path, _ in self.server.requests if path_part in path)

    # data

    def _has(self, family: str, day: date) -> bool:
        return FIRST_DAY <= day <= self.today and day not in self.missing.get(family, set())

    def _days(self, family: str, first: date, last: date) -> Iterable[date]:
        day = max(first, FIRST_DAY)
        while day <= min(last, self.today):
            if self._has(family, day):
                yield day
            day += timedelta(days=1)

    @property
    def _now_s(self) -> int:
        return unix(self.today) + 9 * 3600

    # routes

    def _routes(self) -> dict[str, Handler]:
        cg = PREFIXES["coingecko"]
        routes: dict[str, Handler] = {
            f"{cg}/simple/price": self._simple_price,
            f"{cg}/global": self._global,
            f"{PREFIXES['alternative_me']}/fng/": self._fng,
            f"{PREFIXES['binance_spot']}/api/v3/klines": self._klines,
            f"{PREFIXES['binance_futures']}/fapi/v1/fundingRate": self._funding,
            f"{PREFIXES['defillama_stablecoins']}/stablecoincharts/all": self._stablecoins,
            f"{PREFIXES['fred']}/fred/series/observations": self._fred,
        }
        for coin in {c for c, _ in COINS}:
            routes[f"{cg}/coins/{coin}/market_chart/range"] = self._chart(coin)
        return routes

    def _simple_price(self, query: dict[str, str]) -> tuple[int, Any]:
        coins, vs = query.get("ids", "").split(","), query.get("vs_currencies", "")
        now = self._now_s
        return 200, {
            coin: {vs: price(COINS[(coin, vs)], now), "last_updated_at": now}
            for coin in coins
            if (coin, vs) in COINS
        }

    def _global(self, query: dict[str, str]) -> tuple[int, Any]:
        return 200, {
            "data": {
                "market_cap_percentage": {"btc": 57.1, "eth": 12.2, "usdt": 4.6},
                "total_market_cap": {"usd": 3.2e12},
                "updated_at": self._now_s,
            }
        }

    def _chart(self, coin: str) -> Handler:
        def answer(query: dict[str, str]) -> tuple[int, Any]:
            vs = query.get("vs_currency", "")
            if (coin, vs) not in COINS:
                return 404, {"error": "coin not found"}
            start, end = int(query["from"]), int(query["to"])
            if start < unix(self.today) - KEYLESS_DAYS * DAY_S:
                return 401, {
                    "error": {
                        "status": {
                            "error_code": 10012,
                            "error_message": "Your request exceeds the allowed time range. "
                            "Public API users are limited to querying historical data within "
                            "the past 365 days.",
                        }
                    }
                }
            span = end - start
            step = 300 if span <= DAY_S else 3600 if span <= 90 * DAY_S else DAY_S
            points = []
            moment = start - start % step
            while moment <= end:
                if moment >= start and self._has("coingecko", utc_day(moment)):
                    points.append([moment * 1000, price(COINS[(coin, vs)], moment)])
                moment += step
            return 200, {"prices": points, "market_caps": [], "total_volumes": []}

        return answer

    def _fng(self, query: dict[str, str]) -> tuple[int, Any]:
        limit = int(query.get("limit", "1"))
        days = sorted(self._days("alternative_me", FIRST_DAY, self.today), reverse=True)
        entries = [
            {
                "value": str(int(price(50, unix(day))) % 100),
                "value_classification": "Neutral",
                "timestamp": str(unix(day)),
            }
            for day in (days[:limit] if limit else days)
        ]
        return 200, {"name": "Fear and Greed Index", "data": entries, "metadata": {"error": None}}

    def _klines(self, query: dict[str, str]) -> tuple[int, Any]:
        symbol = query.get("symbol", "")
        if symbol not in SYMBOLS or query.get("interval") != "1d":
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        limit = min(int(query.get("limit", "500")), 1000)
        start = int(query.get("startTime", "0")) // 1000
        end = int(query.get("endTime", str(self._now_s * 1000))) // 1000
        rows = []
        for day in self._days("binance_spot", utc_day(start), utc_day(end)):
            opened = unix(day)
            if not start <= opened <= end:
                continue
            close = price(SYMBOLS[symbol], opened + DAY_S - 1)
            volume = round(close * 1000 + opened % 997, 2)
            rows.append(
                [opened * 1000, "1", "2", "0.5", str(close), "10", (opened + DAY_S) * 1000 - 1]
                + [str(volume), 1000, "5", "6", "0"]
            )
        return 200, rows[:limit]

    def _funding(self, query: dict[str, str]) -> tuple[int, Any]:
        symbol = query.get("symbol", "")
        if symbol not in SYMBOLS:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        limit = min(int(query.get("limit", "100")), 1000)
        start = int(query.get("startTime", "0"))
        end = int(query.get("endTime", str(self._now_s * 1000)))
        rows = []
        for day in self._days("binance_futures", utc_day(start / 1000), utc_day(end / 1000)):
            for hour in (0, 8, 16):
                moment = (unix(day) + hour * 3600) * 1000
                if start <= moment <= end and moment <= self._now_s * 1000:
                    rate = f"{0.0001 + (moment // 3_600_000 % 7) * 0.00001:.8f}"
                    rows.append({"symbol": symbol, "fundingTime": moment, "fundingRate": rate})
        return 200, rows[:limit]

    def _stablecoins(self, query: dict[str, str]) -> tuple[int, Any]:
        return 200, [
            {
                "date": str(unix(day)),
                "totalCirculatingUSD": {"peggedUSD": price(2.5e11, unix(day))},
            }
            for day in self._days("defillama_stablecoins", FIRST_DAY, self.today)
        ]

    def _fred(self, query: dict[str, str]) -> tuple[int, Any]:
        if not query.get("api_key"):
            return 400, {"error_code": 400, "error_message": "Variable api_key is not set."}
        series = query.get("series_id", "")
        if series not in SERIES:
            return 400, {"error_code": 400, "error_message": "The series does not exist."}
        first = date.fromisoformat(query.get("observation_start", FIRST_DAY.isoformat()))
        last = date.fromisoformat(query.get("observation_end", self.today.isoformat()))
        # FRED publishes daily series a day or more late: nothing newer than two days ago.
        last = min(last, self.today - timedelta(days=2))
        rows = [
            {
                "date": day.isoformat(),
                "value": "." if day in self.holidays else f"{price(SERIES[series], unix(day)):.2f}",
            }
            for day in self._days("fred", first, last)
            if day.weekday() < 5 or series in SEVEN_DAY_SERIES
        ]
        return 200, {"count": len(rows), "observations": rows}
