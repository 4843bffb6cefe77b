"""Expected gaps through the KPI step, and the quality check of every KPI-day.

Weekends, holidays and days a source cannot give are not failures; every KPI-day gets its
check, visible on the instance per partition.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest

from daily_index.checks import CHECK_NAME
from daily_index.defs.kpis import build_kpi_assets, kpi_key
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import KpiSourcesResource, StorageResource
from daily_index.registry import load_registry
from daily_index.report.model import load_day_table
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, read_fetch_status
from daily_index_tests.apiserver import ApiServer

TODAY = date(2026, 11, 30)  # a Monday
THANKSGIVING = date(2026, 11, 26)
FIRST = TODAY - timedelta(days=14)
REGISTRY = load_registry()
YIELD = REGISTRY.get("us_10y_yield")
DOMINANCE = REGISTRY.get("btc_dominance")


def dgs10_value(day: date) -> str:
    return f"{4 + (day - FIRST).days / 100:.2f}"


def fred_observations(query: dict[str, str]) -> tuple[int, dict]:
    """FRED's documented shape: business days only, '.' on a market holiday."""
    start = date.fromisoformat(query["observation_start"])
    end = date.fromisoformat(query["observation_end"])
    rows = []
    day = start
    while day <= end:
        if day.weekday() < 5:
            value = "." if day == THANKSGIVING else dgs10_value(day)
            rows.append({"date": day.isoformat(), "value": value})
        day += timedelta(days=1)
    return 200, {"observation_start": start.isoformat(), "observations": rows}


@pytest.fixture
def fred():
    with ApiServer({"/fred/series/observations": fred_observations}) as server:
        yield server


def sources_for(server: ApiServer, today: date = TODAY) -> KpiSourcesResource:
    return KpiSourcesResource(
        base_urls={"fred": server.url, "coingecko": server.url},
        fred_api_key="fred-test-key-0123456789",
        today=today.isoformat(),
        max_attempts=1,
        timeout_s=5,
    )


def materialize_range(kpis, server, tmp_path, instance, first: date, last: date):
    return dg.materialize(
        [build_kpi_assets(kpis=kpis)],
        instance=instance,
        resources={
            "sources": sources_for(server),
            "storage": StorageResource(local_dir=str(tmp_path)),
        },
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def test_a_fred_backfill_over_weekends_and_a_holiday_is_green(fred, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    last = TODAY - timedelta(days=1)
    result = materialize_range([YIELD], fred, tmp_path, instance, FIRST, last)
    assert result.success

    span = days(FIRST, last)
    weekend = [d for d in span if d.weekday() >= 5]
    stored = set(KpiSeriesStore(LocalObjectStore(tmp_path)).read("us_10y_yield")["date"])
    assert stored == {d for d in span if d.weekday() < 5 and d != THANKSGIVING}
    # The range is asked for at once (weekends inside it are not fetched days); the holiday
    # is inside what was asked, and FRED's '.' makes it a gap.
    windows = [(q["observation_start"], q["observation_end"]) for _, q in fred.requests]
    assert 1 <= len(windows) <= 2
    assert any(a <= THANKSGIVING.isoformat() <= b for a, b in windows)

    status = instance.get_status_by_partition(
        kpi_key("us_10y_yield"), [d.isoformat() for d in span], daily_partitions
    )
    assert dg.AssetPartitionStatus.FAILED not in set(status.values())
    gaps = {
        r.partition_key: r.asset_observation.metadata["reason"].value
        for r in instance.fetch_observations(kpi_key("us_10y_yield"), limit=100).records
    }
    assert set(gaps) == {d.isoformat() for d in [*weekend, THANKSGIVING]}
    assert all("weekend" in gaps[d.isoformat()] for d in weekend)
    day_status = read_fetch_status(LocalObjectStore(tmp_path), weekend[0])["us_10y_yield"]
    assert day_status["status"] == "gap" and "weekend" in day_status["reason"]

    # Every KPI-day of the range has its check, on its own partition, all green.
    evaluations = result.get_asset_check_evaluations()
    assert sorted(e.partition for e in evaluations) == [d.isoformat() for d in span]
    assert all(e.passed and e.check_name == CHECK_NAME for e in evaluations)

    # Monday's value is published two days late; then its 1-day change is against Friday,
    # in percentage points.
    monday = dg.materialize(
        [build_kpi_assets(kpis=[YIELD])],
        instance=instance,
        partition_key=TODAY.isoformat(),
        resources={
            "sources": sources_for(fred, today=TODAY + timedelta(days=YIELD.publication_lag_days)),
            "storage": StorageResource(local_dir=str(tmp_path)),
        },
    )
    assert monday.success
    [evaluation] = monday.get_asset_check_evaluations()
    assert evaluation.partition == TODAY.isoformat() and evaluation.passed
    assert evaluation.target_materialization_data is not None
    row = load_day_table([YIELD], LocalObjectStore(tmp_path), TODAY).row("us_10y_yield")
    friday = TODAY - timedelta(days=3)
    change = row.changes[1]
    assert change is not None and change.unit == "pp"
    assert change.value == pytest.approx(float(dgs10_value(TODAY)) - float(dgs10_value(friday)))


def test_past_days_a_source_cannot_give_are_gaps_without_a_request(fred, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    first, last = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    result = materialize_range([DOMINANCE], fred, tmp_path, instance, first, last)
    assert result.success
    assert fred.requests == []
    assert result.get_asset_materialization_events() == []
    reasons = [
        r.asset_observation.metadata["reason"].value
        for r in instance.fetch_observations(kpi_key("btc_dominance"), limit=10).records
    ]
    assert len(reasons) == 3 and all("no history" in reason for reason in reasons)
    assert all("CSV" not in reason for reason in reasons)


def test_a_day_not_yet_published_is_a_gap_without_a_request(fred, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_range([YIELD], fred, tmp_path, instance, TODAY, TODAY)
    assert result.success and fred.requests == []
    [record] = instance.fetch_observations(kpi_key("us_10y_yield"), limit=5).records
    reason = record.asset_observation.metadata["reason"].value
    assert reason == (
        "no observation yet: FRED publishes it 2 day(s) late; 2026-11-30 is fetched on 2026-12-02"
    )


def test_check_evaluations_are_recorded_on_the_instance_per_partition(fred, tmp_path):
    with dg.instance_for_test() as instance:
        first, last = TODAY - timedelta(days=5), TODAY - timedelta(days=2)
        result = materialize_range([YIELD], fred, tmp_path, instance, first, last)
        assert result.success
        records = instance.get_records_for_run(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        by_partition = {
            r.event_log_entry.dagster_event.event_specific_data.partition: r for r in records
        }
        assert sorted(by_partition) == [d.isoformat() for d in days(first, last)]
        saturday = (TODAY - timedelta(days=2)).isoformat()
        evaluation = by_partition[saturday].event_log_entry.dagster_event.event_specific_data
        assert evaluation.passed
        assert "expected gap" in evaluation.metadata["present"].value
        # A stored day's evaluation names the materialisation it checked, as the UI needs to
        # show the check as current for that partition.
        materialized = {
            r.partition_key: r.storage_id
            for r in instance.fetch_materializations(kpi_key("us_10y_yield"), limit=10).records
        }
        assert len(materialized) == 2  # Wednesday and Thursday; Friday is Thanksgiving
        for partition, storage_id in materialized.items():
            data = by_partition[partition].event_log_entry.dagster_event.event_specific_data
            assert data.target_materialization_data.storage_id == storage_id
