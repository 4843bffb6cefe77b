"""The batch entry points: bounded concurrency, order, isolation, progress, any thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.replay import DEMO_DAY, Fault
from daily_index.sources import FetchOutcome, fetch_all, fetch_many
from daily_index_tests.sources.support import request, spec

WEBHOOK = "/n8n/webhook/kpi/usdt-dominance"
ALL_KPIS = [
    "btc_price",
    "eth_price",
    "btc_dominance",
    "fear_greed",
    "stablecoin_supply",
    "btc_funding_rate",
    "btc_spot_volume",
    "us_10y_yield",
    "usdt_dominance",
]


def test_100_fetches_are_bounded_by_concurrency(settings, server):
    """n8n triggers are never shared: 100 of them are 100 POSTs, at most 8 in flight."""
    server.latency_s = 0.05
    bounded = dataclasses.replace(settings, concurrency=8)
    requests = [request("usdt_dominance", trace=f"t-{i}") for i in range(100)]
    seen: list[FetchOutcome] = []
    outcomes = fetch_all(requests, bounded, on_done=seen.append)
    assert all(isinstance(o.update, KPIDataUpdate) for o in outcomes), outcomes[0].update
    assert [o.update.trace_id for o in outcomes] == [f"t-{i}" for i in range(100)]
    assert len(seen) == 100 and {o.update.trace_id for o in seen} == {f"t-{i}" for i in range(100)}
    assert server.hits[WEBHOOK] == 100
    assert 4 <= server.max_in_flight <= 8
    assert all(o.latency_ms >= 50 for o in outcomes)


def test_the_same_get_of_100_kpi_days_is_sent_once(settings, server):
    requests = [request("btc_price", trace=f"t-{i}") for i in range(100)]
    outcomes = fetch_all(requests, settings)
    assert all(isinstance(o.update, KPIDataUpdate) for o in outcomes)
    assert [o.update.trace_id for o in outcomes] == [f"t-{i}" for i in range(100)]
    assert sum(server.hits.values()) == 1


def test_one_failure_does_not_affect_the_others(settings, server):
    broken = spec(
        "btc_price",
        source={
            "kind": "coingecko_price",
            "baseUrl": "http://[::1",
            "params": {"coin": "x", "vs": "usd"},
        },
    )
    server.inject("/binance_futures/", *[Fault(status=503)] * 3)
    requests = [request(k) for k in ALL_KPIS] + [request(broken)]
    outcomes = fetch_all(requests, settings)
    by_id = {o.request.spec.id: o for o in outcomes[:-1]}
    assert [o.request for o in outcomes] == requests
    assert isinstance(by_id["btc_funding_rate"].update, KPIErrorUpdate)
    assert by_id["btc_funding_rate"].attempts == 3
    assert isinstance(outcomes[-1].update, KPIErrorUpdate)
    assert outcomes[-1].update.error_code == "internal_error"
    others = [o for k, o in by_id.items() if k != "btc_funding_rate"]
    assert all(isinstance(o.update, KPIDataUpdate) for o in others), others


def test_fetch_all_from_a_worker_thread(settings):
    result: list[FetchOutcome] = []
    worker = threading.Thread(
        target=lambda: result.extend(fetch_all([request("eth_price")], settings))
    )
    worker.start()
    worker.join(timeout=10)
    assert isinstance(result[0].update, KPIDataUpdate)


def test_fetch_all_inside_a_running_event_loop(settings):
    async def caller() -> list[FetchOutcome]:
        return fetch_all([request("eth_price")], settings)

    (outcome,) = asyncio.run(caller())
    assert isinstance(outcome.update, KPIDataUpdate)


def test_fetch_many_with_a_caller_client_leaves_it_open(settings, server):
    async def run() -> tuple[list[FetchOutcome], bool]:
        async with httpx.AsyncClient() as client:
            outcomes = await fetch_many(
                [request("sol_price"), request("fear_greed")], settings, client=client
            )
            return outcomes, client.is_closed

    outcomes, closed = asyncio.run(run())
    assert not closed
    assert [o.request.spec.id for o in outcomes] == ["sol_price", "fear_greed"]
    assert all(o.attempts == 1 for o in outcomes)


def test_empty_batch(settings):
    assert fetch_all([], settings) == []


def test_a_whole_day_of_the_default_registry(settings, server):
    outcomes = fetch_all([request(k, DEMO_DAY) for k in ALL_KPIS], settings)
    assert all(isinstance(o.update, KPIDataUpdate) for o in outcomes)
    assert sum(server.hits.values()) == len(ALL_KPIS)
