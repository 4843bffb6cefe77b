"""The push sensor: accepted pushes become KPI materialisations for their day, exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx

from daily_index.defs.ingest import build_ingest_sensor
from daily_index.defs.kpis import kpi_key
from daily_index.defs.resources import StorageResource
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, raw_key, read_fetch_status
from daily_index_tests.ingest.conftest import (
    Sender,
    data_update,
    encode,
    error_update,
    filed,
    push_kpis,
    today,
)


def tick(instance: dg.DagsterInstance, store_dir: Path) -> list:
    """One sensor tick; its events are recorded as the daemon records them."""
    sensor = build_ingest_sensor(kpis=push_kpis())
    context = dg.build_sensor_context(
        instance=instance, resources={"storage": StorageResource(local_dir=str(store_dir))}
    )
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return []
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return list(result.asset_events)


def materialisations(instance: dg.DagsterInstance, kpi_id: str, day) -> list:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=kpi_key(kpi_id), asset_partitions=[day.isoformat()]),
        limit=100,
    ).records


def test_a_push_is_materialised_like_a_pulled_value(sender: Sender, store_dir: Path) -> None:
    day = today() - timedelta(days=3)
    body = data_update(day=day, value=64321.5)
    assert sender.post(body, msg_id="msg_sensor").status_code == 202
    with dg.instance_for_test() as instance:
        [event] = tick(instance, store_dir)
        assert isinstance(event, dg.AssetMaterialization)
        [record] = materialisations(instance, "btc_price_push", day)
        meta = record.asset_materialization.metadata
        assert meta["value"].value == 64321.5
        assert meta["unit"].value == "USD"
        assert meta["source"].value == "coingecko via n8n"
        assert meta["trace_id"].value == body["traceId"]
        assert meta["delivery"].value == "push"
        assert meta["webhook_id"].value == "msg_sensor"
        assert "fetched_at" in meta
        # Stored as a pulled value is: the series row of that day, the raw payload, the status.
        store = LocalObjectStore(store_dir)
        series = KpiSeriesStore(store)
        assert series.value_on("btc_price_push", day) == 64321.5
        assert set(series.rows("btc_price_push")) == {day}
        assert store.read_bytes(raw_key("btc_price_push", day)) is not None
        assert read_fetch_status(store, day)["btc_price_push"]["status"] == "ok"
        # The next tick finds it in the event log and clears the queue; nothing twice.
        assert tick(instance, store_dir) == []
        assert filed(store_dir).pending() == []
        assert tick(instance, store_dir) == []
        assert len(materialisations(instance, "btc_price_push", day)) == 1


def test_an_unrecorded_tick_is_reported_again(sender: Sender, store_dir: Path) -> None:
    """A tick whose events never reached the event log (daemon killed) is redone."""
    assert sender.post(data_update()).status_code == 202
    sensor = build_ingest_sensor(kpis=push_kpis())
    resources = {"storage": StorageResource(local_dir=str(store_dir))}
    with dg.instance_for_test() as instance:
        lost = sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(lost.asset_events) == 1  # computed, never recorded
        assert len(tick(instance, store_dir)) == 1
        assert tick(instance, store_dir) == []
        assert len(materialisations(instance, "btc_price_push", today())) == 1


def test_an_error_push_is_a_failed_fetch_observation(sender: Sender, store_dir: Path) -> None:
    assert sender.post(error_update(), "/api/kpi-error").status_code == 202
    with dg.instance_for_test() as instance:
        [event] = tick(instance, store_dir)
        assert isinstance(event, dg.AssetObservation)
        assert event.metadata["fetch_status"].value == "failed"
        assert "503" in event.metadata["error"].value
        status = read_fetch_status(LocalObjectStore(store_dir), today())
        assert status["btc_price_push"]["status"] == "failed"
        assert tick(instance, store_dir) == []
        assert filed(store_dir).pending() == []
        assert materialisations(instance, "btc_price_push", today()) == []


def test_the_same_push_100_times_from_20_threads(sender: Sender, store_dir: Path) -> None:
    raw = encode(data_update(value=97500.25))
    headers = sender.headers(raw, msg_id="msg_hundred")
    codes: Counter[int] = Counter()
    lock = threading.Lock()

    def send(count: int) -> None:
        with httpx.Client(timeout=20) as client:
            for _ in range(count):
                status = sender.post(raw, headers=headers, client=client).status_code
                with lock:
                    codes[status] += 1

    threads = [threading.Thread(target=send, args=(5,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes == Counter({202: 1, 200: 99}), codes
    store = LocalObjectStore(store_dir)
    assert len(filed(store_dir).pending()) == 1
    with dg.instance_for_test() as instance:
        assert len(tick(instance, store_dir)) == 1
        assert tick(instance, store_dir) == []
        assert len(materialisations(instance, "btc_price_push", today())) == 1
    rows = KpiSeriesStore(store).rows("btc_price_push")
    assert [r.value for r in rows.values()] == [97500.25]


def test_the_sensor_is_in_the_definitions() -> None:
    from daily_index.definitions import build_definitions

    defs = build_definitions(environ={})
    assert defs.resolve_sensor_def("ingest_push_sensor").name == "ingest_push_sensor"
