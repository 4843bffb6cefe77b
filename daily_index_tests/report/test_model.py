"""The day table: typed changes, expected gaps, failures over earlier values, z-scores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from daily_index.formatting import format_change
from daily_index.registry import KpiSpec
from daily_index.report.model import DayTable, Observation, build_row, load_day_table, move_zscore
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow, record_fetch_status

MONDAY = date(2026, 11, 30)
FRIDAY = date(2026, 11, 27)


def spec(kpi_id: str, kind: str, unit: str, **extra) -> KpiSpec:
    return KpiSpec.model_validate(
        {
            "id": kpi_id,
            "name": kpi_id.replace("_", " "),
            "description": "test KPI",
            "type": kind,
            "unit": unit,
            "source": {"kind": "n8n"},
            "metadata": {"source": "test", "category": "test"},
            **extra,
        }
    )


def frame(points: dict[date, float]) -> pd.DataFrame:
    return pd.DataFrame({"date": list(points), "value": list(points.values())})


def daily(values: list[float], end: date = MONDAY) -> pd.DataFrame:
    return frame({end - timedelta(days=len(values) - 1 - i): v for i, v in enumerate(values)})


@pytest.mark.parametrize(
    ("kpi", "before", "now", "text"),
    [
        (spec("btc_price", "price", "USD"), 100_000.0, 102_400.0, "+2.4%"),
        (spec("btc_dominance", "dominance", "%"), 54.35, 54.0, "-0.35 pp"),
        (spec("us_10y_yield", "yield", "%"), 4.30, 4.42, "+0.12 pp"),
        (spec("btc_funding", "rate", "%", changeUnit="bp"), 0.0100, 0.0112, "+0.12 bp"),
        (spec("funding_big", "rate", "%", changeUnit="bp"), 0.01, 0.13, "+12 bp"),
        (spec("fear_greed", "index", "points"), 74.0, 77.0, "+3 pts"),
        (spec("eth_btc", "ratio", "BTC"), 0.05, 0.051, "+2.0%"),
    ],
)
def test_changes_are_in_the_kpis_unit(kpi, before, now, text):
    row = build_row(kpi, daily([before, now]), MONDAY)
    assert row.status == "ok"
    assert row.changes[1].unit == kpi.change_unit
    assert format_change(row.changes[1]) == text
    assert row.changes[7] is None


def test_a_business_day_series_on_monday_changes_against_friday():
    yield_spec = spec("us_10y_yield", "yield", "%", calendar="business_days")
    history = frame({FRIDAY - timedelta(days=7): 4.0, FRIDAY: 4.30, MONDAY: 4.25})
    row = build_row(yield_spec, history, MONDAY)
    assert row.changes[1].unit == "pp"
    assert row.changes[1].value == pytest.approx(-0.05)
    assert format_change(row.changes[1]) == "-0.05 pp"
    # 7 days back is a Monday without an observation: the Friday before it counts.
    assert format_change(row.changes[7]) == "+0.25 pp"


def test_a_weekend_day_of_a_business_day_series_is_a_gap_with_the_last_observation():
    yield_spec = spec("us_10y_yield", "yield", "%", calendar="business_days")
    saturday = FRIDAY + timedelta(days=1)
    row = build_row(yield_spec, frame({FRIDAY: 4.30}), saturday)
    assert row.status == "gap" and not row.is_problem
    assert row.value is None
    assert row.reason.startswith("no observation expected: weekend")
    assert row.as_of == Observation(FRIDAY, 4.30)
    assert all(c is None for c in row.changes.values())


def test_a_recorded_gap_is_a_gap_and_counts_nowhere_as_missing():
    kpi = spec("total_market_cap", "market_cap", "USD")
    gap = build_row(
        kpi,
        daily([1.0, 2.0], end=MONDAY - timedelta(days=1)),
        MONDAY,
        "no observation available: CoinGecko's keyless /global has no history",
        fetch="gap",
    )
    failed = build_row(spec("x", "price", "USD"), daily([1.0], end=FRIDAY), MONDAY, "HTTP 500")
    missing = build_row(spec("y", "price", "USD"), daily([1.0], end=FRIDAY), MONDAY)
    table = DayTable(day=MONDAY, rows=(gap, failed, missing), window_days=90)
    assert gap.status == "gap" and gap.reason.startswith("no observation available")
    assert [r.kpi_id for r in table.missing] == ["x", "y"]
    assert [r.kpi_id for r in table.problems] == ["x", "y"]
    assert [r.kpi_id for r in table.gaps] == ["total_market_cap"]
    assert not table.complete
    assert DayTable(day=MONDAY, rows=(gap,), window_days=90).complete


def test_a_failed_refetch_over_a_stored_value_is_a_failure_that_keeps_the_value():
    kpi = spec("btc_price", "price", "USD")
    row = build_row(kpi, daily([100.0, 101.0]), MONDAY, "HTTP 503", fetch="failed")
    assert row.status == "failed" and row.is_problem and row.earlier_fetch
    assert row.value == 101.0 and row.reason == "HTTP 503"
    table = DayTable(day=MONDAY, rows=(row,), window_days=90)
    assert table.complete  # the day's value is there ...
    assert table.problems == [row]  # ... but the failure is counted


def test_build_day_table_reads_the_status_file(tmp_path):
    store = LocalObjectStore(tmp_path)
    series = KpiSeriesStore(store)
    yield_spec = spec("us_10y_yield", "yield", "%", calendar="business_days")
    btc = spec("btc_price", "price", "USD")

    def rows(points):
        return [SeriesRow(d, v, None, "t", datetime.now(UTC), "t") for d, v in points.items()]

    series.upsert("us_10y_yield", rows({FRIDAY: 4.30}))
    series.upsert("btc_price", rows({MONDAY - timedelta(days=1): 90.0, MONDAY: 99.0}))
    saturday = FRIDAY + timedelta(days=1)
    record_fetch_status(store, MONDAY, {"btc_price": {"status": "failed", "reason": "HTTP 500"}})
    monday = load_day_table([yield_spec, btc], store, MONDAY)
    assert monday.row("us_10y_yield").status == "missing"
    assert monday.row("btc_price").status == "failed" and monday.row("btc_price").earlier_fetch
    weekend = load_day_table([yield_spec], store, saturday)
    assert weekend.row("us_10y_yield").status == "gap"
    assert weekend.row("us_10y_yield").as_of == Observation(FRIDAY, 4.30)


def test_move_zscore_measures_the_day_against_its_own_volatility():
    rng = np.random.default_rng(3)
    calm = 100 * np.cumprod(1 + rng.normal(0, 0.001, 60))
    assert move_zscore(np.append(calm, calm[-1] * 1.01), "pct") > 5
    assert abs(move_zscore(np.append(calm, calm[-1] * 1.0005), "pct")) < 1.5
    assert move_zscore(calm[:11], "pct") is None  # fewer than 10 earlier changes
    assert move_zscore(np.full(30, 5.0), "pp") == 0.0
    assert move_zscore(np.append(np.full(30, 5.0), 6.0), "pp") is None


def test_zscore_is_on_the_row_only_with_the_days_value():
    rng = np.random.default_rng(4)
    values = list(100 + np.cumsum(rng.normal(0, 1, 40)))
    kpi = spec("fear_greed", "index", "points")
    assert build_row(kpi, daily(values), MONDAY).zscore is not None
    assert build_row(kpi, daily(values, end=FRIDAY), MONDAY).zscore is None


def test_rows_carry_the_quality_check_of_the_day():
    kpi = spec("btc_price", "price", "USD")
    stale = build_row(kpi, daily([100.0, 101.0, 99.0, 99.0, 99.0]), MONDAY)
    assert [v.rule for v in stale.check_findings] == ["stale"]
    moving = build_row(kpi, daily([100.0, 101.0, 99.0, 98.0, 99.5]), MONDAY)
    assert moving.check is not None and moving.check.passed and moving.check_findings == []
    gap = build_row(kpi, daily([1.0], end=FRIDAY), MONDAY, "no observation", fetch="gap")
    assert gap.check.passed  # an expected gap passes `present`
    failed = build_row(kpi, daily([1.0], end=FRIDAY), MONDAY, "HTTP 500")
    assert not failed.check.passed and failed.check_findings == []  # the status says it


def test_the_day_table_round_trips_through_json():
    import json

    from daily_index.report.model import day_table_from_dict, day_table_to_dict
    from daily_index_tests.report.conftest import make_table

    table = make_table(
        missing={"eth_price": "HTTP 503"},
        gap={"us10y": "no observation expected: weekend"},
        refetch_failed={"btc_price": "HTTP 429"},
        stale=("dxy",),
    )
    data = json.loads(json.dumps(day_table_to_dict(table)))
    back = day_table_from_dict(data, [row.spec for row in table.rows])
    assert back == table  # rows compare without their chart history
    assert back.row("dxy").check_findings == table.row("dxy").check_findings
    with pytest.raises(KeyError):
        day_table_from_dict(data, [*[row.spec for row in table.rows], spec("new", "price", "USD")])


def test_analysis_and_pdf_read_the_table_the_charts_stored(tmp_path):
    import json

    import dagster as dg

    from daily_index.defs.charts import day_table_key, stored_day_table
    from daily_index.report.model import day_table_to_dict
    from daily_index_tests.report.conftest import DAY, make_table

    store = LocalObjectStore(tmp_path)
    table = make_table(gap={"us10y": "no observation expected: weekend"})
    specs = [row.spec for row in table.rows]
    with pytest.raises(dg.Failure, match="materialise report/charts first"):
        stored_day_table(store, specs, DAY)
    store.put(day_table_key(DAY), json.dumps(day_table_to_dict(table)).encode())
    assert stored_day_table(store, specs, DAY) == table
    with pytest.raises(dg.Failure, match="built for other KPIs"):
        stored_day_table(store, [*specs, spec("new_kpi", "price", "USD")], DAY)


def test_the_smallest_step_of_a_rate_that_sits_still_is_not_unusual():
    from daily_index.report.model import move_zscore

    values = np.array([4.33] * 60 + [4.34] * 30 + [4.33] * 2 + [4.34])
    z = move_zscore(values, "pp")
    assert z is not None and abs(z) <= 1.0
