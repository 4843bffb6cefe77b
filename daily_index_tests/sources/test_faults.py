"""Awkward far ends injected into the real replay server.

Each becomes a readable KPIErrorUpdate, or, where the API's shape allows it, a correctly
parsed value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.defs.resources import ConfigurationError, sources_from_env
from daily_index.replay import DEMO_DAY, Fault
from daily_index.sources import SourceSettings, fetch_all, fetch_many
from daily_index_tests.conftest import closed_port
from daily_index_tests.sources.support import FRED_KEY, N8N_SECRET, fetch, request, spec

SIMPLE = "/coingecko/api/v3/simple/price"
KLINES = "/binance_spot/api/v3/klines"
FUNDING = "/binance_futures/fapi/v1/fundingRate"
FRED = "/fred/fred/series/observations"
WEBHOOK = "/n8n/webhook/kpi/usdt-dominance"
HTML = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"
PAST = date(2026, 10, 6)
# A time of DEMO_DAY, as the unix seconds CoinGecko stamps its quotes and /global with.
ON_DEMO_DAY = int(datetime(2026, 11, 24, 9, 30, tzinfo=UTC).timestamp())


def quote(**fields) -> dict:
    """A /simple/price answer for bitcoin, last updated on DEMO_DAY."""
    return {"bitcoin": {"last_updated_at": ON_DEMO_DAY, **fields}}


def error_of(outcome) -> KPIErrorUpdate:
    assert isinstance(outcome.update, KPIErrorUpdate), outcome.update
    return outcome.update


def n8n_body(**fields) -> dict:
    return {
        "schemaVersion": 2,
        "traceId": "t-1",
        "kpiId": "usdt_dominance",
        "timestamp": "2026-11-24T12:00:00Z",
        "value": 5.1,
        **fields,
    }


def test_number_as_string_is_parsed(settings, server):
    server.inject(SIMPLE, Fault(body=quote(usd="97000.5")))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate)
    assert outcome.update.value == 97000.5


@pytest.mark.parametrize(
    "body, expected",
    [
        (quote(usd=None), "bitcoin.usd is null"),
        (quote(usd="n/a"), "bitcoin.usd is 'n/a'"),
        (quote(usd=True), "bitcoin.usd is a boolean"),
        (quote(), "no 'bitcoin' quote in 'usd'"),
        ({"bitcoin": {"usd": 97000.5}}, "bitcoin.last_updated_at is missing"),
        (quote(usd=1, last_updated_at="soon"), "bitcoin.last_updated_at is 'soon'"),
        ({}, "no 'bitcoin' quote"),
        ([], "expected an object keyed by coin id, got an empty list"),
    ],
)
def test_null_and_missing_values_name_the_field(settings, server, body, expected):
    server.inject(SIMPLE, Fault(body=body))
    assert expected in error_of(fetch(settings, "btc_price")).error


def test_nan_written_raw_is_rejected(settings, server):
    server.inject(
        SIMPLE, Fault(body=f'{{"bitcoin": {{"usd": NaN, "last_updated_at": {ON_DEMO_DAY}}}}}')
    )
    update = error_of(fetch(settings, "btc_price"))
    assert update.error_code == "invalid_value" and "finite" in update.error


def test_negative_price_is_out_of_domain(settings, server):
    server.inject(SIMPLE, Fault(body=quote(usd=-5)))
    update = error_of(fetch(settings, "btc_price"))
    assert update.error_code == "out_of_domain"
    assert "negative" in update.error


def test_dominance_above_100_is_out_of_domain(settings, server):
    server.inject(
        "/coingecko/api/v3/global",
        Fault(body={"data": {"market_cap_percentage": {"btc": 140}, "updated_at": ON_DEMO_DAY}}),
    )
    assert error_of(fetch(settings, "btc_dominance")).error_code == "out_of_domain"


@pytest.mark.parametrize(
    "kpi, prefix", [("btc_funding_rate", FUNDING), ("btc_close_binance", KLINES)]
)
def test_empty_array_is_an_error(settings, server, kpi, prefix):
    server.inject(prefix, Fault(body=[]))
    update = error_of(fetch(settings, kpi, PAST))
    assert (
        update.error_code == "no_data"
        and "BTCUSDT" in update.error
        and "2026-10-06" in update.error
    )


def test_fred_window_without_any_value_today_is_an_error(settings, server):
    rows = [{"date": (DEMO_DAY - timedelta(days=i)).isoformat(), "value": "."} for i in (1, 2)]
    server.inject(FRED, Fault(body={"observations": rows}))
    update = error_of(fetch(settings, "us_10y_yield"))
    assert update.error_code == "no_data" and update.retryable
    assert "FRED has no observation of DGS10 between 2026-11-15 and 2026-11-24" in update.error


def test_fred_dot_today_is_no_observation(settings, server):
    rows = [{"date": (DEMO_DAY - timedelta(days=i)).isoformat(), "value": "."} for i in range(3)]
    server.inject(FRED, Fault(body={"observations": rows}))
    update = error_of(fetch(settings, "us_10y_yield"))
    assert update.error_code == "no_observation" and "market holiday" in update.error


def test_fred_dot_on_the_asked_day(settings, server):
    server.inject(FRED, Fault(body={"observations": [{"date": "2026-10-06", "value": "."}]}))
    update = error_of(fetch(settings, "us_10y_yield", PAST))
    assert update.error_code == "no_observation" and not update.retryable
    assert update.error == (
        "FRED has no observation of DGS10 for 2026-10-06: it marks no value that day ('.'), "
        "e.g. a market holiday"
    )


def test_fred_without_key_names_the_variable_and_sends_nothing(settings, server):
    outcome = fetch(dataclasses.replace(settings, fred_api_key=None), "us_10y_yield")
    update = error_of(outcome)
    assert "FRED_API_KEY" in update.error and update.error_code == "missing_secret"
    assert not server.hits


def test_html_page_with_200_is_not_json_and_not_retried(settings, server):
    server.inject(SIMPLE, Fault(body=HTML, content_type="text/html"))
    outcome = fetch(settings, "btc_price")
    update = error_of(outcome)
    assert update.error_code == "invalid_json"
    assert "is not JSON (looks like an HTML page)" in update.error
    assert server.hits[SIMPLE] == 1 and outcome.attempts == 1


def test_html_500_is_retried_then_reported(settings, server):
    server.inject(SIMPLE, *[Fault(status=500, body=HTML, content_type="text/html")] * 3)
    outcome = fetch(settings, "btc_price")
    update = error_of(outcome)
    host = settings.base_urls["coingecko"].removeprefix("http://").split("/")[0]
    assert update.error.startswith(
        f"HTTP 500 from {host}/coingecko/api/v3/simple/price after 3 attempts"
    )
    assert "HTML" in update.error and update.retryable
    assert server.hits[SIMPLE] == 3 and outcome.attempts == 3


def test_invalid_json(settings, server):
    server.inject(SIMPLE, Fault(body='{"bitcoin": {"usd": 9'))
    update = error_of(fetch(settings, "btc_price"))
    assert update.error_code == "invalid_json" and "starts with" in update.error


def test_5xx_then_success_returns_the_value(settings, server):
    server.inject(SIMPLE, Fault(status=503), Fault(status=502))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate)
    assert outcome.attempts == 3 and server.hits[SIMPLE] == 3


def test_429_honours_retry_after_seconds(settings, server):
    server.inject(SIMPLE, Fault(status=429, headers={"Retry-After": "1"}))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate)
    assert server.hits[SIMPLE] == 2 and outcome.attempts == 2
    # The server's wait, not the (tiny) backoff of the test settings.
    assert outcome.waited_s == pytest.approx(1.0)


def test_429_honours_retry_after_http_date(settings, server):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    server.inject(SIMPLE, Fault(status=429, headers={"Retry-After": when}))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate)
    assert 0.05 < outcome.waited_s <= 2  # the date has one-second resolution


def test_retry_after_above_the_cap_fails_at_once_naming_the_wait(settings, server):
    server.inject(SIMPLE, *[Fault(status=429, headers={"Retry-After": "300"})] * 3)
    outcome = fetch(settings, "btc_price")
    update = error_of(outcome)
    assert update.error_code == "rate_limited" and update.retryable
    assert (
        "CoinGecko asked to wait 300 s (Retry-After), more than "
        "DAILY_INDEX_RETRY_AFTER_MAX_S=120" in update.error
    )
    assert server.hits[SIMPLE] == 1 and outcome.attempts == 1 and outcome.waited_s == 0


def test_the_cap_comes_from_the_settings(settings, server):
    server.inject(SIMPLE, Fault(status=429, headers={"Retry-After": "1"}))
    strict = dataclasses.replace(settings, retry_after_max_s=0.5)
    update = error_of(fetch(strict, "btc_price"))
    assert "asked to wait 1 s (Retry-After), more than DAILY_INDEX_RETRY_AFTER_MAX_S=0.5" in (
        update.error
    )


def test_retry_after_beyond_the_fetch_budget_fails_at_once(settings, server):
    server.inject(FUNDING, Fault(status=503, headers={"Retry-After": "30"}))
    outcome = fetch(dataclasses.replace(settings, fetch_budget_s=5), "btc_funding_rate")
    update = error_of(outcome)
    assert "Binance futures asked to wait 30 s (Retry-After)" in update.error
    assert "left of the fetch budget (DAILY_INDEX_FETCH_BUDGET_S=5)" in update.error
    assert server.hits[FUNDING] == 1


def test_400_is_not_retried_and_quotes_the_api(settings, server):
    server.inject(KLINES, Fault(status=400, body={"code": -1121, "msg": "Invalid symbol."}))
    outcome = fetch(settings, "btc_close_binance")
    update = error_of(outcome)
    assert server.hits[KLINES] == 1 and outcome.attempts == 1
    assert update.error.endswith("/binance_spot/api/v3/klines: Invalid symbol.")
    assert not update.retryable


def test_timeout_becomes_an_error(settings, server):
    fast = dataclasses.replace(settings, timeout_s=0.3, max_attempts=2)
    server.inject(SIMPLE, Fault(delay_s=1.0), Fault(delay_s=1.0))
    outcome = fetch(fast, "btc_price")
    update = error_of(outcome)
    assert update.error_code == "timeout" and update.retryable
    assert update.error.startswith("timed out after 0.3 s")
    assert outcome.attempts == 2


def test_connection_refused_is_a_retryable_error(settings):
    dead = f"http://127.0.0.1:{closed_port()}"
    outcome = fetch(dataclasses.replace(settings, base_urls={"coingecko": dead}), "btc_price")
    update = error_of(outcome)
    assert update.error_code == "connection_error" and outcome.attempts == 3
    assert "could not reach 127.0.0.1" in update.error


def test_unexpected_exception_is_an_internal_error(settings):
    kpi = spec(
        "btc_price",
        source={
            "kind": "coingecko_price",
            "baseUrl": "http://[::1",
            "params": {"coin": "bitcoin", "vs": "usd"},
        },
    )
    update = error_of(fetch(settings, kpi))
    assert update.error_code == "internal_error"
    assert update.error.startswith("InvalidURL")


def test_n8n_sends_the_trigger_with_the_auth_header(settings, server):
    outcome = fetch(settings, "usdt_dominance", PAST)
    assert isinstance(outcome.update, KPIDataUpdate)
    (seen,) = [r for r in server.requests if r.method == "POST"]  # after its health check
    assert seen.headers["x-n8n-auth"] == N8N_SECRET
    trigger = json.loads(seen.body)
    assert trigger["kpiId"] == "usdt_dominance" and trigger["timestamp"] == "2026-10-06T12:00:00Z"
    assert trigger["kpiType"] == "dominance" and trigger["traceId"] == "t-1"


def test_n8n_without_auth_settings_sends_no_auth_header(settings, server):
    fetch(
        dataclasses.replace(settings, n8n_auth_header=None, n8n_auth_value=None), "usdt_dominance"
    )
    assert "x-n8n-auth" not in server.headers_seen("/n8n/webhook/")[0]


def test_n8n_answer_for_another_kpi_is_rejected(settings, server):
    server.inject(WEBHOOK, Fault(body=n8n_body(kpiId="btc_price")))
    update = error_of(fetch(settings, "usdt_dominance"))
    assert update.error_code == "wrong_kpi" and "btc_price" in update.error


def test_n8n_answer_for_another_day_is_rejected(settings, server):
    server.inject(WEBHOOK, Fault(body=n8n_body()))  # today's answer to a backfill
    update = error_of(fetch(settings, "usdt_dominance", PAST))
    assert update.error_code == "wrong_day"


def test_n8n_string_value_is_rejected_by_the_strict_contract(settings, server):
    server.inject(WEBHOOK, Fault(body=n8n_body(value="5.1")))
    update = error_of(fetch(settings, "usdt_dominance"))
    assert update.error_code == "invalid_value" and "'value'" in update.error


def test_n8n_nan_is_rejected(settings, server):
    raw = json.dumps(n8n_body()).replace("5.1", "NaN")
    server.inject(WEBHOOK, Fault(body=raw))
    update = error_of(fetch(settings, "usdt_dominance"))
    assert "finite" in update.error


def test_n8n_error_update_passes_through(settings, server):
    body = n8n_body(error="upstream CoinGecko returned 429", errorCode="upstream", retryable=True)
    del body["value"]
    server.inject(WEBHOOK, Fault(body=body))
    update = error_of(fetch(settings, "usdt_dominance"))
    assert update.error == "upstream CoinGecko returned 429" and update.retryable


def test_n8n_unknown_webhook_quotes_n8n(settings):
    kpi = spec("usdt_dominance", source={"kind": "n8n", "params": {"webhook": "kpi/nope"}})
    update = error_of(fetch(settings, kpi))
    assert "HTTP 404" in update.error and "is not registered" in update.error


def test_n8n_without_base_url_names_the_variable(settings):
    update = error_of(fetch(dataclasses.replace(settings, n8n_base_url=None), "usdt_dominance"))
    assert "DAILY_INDEX_N8N_BASE_URL" in update.error


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(status=500, body=f"api_key={FRED_KEY} invalid")] * 3,
        [Fault(status=400, body={"error_code": 400, "error_message": f"bad key {FRED_KEY}"})],
        [Fault(status=200, body=f"<html>key {FRED_KEY}</html>", content_type="text/html")],
        [Fault(body={"observations": [{"date": "2026-11-23", "value": FRED_KEY}]})],
        [Fault(delay_s=1.0)] * 3,
    ],
    ids=["500", "400-echo", "html", "bad-value", "timeout"],
)
def test_api_key_never_appears_in_an_error(settings, server, faults):
    server.inject(FRED, *faults)
    outcome = fetch(dataclasses.replace(settings, timeout_s=0.3), "us_10y_yield")
    update = error_of(outcome)
    assert FRED_KEY not in json.dumps(update.to_wire())
    assert FRED_KEY not in repr(outcome)
    assert server.requests[0].query["api_key"] == FRED_KEY  # it was really sent


def test_api_key_is_redacted_from_connection_errors(settings):
    dead = f"http://127.0.0.1:{closed_port()}"
    outcome = fetch(dataclasses.replace(settings, base_urls={"fred": dead}), "us_10y_yield")
    assert FRED_KEY not in json.dumps(error_of(outcome).to_wire())


def test_settings_repr_hides_secrets():
    text = repr(SourceSettings(fred_api_key=FRED_KEY, n8n_auth_value=N8N_SECRET))
    assert FRED_KEY not in text and N8N_SECRET not in text


def test_n8n_post_is_resent_whole_after_a_5xx(settings, server):
    server.inject(WEBHOOK, Fault(status=502))
    outcome = fetch(settings, "usdt_dominance")
    assert isinstance(outcome.update, KPIDataUpdate) and outcome.attempts == 2
    first, second = [r for r in server.requests if r.method == "POST"]
    assert first.body == second.body and json.loads(second.body)["kpiId"] == "usdt_dominance"


def test_timeout_setting_applies_to_a_callers_client(settings, server):
    async def run():
        async with httpx.AsyncClient(timeout=30) as client:
            fast = dataclasses.replace(settings, timeout_s=0.2, max_attempts=1)
            return await fetch_many([request("btc_price")], fast, client=client)

    server.inject(SIMPLE, Fault(delay_s=1.0))
    (outcome,) = asyncio.run(run())
    assert error_of(outcome).error_code == "timeout"


def test_future_day_is_refused_without_a_request(settings, server):
    (outcome,) = fetch_all([request("btc_price", DEMO_DAY + timedelta(days=1))], settings)
    assert error_of(outcome).error_code == "future_day" and not server.hits


# Bodies: strictly UTF-8, size-capped, depth-checked; each a readable error, never internal.

UTF16_QUOTE = json.dumps(quote(usd=97000.5))


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (UTF16_QUOTE.encode("utf-16"), ["UTF-16 little-endian", "byte-order mark"]),
        (UTF16_QUOTE.encode("utf-16-be"), ["NUL bytes", "UTF-16 or UTF-32"]),
        (UTF16_QUOTE.encode("utf-32-le"), ["NUL bytes"]),
        ('{"bitcoin": {"usd": 1, "name": "Bitcöin"}}'.encode("latin-1"), ["not valid UTF-8"]),
    ],
    ids=["utf16-bom", "utf16-no-bom", "utf32", "latin1"],
)
def test_a_body_that_is_not_utf8_is_invalid_encoding(settings, server, payload, words):
    server.inject(SIMPLE, Fault(body=payload, content_type="application/json; charset=latin-1"))
    outcome = fetch(settings, "btc_price")
    update = error_of(outcome)
    assert update.error_code == "invalid_encoding", update.error
    assert f"{server.url.removeprefix('http://')}{SIMPLE}" in update.error
    assert "charset=latin-1" in update.error and "JSON must be UTF-8" in update.error
    for word in words:
        assert word in update.error
    assert "?" not in update.error.split(" is ")[0]  # host/path only, no query string
    assert outcome.attempts == 1


def test_a_utf8_body_with_a_byte_order_mark_is_read(settings, server):
    server.inject(SIMPLE, Fault(body=b"\xef\xbb\xbf" + UTF16_QUOTE.encode()))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate) and outcome.update.value == 97000.5


def test_a_2mb_body_is_too_large_and_names_the_cap(settings, server):
    server.inject(FRED, Fault(body=json.dumps({"observations": [], "pad": "x" * 2_000_000})))
    outcome = fetch(settings, "us_10y_yield")
    update = error_of(outcome)
    assert update.error_code == "too_large" and not update.retryable
    assert "larger than 1,048,576 bytes" in update.error
    assert "DAILY_INDEX_MAX_RESPONSE_BYTES" in update.error
    assert "/fred/fred/series/observations" in update.error
    assert "api_key" not in update.error and FRED_KEY not in update.error
    assert outcome.attempts == 1


def test_the_cap_applies_to_the_decompressed_body_read_as_a_stream(settings, server):
    """A small gzip body that inflates past the cap: no Content-Length tells its real size."""
    inflated = json.dumps(quote(usd=1, pad="0" * 3_000_000)).encode()
    server.inject(SIMPLE, Fault(body=gzip.compress(inflated), headers={"Content-Encoding": "gzip"}))
    update = error_of(fetch(settings, "btc_price"))
    assert update.error_code == "too_large"


def test_a_smaller_cap_from_the_settings(settings, server):
    small = dataclasses.replace(settings, max_response_bytes=64)
    update = error_of(fetch(small, "fear_greed"))
    assert update.error_code == "too_large" and "larger than 64 bytes" in update.error


@pytest.mark.parametrize(
    "body",
    ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, "[" * 5000],
    ids=["arrays", "objects", "unclosed"],
)
def test_5000_deep_nesting_is_too_deep_not_a_recursion_error(settings, server, body):
    server.inject(SIMPLE, Fault(body=body))
    update = error_of(fetch(settings, "btc_price"))
    assert update.error_code == "too_deep", update.error
    assert "nests more than 64 levels deep" in update.error
    assert "DAILY_INDEX_MAX_JSON_DEPTH" in update.error


def test_depth_at_the_limit_is_parsed_one_more_is_not(settings, server):
    shallow = dataclasses.replace(settings, max_json_depth=3)
    server.inject(SIMPLE, Fault(body=quote(usd=5.0, extra=[[1]])))  # 4 levels
    assert error_of(fetch(shallow, "btc_price")).error_code == "too_deep"
    server.inject(SIMPLE, Fault(body=quote(usd=5.0, extra=[1])))  # 3 levels
    assert isinstance(fetch(shallow, "btc_price").update, KPIDataUpdate)


def test_brackets_inside_strings_do_not_count_as_depth(settings, server):
    server.inject(SIMPLE, Fault(body=quote(usd=5.0, note='[{"' * 3000)))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate) and outcome.update.value == 5.0


def test_a_deep_error_body_is_described_not_parsed(settings, server):
    server.inject(KLINES, Fault(status=400, body="{" * 5000))
    update = error_of(fetch(settings, "btc_close_binance"))
    assert update.error_code == "http_error" and "HTTP 400" in update.error


@pytest.mark.parametrize(
    ("name", "raw", "problem"),
    [
        ("DAILY_INDEX_MAX_RESPONSE_BYTES", "1MB", "a whole number"),
        ("DAILY_INDEX_MAX_RESPONSE_BYTES", "0", ">= 1"),
        ("DAILY_INDEX_MAX_JSON_DEPTH", "deep", "a whole number"),
    ],
)
def test_a_bad_limit_setting_is_a_configuration_error(name, raw, problem):
    with pytest.raises(ConfigurationError, match=f"{name} must be {problem}"):
        sources_from_env({name: raw})


def test_limit_settings_come_from_the_environment():
    default = sources_from_env({}).settings()
    assert (default.max_response_bytes, default.max_json_depth) == (1_048_576, 64)
    chosen = sources_from_env(
        {"DAILY_INDEX_MAX_RESPONSE_BYTES": "4096", "DAILY_INDEX_MAX_JSON_DEPTH": "8"}
    ).settings()
    assert (chosen.max_response_bytes, chosen.max_json_depth) == (4096, 8)


def test_a_big_5xx_page_is_still_retried_as_a_5xx(settings, server):
    page = "<html><body>" + "busy " * 500_000 + "</body></html>"
    server.inject(SIMPLE, Fault(status=503, body=page, content_type="text/html"))
    outcome = fetch(settings, "btc_price")
    assert isinstance(outcome.update, KPIDataUpdate) and outcome.attempts == 2
