"""A value belongs to a day only if the source's own observation is of that day.

Each source is served, by the real replay server, an answer whose newest observation is
older than the day asked for: it must come back `stale` (both dates in the reason), never as
a value. The last test goes through Dagster: a stored value survives a stale re-run byte for
byte.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from daily_index.cli import demo_environment
from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.definitions import build_definitions
from daily_index.defs.kpis import kpi_key
from daily_index.replay import DEMO_DAY, Fault
from daily_index.storage.series import raw_key, series_key
from daily_index_tests.sources.support import FRED_KEY, N8N_SECRET, fetch, recorded

YESTERDAY = DEMO_DAY - timedelta(days=1)
PAST = date(2026, 10, 6)  # a Tuesday


def unix(day: date, hour: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp())


def ms(day: date, hour: int = 0) -> int:
    return unix(day, hour) * 1000


def stale_of(outcome, *, retryable: bool) -> KPIErrorUpdate:
    update = outcome.update
    assert isinstance(update, KPIErrorUpdate), update
    assert update.error_code == "stale", update.error
    assert update.retryable is retryable
    assert "stale, nothing stored" in update.error
    return update


def both_dates(update: KPIErrorUpdate, observed: date, asked: date) -> None:
    assert f"{observed}, not {asked}" in update.error, update.error


# DefiLlama


def stablecoin_points(last: date, days: int = 5, *extra: dict) -> list[dict]:
    points = [
        {
            "date": str(unix(last - timedelta(days=i))),
            "totalCirculatingUSD": {"peggedUSD": 3.0e11 - i * 1e9},
        }
        for i in reversed(range(days))
    ]
    return [*points, *extra]


STABLECOINS = "/defillama_stablecoins/stablecoincharts/all"


def test_defillama_yesterdays_point_today_is_stale(settings, server):
    server.inject(STABLECOINS, Fault(body=stablecoin_points(YESTERDAY)))
    update = stale_of(fetch(settings, "stablecoin_supply"), retryable=True)
    assert update.error.startswith(
        "DefiLlama's newest stablecoin point is 2026-11-23, not 2026-11-24: stale, nothing stored"
    )
    assert update.metadata["observedOn"] == "2026-11-23"


def test_defillama_past_day_after_the_last_point_is_stale_and_final(settings, server):
    server.inject(STABLECOINS, Fault(body=stablecoin_points(PAST - timedelta(days=2))))
    update = stale_of(fetch(settings, "stablecoin_supply", PAST), retryable=False)
    both_dates(update, PAST - timedelta(days=2), PAST)


def test_defillama_hole_in_the_history_is_no_data_not_the_day_before(settings, server):
    points = [
        p for p in stablecoin_points(PAST + timedelta(days=3), 7) if p["date"] != str(unix(PAST))
    ]
    server.inject(STABLECOINS, Fault(body=points))
    update = fetch(settings, "stablecoin_supply", PAST).update
    assert isinstance(update, KPIErrorUpdate) and update.error_code == "no_data"
    assert "no point for 2026-10-06" in update.error and "2026-10-05" in update.error


def test_defillama_unparseable_points_are_counted_not_hidden(settings, server):
    bad = [{"date": "soon", "totalCirculatingUSD": {}}, {"totalCirculatingUSD": {}}]
    server.inject(STABLECOINS, Fault(body=stablecoin_points(DEMO_DAY, 5, *bad)))
    ok = fetch(settings, "stablecoin_supply").update
    assert isinstance(ok, KPIDataUpdate) and ok.metadata["unparseablePoints"] == 2
    assert ok.value == 3.0e11 and ok.metadata["observedOn"] == "2026-11-24"

    server.inject(STABLECOINS, Fault(body=stablecoin_points(YESTERDAY, 5, *bad)))
    update = stale_of(fetch(settings, "stablecoin_supply"), retryable=True)
    assert "2 of 7 points had no valid date" in update.error
    assert update.metadata["unparseablePoints"] == 2


# CoinGecko

SIMPLE = "/coingecko/api/v3/simple/price"
GLOBAL = "/coingecko/api/v3/global"


def test_coingecko_quote_last_updated_yesterday_is_stale(settings, server):
    server.inject(
        SIMPLE, Fault(body={"bitcoin": {"usd": 97000, "last_updated_at": unix(YESTERDAY, 23)}})
    )
    update = stale_of(fetch(settings, "btc_price"), retryable=True)
    assert "2026-11-23T23:00:00Z" in update.error
    both_dates(update, YESTERDAY, DEMO_DAY)


def test_coingecko_quote_without_last_updated_at_is_refused(settings, server):
    server.inject(SIMPLE, Fault(body={"bitcoin": {"usd": 97000}}))
    update = fetch(settings, "btc_price").update
    assert isinstance(update, KPIErrorUpdate) and update.error_code == "missing_field"
    assert "bitcoin.last_updated_at is missing" in update.error


def test_coingecko_quote_of_a_later_day_is_wrong_day(settings, server):
    tomorrow = DEMO_DAY + timedelta(days=1)
    server.inject(SIMPLE, Fault(body={"bitcoin": {"usd": 1, "last_updated_at": unix(tomorrow)}}))
    update = fetch(settings, "btc_price").update
    assert isinstance(update, KPIErrorUpdate) and update.error_code == "wrong_day"
    assert "2026-11-25, after 2026-11-24" in update.error


def test_coingecko_global_updated_yesterday_is_stale(settings, server):
    data = {**recorded("coingecko/global.json")["data"], "updated_at": unix(YESTERDAY, 18)}
    server.inject(GLOBAL, Fault(body={"data": data}))
    update = stale_of(fetch(settings, "btc_dominance"), retryable=True)
    assert update.error.startswith("CoinGecko's /global figures (updated 2026-11-23T18:00:00Z)")
    both_dates(update, YESTERDAY, DEMO_DAY)


def test_coingecko_global_without_updated_at_is_refused(settings, server):
    data = dict(recorded("coingecko/global.json")["data"])
    del data["updated_at"]
    server.inject(GLOBAL, Fault(body={"data": data}))
    update = fetch(settings, "btc_dominance").update
    assert isinstance(update, KPIErrorUpdate) and update.error_code == "missing_field"
    assert "data.updated_at is missing" in update.error


# FRED

FRED = "/fred/fred/series/observations"


def test_fred_today_never_stores_the_last_days_value(settings, server):
    rows = [
        {"date": (YESTERDAY - timedelta(days=i)).isoformat(), "value": f"4.{i}"} for i in range(5)
    ]
    server.inject(FRED, Fault(body={"observations": rows}))
    update = stale_of(fetch(settings, "us_10y_yield"), retryable=True)
    assert "FRED's newest DGS10 observation" in update.error
    assert "publishes daily series with a lag" in update.error
    both_dates(update, YESTERDAY, DEMO_DAY)


# Binance

KLINES = "/binance_spot/api/v3/klines"
FUNDING = "/binance_futures/fapi/v1/fundingRate"


def kline(day: date) -> list:
    return [ms(day), "1", "2", "0.5", "1.5", "10", ms(day + timedelta(days=1)) - 1, "15", 9]


def test_binance_newest_kline_of_yesterday_is_stale(settings, server):
    server.inject(KLINES, Fault(body=[kline(YESTERDAY - timedelta(days=1)), kline(YESTERDAY)]))
    update = stale_of(fetch(settings, "btc_close_binance"), retryable=True)
    assert update.error.startswith("Binance's newest BTCUSDT 1d kline is 2026-11-23")
    both_dates(update, YESTERDAY, DEMO_DAY)


def test_binance_kline_past_day_after_the_answer_is_stale_and_final(settings, server):
    server.inject(KLINES, Fault(body=[kline(PAST - timedelta(days=3))]))
    update = stale_of(fetch(settings, "btc_spot_volume", PAST), retryable=False)
    both_dates(update, PAST - timedelta(days=3), PAST)


def test_binance_funding_of_yesterday_is_stale(settings, server):
    events = [
        {"symbol": "BTCUSDT", "fundingTime": ms(YESTERDAY, h), "fundingRate": "0.0001"}
        for h in (0, 8, 16)
    ]
    server.inject(FUNDING, Fault(body=events))
    update = stale_of(fetch(settings, "btc_funding_rate"), retryable=True)
    assert update.error.startswith("Binance's newest BTCUSDT funding event is 2026-11-23")


# alternative.me


def test_fear_greed_newest_entry_of_yesterday_is_stale(settings, server):
    entries = [
        {"value": "40", "value_classification": "Fear", "timestamp": str(unix(day))}
        for day in (YESTERDAY, YESTERDAY - timedelta(days=1))
    ]
    server.inject("/alternative_me/fng", Fault(body={"data": entries, "metadata": {"error": None}}))
    update = stale_of(fetch(settings, "fear_greed"), retryable=True)
    assert update.error.startswith("alternative.me's newest Fear & Greed entry is 2026-11-23")


# n8n

WEBHOOK = "/n8n/webhook/kpi/usdt-dominance"


def n8n_answer(**fields) -> dict:
    body = {
        "schemaVersion": 2,
        "traceId": "t-1",
        "kpiId": "usdt_dominance",
        "timestamp": "2026-11-24T12:00:00Z",
        "value": 5.1,
        **fields,
    }
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("fields", "day", "code", "retryable", "words"),
    [
        (
            {"timestamp": "2026-11-23T12:00:00Z"},
            DEMO_DAY,
            "stale",
            True,
            ["2026-11-23, not 2026-11-24", "stale"],
        ),
        ({"timestamp": "2026-11-24T12:00:00Z"}, PAST, "wrong_day", False, ["2026-11-24"]),
        (
            {"timestamp": "2026-10-05T23:59:59Z"},
            PAST,
            "stale",
            False,
            ["2026-10-05, not 2026-10-06"],
        ),
        ({"timestamp": None}, DEMO_DAY, "missing_field", False, ["'timestamp'"]),
        ({"traceId": None}, DEMO_DAY, "missing_field", False, ["'traceId'"]),
        ({"kpiId": None}, DEMO_DAY, "missing_field", False, ["'kpiId'"]),
        ({"traceId": "t-other"}, DEMO_DAY, "wrong_trace", False, ["t-other", "'t-1'"]),
        ({"kpiId": "btc_price"}, DEMO_DAY, "wrong_kpi", False, ["btc_price"]),
    ],
    ids=[
        "older-day",
        "newer-day",
        "older-day-backfill",
        "no-timestamp",
        "no-trace",
        "no-kpi",
        "other-trace",
        "other-kpi",
    ],
)
def test_n8n_answer_must_be_of_the_triggers_day_and_trace(
    settings, server, fields, day, code, retryable, words
):
    server.inject(WEBHOOK, Fault(body=n8n_answer(**fields)))
    update = fetch(settings, "usdt_dominance", day).update
    assert isinstance(update, KPIErrorUpdate), update
    assert (update.error_code, update.retryable) == (code, retryable), update.error
    for word in words:
        assert word in update.error, update.error


def test_n8n_value_says_when_it_was_observed(settings, server):
    server.inject(WEBHOOK, Fault(body=n8n_answer(timestamp="2026-11-24T06:30:00+01:00")))
    update = fetch(settings, "usdt_dominance").update
    assert isinstance(update, KPIDataUpdate)
    assert update.metadata["observedOn"] == "2026-11-24"
    assert update.metadata["observedAt"] == "2026-11-24T05:30:00Z"


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": {"debug": {"headers": {"X-N8N-Auth": N8N_SECRET}}}},
        {"source": f"n8n (key {FRED_KEY})"},
        {"unit": N8N_SECRET},
    ],
    ids=["auth-in-metadata", "key-in-source", "auth-as-unit"],
)
def test_an_answer_echoing_a_secret_stores_nothing_and_says_no_secret(settings, server, fields):
    server.inject(WEBHOOK, Fault(body=n8n_answer(**fields)))
    update = fetch(settings, "usdt_dominance").update
    assert isinstance(update, KPIErrorUpdate), update
    assert update.error_code == "echoed_secret"
    wire = json.dumps(update.to_wire())
    assert N8N_SECRET not in wire and FRED_KEY not in wire


# Through Dagster: a stale re-run leaves what was stored untouched


@pytest.fixture
def environ(server, tmp_path, monkeypatch):
    env = demo_environment(server, tmp_path, today=DEMO_DAY)
    env["DAILY_INDEX_FETCH_MAX_ATTEMPTS"] = "1"
    for key, value in env.items():  # secrets are read through dg.EnvVar at run time
        monkeypatch.setenv(key, value)
    return env


def _materialise(defs, kpi_id: str, instance: dg.DagsterInstance):
    return dg.materialize(
        [defs.get_assets_def(kpi_key(kpi_id))],
        selection=[kpi_key(kpi_id)],
        partition_key=DEMO_DAY.isoformat(),
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )


@pytest.mark.parametrize(
    ("kpi_id", "path", "stale_body"),
    [
        ("stablecoin_supply", STABLECOINS, stablecoin_points(YESTERDAY)),
        (
            "btc_price",
            SIMPLE,
            {"bitcoin": {"usd": 91000.0, "last_updated_at": unix(YESTERDAY, 23)}},
        ),
    ],
)
def test_a_stale_rerun_keeps_the_stored_value_byte_for_byte(
    environ, server, tmp_path, kpi_id, path, stale_body
):
    defs = build_definitions(environ=environ)
    instance = dg.DagsterInstance.ephemeral()
    store = tmp_path / "store"
    first = _materialise(defs, kpi_id, instance)
    assert first.success
    series_file = store / series_key(kpi_id)
    raw_file = store / raw_key(kpi_id, DEMO_DAY)
    before = (series_file.read_bytes(), raw_file.read_bytes())
    assert json.loads(before[1])["metadata"]["observedOn"] == DEMO_DAY.isoformat()

    server.inject(path, Fault(body=stale_body))
    again = _materialise(defs, kpi_id, instance)
    assert not again.success  # stale is a failure (worth a retry), not an expected gap
    assert again.get_asset_materialization_events() == []
    (observation,) = [
        e.asset_observation_data.asset_observation
        for e in again.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["error_code"].value == "stale"
    assert "2026-11-23, not 2026-11-24" in observation.metadata["error"].value
    assert (series_file.read_bytes(), raw_file.read_bytes()) == before
    assert server.hits[path] == 2
