"""Each source, today and a past day, against the replay server.

Expected values are read from the recorded files here, independently of the source code.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from statistics import mean

import pytest

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.replay import DEMO_DAY, DEMO_FIRST_DAY
from daily_index_tests.sources.support import fetch, recorded, spec

PAST = date(2026, 10, 6)  # a Tuesday: every series, business-day ones included, has a value
SATURDAY = date(2026, 10, 3)
FRED_HOLIDAY = date(2026, 10, 12)  # recorded as "." in DGS10 and DTWEXBGS


def midnight_s(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat().replace("+00:00", "Z")


def value_of(outcome) -> float:
    assert isinstance(outcome.update, KPIDataUpdate), outcome.update
    return outcome.update.value


PRICE_KPIS = [
    ("btc_price", "bitcoin", "usd"),
    ("eth_price", "ethereum", "usd"),
    ("sol_price", "solana", "usd"),
    ("eth_btc_ratio", "ethereum", "btc"),
]


@pytest.mark.parametrize(("kpi", "coin", "vs"), PRICE_KPIS)
def test_coingecko_price_today_is_simple_price(settings, server, kpi, coin, vs):
    outcome = fetch(settings, kpi, DEMO_DAY)
    assert value_of(outcome) == recorded("coingecko/simple_price.json")[coin][vs]
    assert outcome.update.unit == spec(kpi).unit
    assert outcome.update.source == "CoinGecko"
    assert outcome.update.metadata["endpoint"] == "coingecko/simple/price"
    assert server.hits == {"/coingecko/api/v3/simple/price": 1}
    (query,) = [r.query for r in server.requests]
    assert query["include_last_updated_at"] == "true"
    updated = recorded("coingecko/simple_price.json")[coin]["last_updated_at"]
    assert outcome.update.metadata["observedAt"] == iso(updated)
    assert outcome.update.metadata["observedOn"] == DEMO_DAY.isoformat()


@pytest.mark.parametrize(("kpi", "coin", "vs"), PRICE_KPIS)
@pytest.mark.parametrize("day", [PAST, DEMO_FIRST_DAY, DEMO_DAY - timedelta(days=1)])
def test_coingecko_price_past_day_is_that_days_last_point(settings, kpi, coin, vs, day):
    prices = recorded(f"coingecko/market_chart/{coin}_{vs}.json")["prices"]
    start = midnight_s(day) * 1000
    in_day = [p for p in prices if start <= p[0] < start + 86_400_000]
    outcome = fetch(settings, kpi, day)
    assert value_of(outcome) == in_day[-1][1]
    assert outcome.update.metadata["pointTime"] == in_day[-1][0]
    # never today's quote
    assert outcome.update.value != recorded("coingecko/simple_price.json")[coin][vs]


def test_coingecko_price_before_the_recording_is_an_error(settings):
    outcome = fetch(settings, "btc_price", DEMO_FIRST_DAY - timedelta(days=1))
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert outcome.update.error_code == "no_data"
    assert "2026-07-31" in outcome.update.error


@pytest.mark.parametrize(
    ("kpi", "path"),
    [
        ("btc_dominance", ("market_cap_percentage", "btc")),
        ("eth_dominance", ("market_cap_percentage", "eth")),
        ("total_market_cap", ("total_market_cap", "usd")),
    ],
)
def test_coingecko_global_today(settings, kpi, path):
    data = recorded("coingecko/global.json")["data"]
    outcome = fetch(settings, kpi)
    assert value_of(outcome) == data[path[0]][path[1]]
    assert outcome.update.metadata["observedAt"] == iso(data["updated_at"])


def test_coingecko_global_past_day_says_there_is_no_history(settings, server):
    outcome = fetch(settings, "btc_dominance", PAST)
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert outcome.update.error_code == "no_history"
    assert (
        "no history" in outcome.update.error and "market_cap_percentage.btc" in outcome.update.error
    )
    assert "planned" in outcome.update.error and "stays empty" in outcome.update.error
    assert "CSV" not in outcome.update.error  # no such import exists yet
    assert outcome.attempts == 0 and not server.hits


def test_coingecko_global_unknown_field_names_it(settings):
    kpi = spec(
        "btc_dominance",
        source={"kind": "coingecko_global", "params": {"field": "market_cap_percentage.zzz"}},
    )
    outcome = fetch(settings, kpi)
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert "data.market_cap_percentage.zzz" in outcome.update.error


@pytest.mark.parametrize("day", [DEMO_DAY, PAST, DEMO_FIRST_DAY])
def test_fear_greed_takes_the_entry_of_the_day(settings, server, day):
    entries = recorded("alternative_me/fng.json")["data"]
    expected = next(e for e in entries if int(e["timestamp"]) == midnight_s(day))
    outcome = fetch(settings, "fear_greed", day)
    assert value_of(outcome) == float(expected["value"])  # a string in the API
    assert outcome.update.metadata["classification"] == expected["value_classification"]
    (query,) = [r.query for r in server.requests]
    assert int(query["limit"]) >= (DEMO_DAY - day).days + 1


@pytest.mark.parametrize("day", [DEMO_DAY, PAST])
def test_stablecoin_supply_of_the_day(settings, day):
    points = recorded("defillama_stablecoins/stablecoincharts_all.json")
    expected = next(p for p in points if int(p["date"]) == midnight_s(day))
    assert (
        value_of(fetch(settings, "stablecoin_supply", day))
        == (expected["totalCirculatingUSD"]["peggedUSD"])
    )


@pytest.mark.parametrize(
    "kpi, symbol", [("btc_funding_rate", "BTCUSDT"), ("eth_funding_rate", "ETHUSDT")]
)
@pytest.mark.parametrize("day", [DEMO_DAY, PAST])
def test_funding_rate_is_the_days_mean_in_percent(settings, kpi, symbol, day):
    start = midnight_s(day) * 1000
    rows = recorded(f"binance_futures/funding_{symbol}.json")
    rates = [
        float(r["fundingRate"]) for r in rows if start <= r["fundingTime"] < start + 86_400_000
    ]
    assert len(rates) == 3
    outcome = fetch(settings, kpi, day)
    assert value_of(outcome) == pytest.approx(mean(rates) * 100)
    assert outcome.update.metadata["samples"] == 3


@pytest.mark.parametrize("kpi, column", [("btc_close_binance", 4), ("btc_spot_volume", 7)])
@pytest.mark.parametrize("day", [DEMO_DAY, PAST])
def test_binance_kline_field_of_the_day(settings, server, kpi, column, day):
    start = midnight_s(day) * 1000
    row = next(r for r in recorded("binance_spot/klines_BTCUSDT_1d.json") if r[0] == start)
    outcome = fetch(settings, kpi, day)
    assert value_of(outcome) == float(row[column])
    (query,) = [r.query for r in server.requests]
    assert query["interval"] == "1d" and int(query["startTime"]) == start


@pytest.mark.parametrize("kpi, series", [("us_10y_yield", "DGS10"), ("fed_funds_rate", "DFF")])
def test_fred_past_day_is_that_days_observation(settings, server, kpi, series):
    rows = recorded(f"fred/{series}.json")["observations"]
    expected = next(o for o in rows if o["date"] == PAST.isoformat())
    outcome = fetch(settings, kpi, PAST)
    assert value_of(outcome) == float(expected["value"])
    assert outcome.update.metadata["observedOn"] == PAST.isoformat()
    (query,) = [r.query for r in server.requests]
    assert query["observation_start"] == query["observation_end"] == PAST.isoformat()
    assert query["api_key"] == settings.fred_api_key and query["file_type"] == "json"


@pytest.mark.parametrize(
    "kpi, series",
    [("us_10y_yield", "DGS10"), ("us_dollar_index", "DTWEXBGS"), ("fed_funds_rate", "DFF")],
)
def test_fred_today_is_todays_own_observation(settings, server, kpi, series):
    rows = recorded(f"fred/{series}.json")["observations"]
    (today,) = [o for o in rows if o["date"] == DEMO_DAY.isoformat()]
    outcome = fetch(settings, kpi, DEMO_DAY)
    assert value_of(outcome) == float(today["value"])
    assert outcome.update.metadata["observedOn"] == DEMO_DAY.isoformat()
    (query,) = [r.query for r in server.requests]
    assert query["observation_end"] == DEMO_DAY.isoformat()


def test_fred_dot_on_a_past_day_is_no_observation_not_a_neighbour(settings):
    outcome = fetch(settings, "us_10y_yield", FRED_HOLIDAY)
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert outcome.update.error_code == "no_observation"
    assert outcome.update.error == (
        f"FRED has no observation of DGS10 for {FRED_HOLIDAY}: it marks no value that day "
        "('.'), e.g. a market holiday"
    )


def test_fred_weekend_day_is_an_error(settings):
    outcome = fetch(settings, "us_10y_yield", SATURDAY)
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert outcome.update.error_code == "no_data"
    assert "no observation for 2026-10-03" in outcome.update.error


@pytest.mark.parametrize("day", [DEMO_DAY, PAST])
def test_n8n_webhook_value_of_the_day(settings, server, day):
    outcome = fetch(settings, "usdt_dominance", day)
    assert value_of(outcome) == recorded("n8n/usdt_dominance.json")[day.isoformat()]
    assert outcome.update.day == day
    (seen,) = server.requests
    assert seen.method == "POST" and seen.path == "/n8n/webhook/kpi/usdt-dominance"


OBSERVED_AT = {  # KPIs whose API gives the observation's time, not only its day
    "btc_price": True,
    "btc_dominance": True,
    "fear_greed": True,
    "stablecoin_supply": True,
    "btc_funding_rate": True,
    "btc_spot_volume": False,
    "us_10y_yield": False,
    "usdt_dominance": True,
}


@pytest.mark.parametrize("kpi", sorted(OBSERVED_AT))
@pytest.mark.parametrize("day", [DEMO_DAY, PAST])
def test_every_value_says_the_day_it_was_observed(settings, kpi, day):
    if kpi == "btc_dominance" and day == PAST:
        pytest.skip("no history: covered above")
    outcome = fetch(settings, kpi, day)
    value_of(outcome)
    metadata = outcome.update.metadata
    assert metadata["observedOn"] == day.isoformat()
    if OBSERVED_AT[kpi]:
        observed = datetime.fromisoformat(metadata["observedAt"].replace("Z", "+00:00"))
        assert observed.utcoffset() == timedelta(0) and observed.date() == day
    else:
        assert "observedAt" not in metadata
