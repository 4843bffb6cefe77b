"""Derived KPIs: formulas against hand-computed values, missing inputs, registry refusals.

And the KPI step computing them from the stored series after their inputs.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from daily_index import derived
from daily_index.cli import main
from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.defs.kpis import build_kpi_assets, kpi_key
from daily_index.defs.resources import KpiSourcesResource, StorageResource
from daily_index.registry import load_registry, parse_registry
from daily_index.replay import DEMO_DAY, ReplayServer
from daily_index.sources import FetchRequest
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow, read_fetch_status

MONDAY = date(2026, 11, 2)
BUNDLED = {k.id: k for k in load_registry().kpis}


def spec(kind: str = "index", calendar: str = "daily", **source) -> dict:
    """A registry entry; `source` gives a derived source's params."""
    entry = {
        "id": source.pop("id", "x"),
        "name": "X",
        "description": "A KPI of the tests.",
        "type": kind,
        "source": {"kind": "derived", "params": source}
        if source
        else {"kind": "coingecko_price", "params": {"coin": "bitcoin"}},
        "calendar": calendar,
        "metadata": {"source": "tests", "category": "tests"},
    }
    return entry


def registry(*entries: dict):
    return parse_registry(yaml.safe_dump({"version": 1, "kpis": list(entries)}), source="t.yaml")


def series(values: list[float], start: date = MONDAY, days: list[date] | None = None):
    days = days or [start + timedelta(days=i) for i in range(len(values))]
    return derived.Series.of(dict(zip(days, values, strict=True)))


def kpis(*entries: dict) -> dict:
    return {k.id: k for k in registry(*entries).kpis}


# --- the formulas, by hand ----------------------------------------------------------------


def test_volatility_is_the_annualised_sample_std_of_log_returns_in_percent():
    specs = kpis(spec("price", id="p"), spec("rate", id="v", op="volatility", input="p", window=3))
    # Values 1, e, 1, e: log returns +1, -1, +1; mean 1/3; squared deviations 4/9, 16/9, 4/9;
    # over n - 1 = 2: 4/3. Daily calendar: x sqrt(365), in percent.
    history = series([1.0, math.e, 1.0, math.e])
    day = MONDAY + timedelta(days=3)
    value = derived.value_on(specs["v"].derived, day, [(specs["p"], history)])
    assert value == pytest.approx(math.sqrt(4 / 3) * math.sqrt(365) * 100)
    # One more observation slides the window: returns -1, +1, 0 -> mean 0, squares 1, 1, 0.
    longer = series([1.0, math.e, 1.0, math.e, math.e])
    value = derived.value_on(specs["v"].derived, day + timedelta(days=1), [(specs["p"], longer)])
    assert value == pytest.approx(math.sqrt(1.0) * math.sqrt(365) * 100)


def test_volatility_of_a_business_day_series_annualises_with_252():
    specs = kpis(
        spec("price", "business_days", id="p"),
        spec("rate", id="v", op="volatility", input="p", window=3),
    )
    # Thursday, Friday, Monday, Tuesday: four observations, three returns (+1, -1, +1).
    days = [date(2026, 11, 5), date(2026, 11, 6), date(2026, 11, 9), date(2026, 11, 10)]
    history = series([1.0, math.e, 1.0, math.e], days=days)
    value = derived.value_on(specs["v"].derived, days[-1], [(specs["p"], history)])
    assert value == pytest.approx(math.sqrt(4 / 3) * math.sqrt(252) * 100)


