"""The replay server: routes, history filtering, fault injection, counters, load."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from daily_index.demo_data import generate
from daily_index.replay import DEMO_DAY, DEMO_FIRST_DAY, Fault, ReplayServer, responses_dir
from daily_index.sources.base import DEFAULT_BASE_URLS


def ms(day) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as replay:
        yield replay


@pytest.fixture(autouse=True)
def _clean(server):
    server.reset()
    server.latency_s = 0.0


def test_base_urls_cover_every_api_family(server):
    urls = server.base_urls()
    assert set(urls) == set(DEFAULT_BASE_URLS)
    assert all(u.startswith(f"{server.url}/") for u in urls.values())
    assert server.n8n_base_url == f"{server.url}/n8n"
    assert server.url.startswith("http://127.0.0.1:")


def test_url_needs_a_running_server():
    with pytest.raises(RuntimeError, match="not running"):
        _ = ReplayServer().url


def test_klines_are_filtered_by_start_and_end_time(server):
    url = f"{server.base_urls()['binance_spot']}/api/v3/klines"
    start = ms(DEMO_DAY) - 3 * 86_400_000
    rows = httpx.get(
        url,
        params={"symbol": "BTCUSDT", "interval": "1d", "startTime": start, "endTime": start + 1},
    ).json()
    assert [r[0] for r in rows] == [start]
    bad = httpx.get(url, params={"symbol": "NOPE", "interval": "1d"})
    assert bad.status_code == 400 and bad.json()["msg"] == "Invalid symbol."


def test_market_chart_range_is_filtered_by_from_and_to(server):
    url = f"{server.base_urls()['coingecko']}/coins/bitcoin/market_chart/range"
    start = ms(DEMO_FIRST_DAY) // 1000
    body = httpx.get(url, params={"vs_currency": "usd", "from": start, "to": start + 86_399}).json()
    assert set(body) == {"prices", "market_caps", "total_volumes"}
    assert len(body["prices"]) == 4
    assert all(start * 1000 <= p[0] < (start + 86_400) * 1000 for p in body["prices"])


def test_fng_limit_and_order(server):
    url = f"{server.base_urls()['alternative_me']}/fng/"
    body = httpx.get(url, params={"limit": 3}).json()
    assert [int(e["timestamp"]) * 1000 for e in body["data"]] == [
        ms(DEMO_DAY) - i * 86_400_000 for i in range(3)
    ]
    everything = httpx.get(url, params={"limit": 0}).json()["data"]
    assert len(everything) == (DEMO_DAY - DEMO_FIRST_DAY).days + 1


def test_fred_needs_an_api_key_and_filters_dates(server):
    url = f"{server.base_urls()['fred']}/fred/series/observations"
    missing = httpx.get(url, params={"series_id": "DGS10"})
    assert missing.status_code == 400 and "api_key" in missing.json()["error_message"]
    body = httpx.get(
        url,
        params={
            "series_id": "DFF",
            "api_key": "k",
            "file_type": "json",
            "observation_start": "2026-09-01",
            "observation_end": "2026-09-03",
        },
    ).json()
    assert [o["date"] for o in body["observations"]] == ["2026-09-01", "2026-09-02", "2026-09-03"]
    assert body["count"] == 3


def test_current_endpoints_answer_as_of_demo_day(server):
    base = server.base_urls()["coingecko"]
    price = httpx.get(
        f"{base}/simple/price", params={"ids": "bitcoin,solana", "vs_currencies": "usd"}
    )
    assert set(price.json()) == {"bitcoin", "solana"}
    chart = json.loads((responses_dir() / "coingecko/market_chart/bitcoin_usd.json").read_text())
    assert price.json()["bitcoin"]["usd"] == chart["prices"][-1][1]
    assert chart["prices"][-1][0] // 86_400_000 * 86_400_000 == ms(DEMO_DAY)
    assert "last_updated_at" not in price.json()["bitcoin"]  # only when asked, like the API
    timed = httpx.get(
        f"{base}/simple/price",
        params={"ids": "bitcoin", "vs_currencies": "usd", "include_last_updated_at": "true"},
    ).json()["bitcoin"]
    assert timed["usd"] == chart["prices"][-1][1]
    assert timed["last_updated_at"] * 1000 == chart["prices"][-1][0]  # the quote's own time
    updated = httpx.get(f"{base}/global").json()["data"]["updated_at"]
    assert datetime.fromtimestamp(updated, UTC).date() == DEMO_DAY


def test_fred_recording_has_the_demo_day(server):
    """The demo's "today" must have its own observation: FRED's lag would make it stale."""
    for series in ("DGS10", "DTWEXBGS", "DFF"):
        rows = json.loads((responses_dir() / f"fred/{series}.json").read_text())["observations"]
        assert max(o["date"] for o in rows if o["value"] != ".") == DEMO_DAY.isoformat()


def test_n8n_webhook_answers_a_trigger(server):
    url = f"{server.n8n_base_url}/webhook/kpi/usdt-dominance"
    trigger = {
        "traceId": "x",
        "kpiId": "usdt_dominance",
        "timestamp": "2026-09-01T12:00:00Z",
        "kpiType": "dominance",
        "schemaVersion": 2,
    }
    body = httpx.post(url, json=trigger).json()
    assert body["kpiId"] == "usdt_dominance" and isinstance(body["value"], float)
    outside = httpx.post(url, json={**trigger, "timestamp": "2020-01-01T12:00:00Z"}).json()
    assert "error" in outside and "value" not in outside
    # A GET is answered as n8n does: the webhook takes POST (doctor reads that as served).
    get = httpx.get(url)
    assert get.status_code == 404 and "Did you mean to make a POST request" in get.text
    assert httpx.get(f"{server.n8n_base_url}/healthz").status_code == 200
    missing = httpx.get(f"{server.n8n_base_url}/webhook/other")
    assert missing.status_code == 404 and "is not registered." in missing.text
    assert httpx.post(f"{server.n8n_base_url}/webhook/other", json=trigger).status_code == 404


def test_unknown_path_is_404(server):
    assert httpx.get(f"{server.url}/nothing/here").status_code == 404


def test_faults_are_served_first_in_order_for_their_prefix_only(server):
    base = server.base_urls()["coingecko"]
    server.inject(
        "/coingecko/api/v3/global",
        Fault(status=503),
        Fault(status=200, body="<html>", content_type="text/html"),
    )
    other = httpx.get(f"{base}/simple/price", params={"ids": "bitcoin", "vs_currencies": "usd"})
    assert other.status_code == 200
    first, second, third = (httpx.get(f"{base}/global") for _ in range(3))
    assert first.status_code == 503
    assert second.text == "<html>" and second.headers["content-type"] == "text/html"
    assert third.json()["data"]
    assert server.hits["/coingecko/api/v3/global"] == 3
    assert server.hits["/coingecko/api/v3/simple/price"] == 1


def test_fault_headers_and_delay(server):
    server.inject("/fred/", Fault(status=429, headers={"Retry-After": "7"}, delay_s=0.2))
    started = time.monotonic()
    answer = httpx.get(f"{server.base_urls()['fred']}/fred/series/observations")
    assert time.monotonic() - started >= 0.2
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"


def test_request_headers_are_recorded(server):
    httpx.get(f"{server.url}/defillama_stablecoins/stablecoincharts/all", headers={"X-Probe": "1"})
    assert server.headers_seen("/defillama_stablecoins/")[0]["x-probe"] == "1"
    assert server.headers_seen("/fred/") == []


def test_250_concurrent_requests(server):
    server.latency_s = 0.2
    url = f"{server.base_urls()['alternative_me']}/fng/"

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            answers = await asyncio.gather(
                *(client.get(url, params={"limit": 1}) for _ in range(250))
            )
        return [a.status_code for a in answers]

    statuses = asyncio.run(burst())
    assert statuses == [200] * 250
    # Served in parallel, not one after another (each answer takes 0.2 s). No wall-clock
    # bound: on a loaded machine the accept loop may reach only part of the burst at once.
    assert server.max_in_flight >= 10


def test_recording_is_small_and_matches_the_generator(tmp_path, monkeypatch):
    files = sorted(p for p in responses_dir().rglob("*.json"))
    assert sum(p.stat().st_size for p in files) < 2_000_000
    monkeypatch.setattr(generate, "OUT", tmp_path)
    generate.main()
    regenerated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert regenerated == [p.relative_to(responses_dir()) for p in files]
    for name in regenerated:
        assert (tmp_path / name).read_bytes() == (responses_dir() / name).read_bytes(), name


def test_demo_constants_match_the_recording():
    klines = json.loads((responses_dir() / "binance_spot/klines_BTCUSDT_1d.json").read_text())
    assert klines[0][0] == ms(DEMO_FIRST_DAY) and klines[-1][0] == ms(DEMO_DAY)
    assert (generate.FIRST_DAY, generate.LAST_DAY) == (DEMO_FIRST_DAY, DEMO_DAY)
