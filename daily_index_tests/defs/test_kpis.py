"""The KPI multi-asset through dg.materialize against the replay server and real storage."""

import json
from collections import Counter
from datetime import timedelta

import dagster as dg
import pytest

from daily_index.defs.kpis import build_kpi_assets, kpi_key
from daily_index.defs.resources import KpiSourcesResource, StorageResource
from daily_index.registry import load_registry
from daily_index.replay import DEMO_DAY, Fault, ReplayServer
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, read_fetch_status

ENV = {"FRED_API_KEY": "k", "DAILY_INDEX_N8N_BASE_URL": "x"}
KPIS = load_registry().enabled(ENV)


@pytest.fixture(scope="module")
def replay():
    with ReplayServer() as server:
        yield server


@pytest.fixture
def sources(replay):
    replay.reset()
    return KpiSourcesResource(
        base_urls=replay.base_urls(),
        n8n_base_url=replay.n8n_base_url,
        fred_api_key="k",
        today=DEMO_DAY.isoformat(),
        max_attempts=1,
        timeout_s=5,
    )


def error_text(error) -> str:
    """The message of a Dagster error and of its causes."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def _run(sources, storage, *, partition_key=None, selection=None, tags=None, instance=None):
    return dg.materialize(
        [build_kpi_assets(kpis=KPIS)],
        partition_key=partition_key,
        selection=selection,
        tags=tags,
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={"sources": sources, "storage": storage},
        raise_on_error=False,
    )


def test_every_kpi_of_the_day_is_materialised_with_its_value(sources, tmp_path):
    storage = StorageResource(local_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    result = _run(sources, storage, partition_key=DEMO_DAY.isoformat(), instance=instance)
    assert result.success
    events = result.get_asset_materialization_events()
    # FRED's series are published days late: today they are expected gaps, not failures.
    lagged = {kpi_key(k.id) for k in KPIS if k.publication_lag_days}
    assert lagged
    # Derived KPIs need a window of stored history; a fresh store has one day: a gap too.
    short = {kpi_key(k.id) for k in KPIS if k.is_derived} - lagged
    assert short
    assert {e.asset_key for e in events} == {kpi_key(k.id) for k in KPIS} - lagged - short
    for key in lagged | short:
        [gap] = instance.fetch_observations(key, limit=5).records
        assert gap.asset_observation.metadata["fetch_status"].value == "expected_gap"
    for key in short:
        [gap] = instance.fetch_observations(key, limit=5).records
        assert "not enough history" in gap.asset_observation.metadata["reason"].value
    series = KpiSeriesStore(LocalObjectStore(tmp_path))
    for event in events:
        materialization = event.step_materialization_data.materialization
        kpi_id = materialization.asset_key.path[-1]
        stored = series.value_on(kpi_id, DEMO_DAY)
        assert materialization.metadata["value"].value == pytest.approx(stored)
        assert materialization.metadata["trace_id"].value
        raw = json.loads((tmp_path / "raw" / kpi_id / f"{DEMO_DAY}.json").read_text())
        assert raw["kpiId"] == kpi_id and raw["value"] == pytest.approx(stored)


def test_one_failing_kpi_fails_the_run_but_not_the_others(replay, sources, tmp_path):
    storage = StorageResource(local_dir=str(tmp_path))
    series = KpiSeriesStore(LocalObjectStore(tmp_path))
    assert _run(sources, storage, partition_key=DEMO_DAY.isoformat()).success
    before = series.value_on("fear_greed", DEMO_DAY)

    replay.inject(
        "/alternative_me",
        Fault(status=200, body="<html>maintenance</html>", content_type="text/html"),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = _run(sources, storage, partition_key=DEMO_DAY.isoformat(), instance=instance)
    assert not result.success
    landed = {e.asset_key for e in result.get_asset_materialization_events()}
    assert kpi_key("fear_greed") not in landed
    fetched_today = [k for k in KPIS if not k.publication_lag_days and not k.is_derived]
    assert len(landed) == len(fetched_today) - 1
    # The failed KPI keeps what was stored before, and says why it failed.
    assert series.value_on("fear_greed", DEMO_DAY) == before
    status = read_fetch_status(LocalObjectStore(tmp_path), DEMO_DAY)["fear_greed"]
    assert status["status"] == "failed" and "HTML" in status["reason"]
    observations = instance.fetch_observations(kpi_key("fear_greed"), limit=5).records
    assert observations[0].asset_observation.metadata["fetch_status"].value == "failed"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "fear_greed" in error_text(failure.step_failure_data.error)


def test_a_subset_fetches_only_the_selected_kpi(replay, sources, tmp_path):
    storage = StorageResource(local_dir=str(tmp_path))
    result = _run(
        sources, storage, partition_key=DEMO_DAY.isoformat(), selection=[kpi_key("fear_greed")]
    )
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        kpi_key("fear_greed")
    ]
    assert sorted({r.path.split("/")[1] for r in replay.requests}) == ["alternative_me"]


def test_a_range_of_days_in_one_run_stores_each_days_own_value(sources, tmp_path):
    storage = StorageResource(local_dir=str(tmp_path))
    first, last = DEMO_DAY - timedelta(days=4), DEMO_DAY - timedelta(days=1)
    result = _run(
        sources,
        storage,
        selection=[kpi_key("btc_price"), kpi_key("btc_close_binance")],
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    series = KpiSeriesStore(LocalObjectStore(tmp_path))
    frame = series.read("btc_close_binance")
    assert [d.isoformat() for d in frame["date"]] == [
        (first + timedelta(days=i)).isoformat() for i in range(4)
    ]
    # past days get their own historical value, never the live quote
    assert frame["value"].nunique() == 4
    assert len(series.read("btc_price")) == 4
    # Each stored day is its own materialisation, with its own value.
    events = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == kpi_key("btc_close_binance")
    ]
    assert sorted(m.partition for m in events) == [d.isoformat() for d in frame["date"]]
    by_day = {m.partition: m.metadata["value"].value for m in events}
    assert by_day == {d.isoformat(): v for d, v in zip(frame["date"], frame["value"], strict=True)}


def test_a_30_day_range_asks_each_api_for_the_range_once(replay, sources, tmp_path):
    """A backfill of 30 days: one request per KPI and endpoint, every day its own value."""
    storage = StorageResource(local_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    first, last = DEMO_DAY - timedelta(days=29), DEMO_DAY
    api_kpis = [k for k in KPIS if k.source.kind != "n8n"]
    result = _run(
        sources,
        storage,
        selection=[kpi_key(k.id) for k in api_kpis],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    paths = Counter(r.path for r in replay.requests)
    assert paths["/defillama_stablecoins/stablecoincharts/all"] == 1
    assert paths["/coingecko/api/v3/global"] == 1  # three KPIs, today only
    assert paths["/binance_spot/api/v3/klines"] == 1  # two KPIs on BTCUSDT
    assert paths["/fred/fred/series/observations"] == 3  # one per series
    assert len(replay.requests) <= 2 * len(api_kpis)
    series = KpiSeriesStore(LocalObjectStore(tmp_path))
    frame = series.read("btc_close_binance")
    assert len(frame) == 30 and frame["value"].nunique() == 30
    assert len(instance.get_materialized_partitions(kpi_key("btc_close_binance"))) == 30


def test_a_range_leaves_days_without_a_value_unmaterialised(sources, tmp_path):
    """FRED has no observation on weekends: those days are expected gaps, not materialised."""
    storage = StorageResource(local_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    first, last = DEMO_DAY - timedelta(days=9), DEMO_DAY - timedelta(days=1)
    result = _run(
        sources,
        storage,
        selection=[kpi_key("us_10y_yield")],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    stored = {
        d.isoformat()
        for d in KpiSeriesStore(LocalObjectStore(tmp_path)).read("us_10y_yield")["date"]
    }
    weekend = {
        (first + timedelta(days=i)).isoformat()
        for i in range(9)
        if (first + timedelta(days=i)).weekday() >= 5
    }
    assert weekend and not weekend & stored
    assert instance.get_materialized_partitions(kpi_key("us_10y_yield")) == stored


def test_unreachable_storage_fails_naming_the_store(sources, unused_port):
    storage = StorageResource(
        backend="s3",
        bucket="nowhere",
        endpoint_url=f"http://127.0.0.1:{unused_port}",
        access_key_id="a",
        secret_access_key="b",
    )
    result = _run(sources, storage, partition_key=DEMO_DAY.isoformat())
    assert not result.success
    assert result.get_asset_materialization_events() == []
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "S3 bucket 'nowhere'" in error_text(failure.step_failure_data.error)