def test_drawdown_is_against_the_high_of_the_window_in_calendar_days():
    specs = kpis(spec("price", id="p"), spec("rate", id="d", op="drawdown", input="p", window=3))
    history = series([50, 80, 100, 90, 75, 60])
    params, inputs = specs["d"].derived, [(specs["p"], history)]
    day = [MONDAY + timedelta(days=i) for i in range(6)]
    assert derived.value_on(params, day[2], inputs) == pytest.approx(0.0)  # a new high
    assert derived.value_on(params, day[4], inputs) == pytest.approx(-25.0)  # 75 / 100 - 1
    # Day 6's window is days 4-6: the 100 of day 3 has left it, the high is 90.
    assert derived.value_on(params, day[5], inputs) == pytest.approx(60 / 90 * 100 - 100)
    with pytest.raises(derived.NotComputed) as caught:
        derived.value_on(params, day[1], inputs)
    assert caught.value.code == "no_history"
    assert "3 days of kpi/p needed, 2 stored" in caught.value.reason


def test_correlation_of_differences_and_of_percent_returns():
    specs = kpis(
        spec("index", id="a"),
        spec("index", id="b"),
        spec("price", id="p"),
        spec("price", id="q"),
        spec("price", id="r"),
        spec("index", id="c", op="correlation", inputs=["a", "b"], window=3),
    )
    params = specs["c"].derived
    day = MONDAY + timedelta(days=3)
    # Index points: differences a 1, 2, 3 and b 1, 0, 2; deviations (-1, 0, 1) and (0, -1, 1);
    # covariance 1 over variances 2 and 2: 0.5.
    a, b = series([10, 11, 13, 16]), series([5, 6, 6, 8])
    assert derived.value_on(params, day, [(specs["a"], a), (specs["b"], b)]) == pytest.approx(0.5)
    # Prices: percent returns +10 %, -10 %, +10 % against the same (1) and the mirror (-1).
    p = series([100, 110, 99, 108.9])
    q = series([50, 55, 49.5, 54.45])
    r = series([100, 90, 99, 89.1])
    assert derived.value_on(params, day, [(specs["p"], p), (specs["q"], q)]) == pytest.approx(1.0)
    assert derived.value_on(params, day, [(specs["p"], p), (specs["r"], r)]) == pytest.approx(-1.0)


def test_correlation_uses_only_the_days_both_inputs_have():
    specs = kpis(
        spec("index", id="a"),
        spec("index", "business_days", id="b"),
        spec("index", id="c", op="correlation", inputs=["a", "b"], window=3),
    )
    thursday, friday = date(2026, 11, 5), date(2026, 11, 6)
    monday, tuesday = date(2026, 11, 9), date(2026, 11, 10)
    # The weekend's 50 and 7 of `a` are no common days. Over Thursday, Friday, Monday and
    # Tuesday a moves +1, +1, +2 and b +1, +1, +0.5: b's move is 1.5 - a's / 2, so -1.
    a = series([9, 10, 50, 7, 11, 13], start=thursday)
    b = series([4, 5, 6, 6.5], days=[thursday, friday, monday, tuesday])
    value = derived.value_on(specs["c"].derived, tuesday, [(specs["a"], a), (specs["b"], b)])
    assert value == pytest.approx(-1.0)


def test_a_flat_input_has_no_correlation():
    specs = kpis(
        spec("index", id="a"),
        spec("index", id="b"),
        spec("index", id="c", op="correlation", inputs=["a", "b"], window=3),
    )
    day = MONDAY + timedelta(days=3)
    a, flat = series([1, 2, 4, 3]), series([5, 5, 5, 5])
    with pytest.raises(derived.NotComputed) as caught:
        derived.value_on(specs["c"].derived, day, [(specs["a"], a), (specs["b"], flat)])
    assert caught.value.code == "derived_undefined" and "kpi/b did not move" in caught.value.reason


