"""History loads against imitations of the APIs: range requests, shared answers, rate limits.

A load of N days asks each API for the whole range in as few requests as it allows, and
every day still gets its own outcome, read with the same rules as a one-day request. The
request counts come from the imitation servers' own logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date, datetime, timedelta

import pytest

from daily_index.calendars import EXPECTED_GAP_CODES, expected_gap
from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, partition_timestamp
from daily_index.defs.resources import ConfigurationError, sources_from_env
from daily_index.registry import load_registry
from daily_index.replay import DEMO_DAY, Fault
from daily_index.sources import FetchOutcome, FetchRequest, SourceSettings, fetch_all
from daily_index.sources.batch import BudgetExceeded, RateLimiter
from daily_index_tests.sources.imitations import (
    COINS,
    DAY_S,
    SERIES,
    SYMBOLS,
    Imitations,
    price,
    requests_of,
    unix,
)
from daily_index_tests.sources.support import FRED_KEY, request

TODAY = DEMO_DAY
# Fetched KPIs only: n8n has its own tests, derived KPIs are computed from stored series.
KPIS = [k for k in load_registry().kpis if k.source.kind not in ("n8n", "derived")]
CHART = "/market_chart/range"


def settings_for(apis: Imitations, **changes) -> SourceSettings:
    base = SourceSettings(
        base_urls=apis.base_urls(),
        fred_api_key=FRED_KEY,
        timeout_s=5.0,
        max_attempts=2,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    return dataclasses.replace(base, **changes)


def history(days: int, kpis=KPIS) -> list[FetchRequest]:
    """What the KPI step asks for: `days` past days and today, expected gaps left out."""
    wanted = [TODAY - timedelta(days=n) for n in range(days, -1, -1)]
    return [
        FetchRequest(kpi, day, TODAY, f"{kpi.id}-{day}", partition_timestamp(day))
        for kpi in kpis
        for day in wanted
        if not expected_gap(kpi, day, TODAY)
    ]


def requests_per_kpi(apis: Imitations) -> dict[str, int]:
    return {kpi.id: requests_of(kpi, apis.requests) for kpi in KPIS}


def by_kpi_day(outcomes: list[FetchOutcome]) -> dict[tuple[str, date], FetchOutcome]:
    return {(o.request.spec.id, o.request.day): o for o in outcomes}


@pytest.mark.parametrize("days", [30, 365])
def test_a_history_load_asks_each_api_for_the_range_once(days):
    with Imitations() as apis:
        requests = history(days)
        outcomes = fetch_all(requests, settings_for(apis))
    failed = [o.update for o in outcomes if not isinstance(o.update, KPIDataUpdate)]
    assert failed == []
    needed = requests_per_kpi(apis)
    assert set(needed) == {k.id for k in KPIS}
    assert all(1 <= n <= 2 for n in needed.values()), needed
    assert apis.count("/stablecoincharts/all") == 1
    # Three KPIs read /global, two the BTCUSDT klines: one request each.
    assert apis.count("/global") == 1 and apis.count("/klines") == 1
    # 3 funding events a day: a year is two pages of 1,000.
    assert needed["btc_funding_rate"] == (2 if days == 365 else 1)
    assert len(apis.requests) <= 2 * len(KPIS)
    # Every KPI-day got its own observation.
    for outcome in outcomes:
        update = outcome.update
        assert update.metadata["observedOn"] == outcome.request.day.isoformat()
    # ... and its value is the imitation's value of that day, not a neighbour's.
    expected = {
        "btc_close_binance": lambda day, _: price(SYMBOLS["BTCUSDT"], unix(day) + DAY_S - 1),
        "stablecoin_supply": lambda day, _: price(2.5e11, unix(day)),
        "us_10y_yield": lambda day, _: round(price(SERIES["DGS10"], unix(day)), 2),
        "btc_price": lambda day, meta: price(COINS[("bitcoin", "usd")], meta["observedAt_s"]),
    }
    for outcome in outcomes:
        check = expected.get(outcome.request.spec.id)
        if check is None:
            continue
        meta = dict(outcome.update.metadata)
        if "observedAt" in meta:
            meta["observedAt_s"] = datetime.fromisoformat(meta["observedAt"]).timestamp()
        assert outcome.update.value == pytest.approx(check(outcome.request.day, meta))


def test_a_past_price_is_the_last_point_inside_its_day():
    with Imitations() as apis:
        btc = [k for k in KPIS if k.id == "btc_price"]
        outcomes = fetch_all(history(30, btc), settings_for(apis))
    past = [o for o in outcomes if o.request.day < TODAY]
    assert len(past) == 30
    for outcome in past:
        moment = outcome.update.metadata["pointTime"]
        start = (outcome.request.day - date(1970, 1, 1)).days * 86_400_000
        # 30 days come hourly: the day's last point is 23:00 UTC.
        assert moment == start + 23 * 3_600_000


def test_a_missing_day_inside_the_range_is_that_days_outcome_only():
    hole = TODAY - timedelta(days=10)
    holiday = TODAY - timedelta(days=18)  # a Friday: a business day of DGS10
    assert holiday.weekday() == 4
    families = ("coingecko", "binance_spot", "alternative_me", "defillama_stablecoins")
    apis = Imitations(missing={f: {hole} for f in families}, holidays={holiday})
    apis.missing["defillama_stablecoins"].add(TODAY)  # today's point is not out yet
    with apis:
        outcomes = by_kpi_day(fetch_all(history(30), settings_for(apis)))
    for kpi in ("btc_price", "btc_close_binance", "fear_greed", "stablecoin_supply"):
        update = outcomes[(kpi, hole)].update
        assert isinstance(update, KPIErrorUpdate) and update.error_code == "no_data", update
        assert str(hole) in update.error
        for neighbour in (hole - timedelta(days=1), hole + timedelta(days=1)):
            assert isinstance(outcomes[(kpi, neighbour)].update, KPIDataUpdate), (kpi, neighbour)
    gap = outcomes[("us_10y_yield", holiday)].update
    assert gap.error_code == "no_observation" and gap.error_code in EXPECTED_GAP_CODES
    assert isinstance(outcomes[("us_10y_yield", holiday - timedelta(days=1))].update, KPIDataUpdate)
    # The newest point is yesterday's: today is stale (retried later), yesterday is stored.
    stale = outcomes[("stablecoin_supply", TODAY)].update
    assert stale.error_code == "stale" and stale.retryable
    assert f"{TODAY - timedelta(days=1)}, not {TODAY}" in stale.error
    assert isinstance(
        outcomes[("stablecoin_supply", TODAY - timedelta(days=1))].update, KPIDataUpdate
    )


def test_a_one_day_request_asks_for_that_day_only():
    with Imitations() as apis:
        day = TODAY - timedelta(days=3)
        [outcome] = fetch_all([request("btc_close_binance", day)], settings_for(apis))
    assert isinstance(outcome.update, KPIDataUpdate)
    [(path, query)] = apis.requests
    start = (day - date(1970, 1, 1)).days * 86_400_000
    assert query["startTime"] == str(start) and query["endTime"] == str(start + 86_400_000 - 1)


# Rate limits


class FakeClock:
    """Time that moves only when the limiter sleeps: spacing without the wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_rate_limiter_grants_n_per_minute_in_the_order_asked():
    clock = FakeClock()
    limiter = RateLimiter("coingecko", 10, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def ask(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    async def main() -> None:
        await asyncio.gather(*(ask(n) for n in range(25)))

    asyncio.run(main())
    assert order == list(range(25))
    assert limiter.grants == [0.0] * 10 + [60.0] * 10 + [120.0] * 5


def test_the_rate_limiter_refuses_a_wait_beyond_the_deadline():
    clock = FakeClock()
    limiter = RateLimiter("coingecko", 2, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        await limiter.acquire(deadline=30)
        await limiter.acquire(deadline=30)
        await limiter.acquire(deadline=30)

    with pytest.raises(BudgetExceeded) as raised:
        asyncio.run(main())
    assert "CoinGecko's rate limit (2 requests/minute, DAILY_INDEX_RATE_LIMIT_COINGECKO)" in (
        raised.value.reason
    )
    assert "wait 60 s, more than the 30 s left of the fetch budget" in raised.value.reason
    assert limiter.grants == [0.0, 0.0] and clock.now == 0


def test_a_family_rate_limit_is_shared_by_every_kpi_of_the_source(settings, server):
    """Two requests a minute for CoinGecko, 5 s of budget: four KPIs, two requests sent."""
    tight = dataclasses.replace(
        settings, rate_limits={**settings.rate_limits, "coingecko": 2}, fetch_budget_s=5
    )
    kpis = ["btc_price", "eth_price", "sol_price", "eth_btc_ratio"]
    outcomes = fetch_all([request(k) for k in kpis], tight)
    sent = [r for r in server.requests if r.path.startswith("/coingecko/")]
    assert len(sent) == 2
    refused = [o.update for o in outcomes if isinstance(o.update, KPIErrorUpdate)]
    assert len(refused) == 2
    for update in refused:
        assert update.error_code == "budget_exceeded"
        assert "CoinGecko's rate limit (2 requests/minute" in update.error
    # Other sources are not held by CoinGecko's limit.
    [fng] = fetch_all([request("fear_greed")], tight)
    assert isinstance(fng.update, KPIDataUpdate)


def test_a_429_on_a_range_request_fails_its_days_once_and_spares_the_others(settings, server):
    past = [TODAY - timedelta(days=n) for n in range(1, 6)]
    server.inject(
        "/coingecko/api/v3/coins/bitcoin", Fault(status=429, headers={"Retry-After": "600"})
    )
    requests = [request("btc_price", day, trace=f"b-{day}") for day in past]
    requests += [request("btc_close_binance", day, trace=f"k-{day}") for day in past]
    outcomes = fetch_all(requests, settings)
    prices = [o.update for o in outcomes if o.request.spec.id == "btc_price"]
    assert all(isinstance(u, KPIErrorUpdate) for u in prices)
    assert all("CoinGecko asked to wait 600 s (Retry-After)" in u.error for u in prices)
    assert server.hits["/coingecko/api/v3/coins/bitcoin/market_chart/range"] == 1
    closes = [o.update for o in outcomes if o.request.spec.id == "btc_close_binance"]
    assert all(isinstance(u, KPIDataUpdate) for u in closes)


def test_rate_limits_retry_after_cap_and_budget_come_from_the_environment():
    default = sources_from_env({}).settings()
    assert default.rate_limits["coingecko"] == 10 and default.rate_limits["n8n"] == 0
    assert (default.retry_after_max_s, default.fetch_budget_s) == (120, 600)
    chosen = sources_from_env(
        {
            "DAILY_INDEX_RATE_LIMIT_COINGECKO": "25",
            "DAILY_INDEX_RATE_LIMIT_BINANCE_FUTURES": "0",
            "DAILY_INDEX_RETRY_AFTER_MAX_S": "30",
            "DAILY_INDEX_FETCH_BUDGET_S": "90",
        }
    ).settings()
    assert chosen.rate_limits["coingecko"] == 25 and chosen.rate_limits["binance_futures"] == 0
    assert chosen.rate_limits["fred"] == 120
    assert (chosen.retry_after_max_s, chosen.fetch_budget_s) == (30, 90)


@pytest.mark.parametrize(
    "name, raw, problem",
    [
        ("DAILY_INDEX_RATE_LIMIT_FRED", "fast", "a number"),
        ("DAILY_INDEX_RATE_LIMIT_COINGECKO", "-1", ">= 0"),
        ("DAILY_INDEX_RETRY_AFTER_MAX_S", "-5", ">= 0"),
        ("DAILY_INDEX_FETCH_BUDGET_S", "soon", "a number"),
    ],
)
def test_a_bad_rate_or_wait_setting_is_a_configuration_error(name, raw, problem):
    with pytest.raises(ConfigurationError, match=f"{name} must be {problem}"):
        sources_from_env({name: raw})