def test_ratio_and_moving_average():
    specs = kpis(
        spec("price", id="a"),
        spec("price", id="b"),
        spec("ratio", id="r", op="ratio", inputs=["a", "b"]),
        spec("price", id="m", op="moving_average", input="a", window=3),
    )
    day = MONDAY + timedelta(days=3)
    a, b = series([1, 2, 3, 6]), series([1, 1, 1, 3])
    assert derived.value_on(specs["r"].derived, day, [(specs["a"], a), (specs["b"], b)]) == 2.0
    # The last three observations, the day included: (2 + 3 + 6) / 3.
    assert derived.value_on(specs["m"].derived, day, [(specs["a"], a)]) == pytest.approx(11 / 3)
    with pytest.raises(derived.NotComputed) as caught:
        derived.value_on(specs["m"].derived, MONDAY + timedelta(days=1), [(specs["a"], a)])
    assert caught.value.code == "no_history"
    zero = series([1, 1, 1, 0])
    with pytest.raises(derived.NotComputed) as caught:
        derived.value_on(specs["r"].derived, day, [(specs["a"], a), (specs["b"], zero)])
    assert caught.value.code == "derived_undefined" and "kpi/b is 0" in caught.value.reason


# --- missing inputs: a gap when expected, else a failure naming the input -------------------


def _request(kpi, day: date, today: date | None = None) -> FetchRequest:
    return FetchRequest(kpi, day, today or day, f"trace-{kpi.id}-{day}", f"{day}T12:00:00Z")


MISSING = kpis(
    spec("index", id="a"),
    spec("index", "business_days", id="b"),
    spec("ratio", id="r", op="ratio", inputs=["a", "b"]),
    spec("index", id="m", op="moving_average", input="r", window=2),
)


def _compute(requests, stored, status=None):
    return derived.compute_outcomes(
        requests,
        specs=MISSING,
        read=lambda kpi_id: stored.get(kpi_id, {}),
        status_of=lambda kpi_id, day: (status or {}).get((kpi_id, day)),
    )


def test_an_input_outside_its_calendar_makes_a_gap():
    saturday = date(2026, 11, 7)
    stored = {"a": {saturday: 4.0}, "b": {}}
    [outcome] = _compute([_request(MISSING["r"], saturday)], stored)
    assert isinstance(outcome.update, KPIErrorUpdate)
    assert outcome.update.error_code == "no_observation"  # an expected gap, not red
    assert "input kpi/b" in outcome.update.error and "weekend" in outcome.update.error


def test_a_failed_input_fails_naming_it_and_a_missing_one_too():
    stored = {"a": {MONDAY: 4.0}, "b": {}}
    failed = {("b", MONDAY): ("failed", "FRED answered 500")}
    [outcome] = _compute([_request(MISSING["r"], MONDAY)], stored, failed)
    assert outcome.update.error_code == "input_failed"
    assert outcome.update.error == f"input kpi/b failed for {MONDAY}: FRED answered 500"
    [outcome] = _compute([_request(MISSING["r"], MONDAY)], stored)
    assert outcome.update.error_code == "input_missing"
    assert "input kpi/b has no value" in outcome.update.error


def test_a_derived_input_computed_in_the_same_call_comes_first():
    tuesday = MONDAY + timedelta(days=1)
    stored = {"a": {MONDAY: 4.0, tuesday: 9.0}, "b": {MONDAY: 2.0, tuesday: 3.0}, "r": {}}
    # Asked for in the wrong order: the moving average of r needs r of both days first.
    requests = [
        _request(MISSING["m"], tuesday),
        _request(MISSING["r"], tuesday),
        _request(MISSING["r"], MONDAY),
    ]
    m, r_tuesday, r_monday = _compute(requests, stored)
    assert isinstance(r_monday.update, KPIDataUpdate) and r_monday.update.value == 2.0
    assert r_tuesday.update.value == 3.0
    assert m.update.value == pytest.approx(2.5)
    assert m.update.metadata == {"op": "moving_average", "inputs": ["r"], "window": 2}
    # Without b on Wednesday r has none, and m says which input it lacked.
    wednesday = tuesday + timedelta(days=1)
    stored["a"][wednesday] = 1.0
    r_wed, m_wed = _compute(
        [_request(MISSING["r"], wednesday), _request(MISSING["m"], wednesday)], stored
    )
    assert r_wed.update.error_code == "input_missing"
    assert m_wed.update.error_code == "input_failed" and "input kpi/r failed" in m_wed.update.error


# --- the registry refuses what cannot be computed -------------------------------------------


@pytest.mark.parametrize(
    ("entry", "kpi_id", "field", "words"),
    [
        pytest.param(
            spec(id="v", op="volatility", input="nope"),
            "v",
            "source.params.input",
            "unknown KPI 'nope'",
            id="unknown-input",
        ),
        pytest.param(
            spec(id="v", op="volatility", input="base", window=1),
            "v",
            "source.params.window",
            "from 2 to",
            id="bad-window",
        ),
        pytest.param(
            spec(id="v", op="volatility", input="base", window="30"),
            "v",
            "source.params.window",
            "whole number",
            id="window-not-a-number",
        ),
        pytest.param(
            spec(id="v", op="vol", input="base"),
            "v",
            "source.params.op",
            "unknown op 'vol'",
            id="unknown-op",
        ),
        pytest.param(
            spec(id="v", op="ratio", inputs=["base"]),
            "v",
            "source.params.inputs",
            "a list of 2 KPI ids",
            id="ratio-needs-two",
        ),
        pytest.param(
            spec(id="v", op="ratio", inputs=["base", "other"], window=3),
            "v",
            "source.params.window",
            "takes no window",
            id="ratio-no-window",
        ),
        pytest.param(
            spec(id="v", op="moving_average", input="v"),
            "v",
            "source.params.input",
            "cannot derive from itself",
            id="self",
        ),
        pytest.param(
            {**spec(id="v", op="moving_average", input="lagged"), "publicationLagDays": 1},
            "v",
            "publicationLagDays",
            "at least 10",
            id="lag",
        ),
    ],
)
def test_kpis_validate_refuses_a_bad_derived_kpi(tmp_path, entry, kpi_id, field, words):
    base = spec("price", id="base")
    other = spec("price", id="other")
    lagged = {**spec("index", "business_days", id="lagged"), "publicationLagDays": 10}
    file = tmp_path / "kpis.yaml"
    file.write_text(yaml.safe_dump({"version": 1, "kpis": [base, other, lagged, entry]}))
    result = CliRunner().invoke(main, ["kpis", "validate", str(file)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert str(file) in message and f"KPI {kpi_id!r}, field {field!r}" in message, message
    assert words in message, message


def test_kpis_validate_names_a_cycle(tmp_path):
    entries = [
        spec("price", id="base"),
        spec(id="a", op="ratio", inputs=["base", "c"]),
        spec(id="b", op="moving_average", input="a", window=3),
        spec(id="c", op="moving_average", input="b", window=3),
    ]
    file = tmp_path / "kpis.yaml"
    file.write_text(yaml.safe_dump({"version": 1, "kpis": entries}))
    result = CliRunner().invoke(main, ["kpis", "validate", str(file)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "KPI 'a', field 'source.params.inputs': derived KPIs form a cycle: a -> c -> b -> a" in (
        message
    ), message


def test_a_derived_kpi_is_enabled_only_with_its_inputs():
    bundled = load_registry()
    assert "btc_dxy_correlation_30d" not in {k.id for k in bundled.enabled({})}
    assert "btc_volatility_30d" in {k.id for k in bundled.enabled({})}
    assert "btc_dxy_correlation_30d" in {k.id for k in bundled.enabled({"FRED_API_KEY": "k"})}
    assert BUNDLED["btc_dxy_correlation_30d"].derived.inputs == ("btc_price", "us_dollar_index")


# --- in the KPI step -------------------------------------------------------------------------

STEP = [
    BUNDLED["btc_price"],
    *registry(
        {**spec("price", id="btc_price"), "unit": "USD"},
        {**spec("price", id="btc_ma3", op="moving_average", input="btc_price", window=3)},
        {**spec("rate", id="btc_vol3", op="volatility", input="btc_price", window=3)},
    ).kpis[1:],
]


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
        today=DEMO_DAY.isoformat(),
        max_attempts=1,
        timeout_s=5,
    )


def _store_history(tmp_path, values: dict[date, float]) -> KpiSeriesStore:
    store = KpiSeriesStore(LocalObjectStore(tmp_path))
    now = datetime.now(UTC)
    store.upsert(
        "btc_price", [SeriesRow(d, v, "USD", "tests", now, "t") for d, v in values.items()]
    )
    return store


def _materialize(sources, tmp_path, day: date, keys):
    return dg.materialize(
        [build_kpi_assets(kpis=STEP)],
        partition_key=day.isoformat(),
        selection=keys,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"sources": sources, "storage": StorageResource(local_dir=str(tmp_path))},
        raise_on_error=False,
    )


def test_the_step_computes_derived_kpis_after_storing_their_input(sources, tmp_path):
    before = {
        DEMO_DAY - timedelta(days=n): v for n, v in ((3, 90000.0), (2, 92000.0), (1, 91000.0))
    }
    stored = _store_history(tmp_path, before)
    keys = [kpi_key("btc_price"), kpi_key("btc_ma3"), kpi_key("btc_vol3")]
    result = _materialize(sources, tmp_path, DEMO_DAY, keys)
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == set(keys)
    today = stored.value_on("btc_price", DEMO_DAY)  # fetched from the replay in this run
    assert today is not None and today not in before.values()
    window = [92000.0, 91000.0, today]
    assert stored.value_on("btc_ma3", DEMO_DAY) == pytest.approx(sum(window) / 3)
    returns = [math.log(b / a) for a, b in zip([90000.0, *window], window, strict=False)]
    mean = sum(returns) / 3
    sample_std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    assert stored.value_on("btc_vol3", DEMO_DAY) == pytest.approx(sample_std * math.sqrt(365) * 100)
    # Checked like any KPI, archived with the formula it came from, only for its own day.
    checks = {e.asset_key for e in result.get_asset_check_evaluations()}
    assert kpi_key("btc_vol3") in checks and kpi_key("btc_ma3") in checks
    raw = json.loads((tmp_path / "raw" / "btc_ma3" / f"{DEMO_DAY}.json").read_text())
    assert raw["metadata"] == {"op": "moving_average", "inputs": ["btc_price"], "window": 3}
    assert list(stored.read("btc_ma3")["date"]) == [DEMO_DAY]


def test_a_derived_kpi_has_its_inputs_upstream_in_the_asset_graph():
    deps = build_kpi_assets(kpis=STEP).asset_deps
    assert deps[kpi_key("btc_vol3")] == {kpi_key("btc_price")}
    assert deps[kpi_key("btc_ma3")] == {kpi_key("btc_price")}
    assert deps[kpi_key("btc_price")] == set()


def test_a_derived_day_without_its_input_fails_naming_the_input(sources, tmp_path):
    day = DEMO_DAY - timedelta(days=10)
    _store_history(tmp_path, {day - timedelta(days=n): 90000.0 + n for n in (1, 2, 3)})
    result = _materialize(sources, tmp_path, day, [kpi_key("btc_ma3")])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"kpi/btc_ma3 {day}: input kpi/btc_price has no value for {day}" in (
        failure.step_failure_data.error.message
    )
    assert KpiSeriesStore(LocalObjectStore(tmp_path)).value_on("btc_ma3", day) is None
    status = read_fetch_status(LocalObjectStore(tmp_path), day)["btc_ma3"]
    assert status["status"] == "failed" and status["code"] == "input_missing"


def test_too_little_history_is_an_expected_gap_not_a_failure(sources, tmp_path):
    result = _materialize(sources, tmp_path, DEMO_DAY, [kpi_key("btc_price"), kpi_key("btc_vol3")])
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {
        kpi_key("btc_price")
    }
    status = read_fetch_status(LocalObjectStore(tmp_path), DEMO_DAY)["btc_vol3"]
    assert status["status"] == "gap" and "not enough history" in status["reason"]
