"""The report fan-in sensor against a real SQLite Dagster instance and a fake clock.

KPI partitions "land" through real materialisations (runless events or stand-in assets run
in process); launched runs are real runs on the instance, tagged the way the daemon tags
them, so the run-key deduplication is exercised end to end.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Self

import dagster as dg
import pytest

from daily_index.defs.automation import (
    MISSING_TAG,
    MISSING_TAG_MAX_CHARS,
    REPORT_SENSOR_NAME,
    REPORT_TAG,
    FaninSettings,
    build_report_fanin_sensor,
    daily_kpis_job,
    daily_report_job,
    fanin_settings_from_env,
)
from daily_index.defs.partitions import daily_partitions
from daily_index.registry import KpiSpec

DAY = "2024-05-10"
KEYS = [dg.AssetKey(["kpi", kpi_id]) for kpi_id in ("a", "b", "c")]
# 12:00 UTC, deadline +120 min, retries at +15, +30, +60 min; one day so tests look at DAY only.
SETTINGS = FaninSettings(lookback_days=1)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: str, hh_mm: str) -> Self:
        self.now = datetime.fromisoformat(f"{day}T{hh_mm}:00+00:00")
        return self


def stand_in_kpis(keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="kpis",
        specs=[dg.AssetSpec(key=k, skippable=True) for k in keys],
        partitions_def=daily_partitions,
        can_subset=True,
    )
    def kpis(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for key in sorted(context.selected_asset_keys):
            yield dg.MaterializeResult(asset_key=key, metadata={"value": 1.0})

    return kpis


@dg.asset(key=["report", "test"], partitions_def=daily_partitions, deps=KEYS)
def report_test(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Stand-in for the lead's report assets: records which kind of report ran."""
    return dg.MaterializeResult(metadata={"kind": context.run.tags.get(REPORT_TAG, "")})


class Harness:
    """One instance, one Definitions holding the sensor, a fake clock and the cursor."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        settings: FaninSettings = SETTINGS,
        keys: list[dg.AssetKey] = KEYS,
        specs: list[KpiSpec] | None = None,
    ) -> None:
        self.instance = instance
        self.clock = FakeClock(datetime(2024, 5, 10, 12, 0, tzinfo=UTC))
        self.sensor = build_report_fanin_sensor(
            kpi_keys=keys, settings=settings, clock=self.clock, specs=specs or ()
        )
        self.defs = dg.Definitions(
            assets=[stand_in_kpis(keys), report_test],
            jobs=[daily_kpis_job, daily_report_job],
            sensors=[self.sensor],
        )
        self.cursor: str | None = None

    def land(self, day: str, *kpi_ids: str) -> None:
        for kpi_id in kpi_ids:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey(["kpi", kpi_id]), partition=day)
            )

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs
        )
        result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        return result

    def restart(self) -> None:
        """A daemon restart that lost the cursor."""
        self.cursor = None

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Run a request the way the daemon would: same job, partition, selection, tags."""
        job = self.defs.resolve_job_def(request.job_name)
        tags = {
            **request.tags,
            "dagster/run_key": request.run_key,
            "dagster/sensor_name": REPORT_SENSOR_NAME,
        }
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
            tags=tags,
        )


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path)) as inst:
        yield inst


@pytest.fixture
def harness(instance) -> Harness:
    return Harness(instance)


def run_keys(result: dg.SensorResult) -> list[str]:
    return [r.run_key for r in result.run_requests or []]


def test_complete_day_launches_one_report_across_ticks_and_restarts(harness: Harness) -> None:
    harness.land(DAY, "a", "b", "c")
    harness.clock.at(DAY, "12:05")

    first = harness.tick()
    assert run_keys(first) == [f"report-{DAY}"]
    request = first.run_requests[0]
    assert request.job_name == "daily_report_job"
    assert request.partition_key == DAY
    assert request.tags[REPORT_TAG] == "complete"

    assert harness.tick().run_requests == []  # the cursor remembers

    harness.restart()
    # Nothing ran yet: re-emitting the same run key is right (the daemon would dedupe it).
    assert run_keys(harness.tick()) == [f"report-{DAY}"]

    run = harness.launch(request)
    assert run.success
    harness.restart()
    again = harness.tick()
    assert again.run_requests == []
    assert json.loads(again.cursor)["days"][DAY]["report"] == "complete"


def test_a_real_kpi_run_counts_as_landed(harness: Harness) -> None:
    job = harness.defs.resolve_job_def("daily_kpis_job")
    assert job.execute_in_process(instance=harness.instance, partition_key=DAY).success
    harness.clock.at(DAY, "12:01")
    assert run_keys(harness.tick()) == [f"report-{DAY}"]


def test_partial_report_at_the_deadline_lists_the_missing_kpi(harness: Harness) -> None:
    harness.land(DAY, "a", "b")
    harness.clock.at(DAY, "13:59")
    before = harness.tick()
    assert f"report-{DAY}" not in run_keys(before)

    harness.clock.at(DAY, "14:00")
    result = harness.tick()
    [request] = [r for r in result.run_requests if r.partition_key == DAY]
    assert request.run_key == f"report-{DAY}"
    assert request.job_name == "daily_report_job"
    assert request.tags[REPORT_TAG] == "partial"
    assert request.tags[MISSING_TAG] == "c"

    harness.clock.at(DAY, "15:00")
    assert DAY not in {r.partition_key for r in harness.tick().run_requests}

    # Even when c lands later, the day had its one report (no amendments by default).
    harness.land(DAY, "c")
    harness.clock.at(DAY, "16:00")
    assert harness.tick().run_requests == []


def test_no_report_for_a_day_where_nothing_landed(harness: Harness) -> None:
    harness.clock.at(DAY, "14:00")
    result = harness.tick()
    assert result.run_requests == []
    assert "no KPI landed" in result.skip_reason.skip_message
    harness.land(DAY, "a")  # too late: the day is closed
    assert harness.tick().run_requests == []


def retries_seen(harness: Harness, times: list[str]) -> dict[str, list[str]]:
    seen = {}
    for hh_mm in times:
        harness.clock.at(DAY, hh_mm)
        seen[hh_mm] = [k for k in run_keys(harness.tick()) if DAY in k]
    return seen


def test_missing_kpis_are_re_requested_with_backoff(instance) -> None:
    harness = Harness(instance)
    harness.land(DAY, "a")
    times = ["12:00", "12:14", "12:15", "12:20", "12:30", "12:59", "13:00", "13:30", "13:59"]
    seen = retries_seen(harness, times)
    assert seen == {
        "12:00": [],
        "12:14": [],
        "12:15": [f"kpis-retry-{DAY}-1"],
        "12:20": [],
        "12:30": [f"kpis-retry-{DAY}-2"],
        "12:59": [],
        "13:00": [f"kpis-retry-{DAY}-3"],
        "13:30": [],  # max_retries=3
        "13:59": [],
    }


def test_retry_request_targets_the_missing_kpis_and_lands_them(harness: Harness) -> None:
    harness.land(DAY, "a")
    harness.clock.at(DAY, "12:16")
    [request] = harness.tick().run_requests
    assert request.job_name == "daily_kpis_job"
    assert request.partition_key == DAY
    assert sorted(k.to_user_string() for k in request.asset_selection) == ["kpi/b", "kpi/c"]

    assert harness.launch(request).success
    harness.restart()
    harness.clock.at(DAY, "12:17")
    # The retry already ran (found on the instance); the KPIs have landed: report now.
    assert run_keys(harness.tick()) == [f"report-{DAY}"]


def test_late_sensor_jumps_to_the_latest_due_attempt(harness: Harness) -> None:
    harness.clock.at(DAY, "13:05")
    assert run_keys(harness.tick()) == [f"kpis-retry-{DAY}-3"]


@pytest.mark.parametrize(
    ("max_retries", "expected"),
    [(0, []), (1, ["12:15"]), (2, ["12:15", "12:30"])],
)
def test_retries_are_bounded(instance, max_retries: int, expected: list[str]) -> None:
    harness = Harness(instance, settings=replace(SETTINGS, max_retries=max_retries))
    seen = retries_seen(harness, ["12:15", "12:30", "13:00", "13:45"])
    assert [t for t, keys in seen.items() if keys] == expected


def test_no_retry_after_the_deadline(instance) -> None:
    # With a 20-minute deadline the 12:30 and 13:00 attempts would fall after it.
    harness = Harness(instance, settings=replace(SETTINGS, deadline_minutes=20))
    harness.land(DAY, "a")
    seen = retries_seen(harness, ["12:15", "12:19", "12:20"])
    assert seen == {
        "12:15": [f"kpis-retry-{DAY}-1"],
        "12:19": [],
        "12:20": [f"report-{DAY}"],
    }


@pytest.mark.parametrize("amend", [False, True])
def test_amended_report_after_a_partial_one(instance, amend: bool) -> None:
    harness = Harness(instance, settings=replace(SETTINGS, amend_after_partial=amend))
    harness.land(DAY, "a", "b")
    harness.clock.at(DAY, "14:00")
    [partial] = harness.tick().run_requests
    assert partial.tags[REPORT_TAG] == "partial"
    assert harness.launch(partial).success

    harness.clock.at(DAY, "14:30")
    assert harness.tick().run_requests == []  # c still missing

    harness.land(DAY, "c")
    harness.restart()  # the amendment must also survive a lost cursor
    harness.clock.at(DAY, "15:00")
    result = harness.tick()
    if not amend:
        assert result.run_requests == []
        return
    [amended] = result.run_requests
    assert amended.run_key == f"report-{DAY}-amended"
    assert amended.tags[REPORT_TAG] == "amended"
    assert amended.partition_key == DAY
    assert harness.tick().run_requests == []
    assert harness.launch(amended).success
    harness.restart()
    assert harness.tick().run_requests == []


def test_lookback_window(instance) -> None:
    harness = Harness(instance, settings=replace(SETTINGS, lookback_days=2))
    for day in ("2024-05-07", "2024-05-08", "2024-05-09", "2024-05-10"):
        harness.land(day, "a", "b", "c")
    harness.clock.at(DAY, "12:00")
    assert sorted(run_keys(harness.tick())) == ["report-2024-05-09", "report-2024-05-10"]
    assert sorted(json.loads(harness.cursor)["days"]) == ["2024-05-09", "2024-05-10"]


def test_today_waits_for_its_scheduled_time(instance) -> None:
    harness = Harness(instance, settings=replace(SETTINGS, lookback_days=1))
    harness.land(DAY, "a", "b", "c")
    harness.clock.at(DAY, "11:59")
    result = harness.tick()
    assert result.run_requests == []
    assert "scheduled time" in result.skip_reason.skip_message
    harness.clock.at(DAY, "12:00")
    assert run_keys(harness.tick()) == [f"report-{DAY}"]


def test_never_before_the_first_partition(harness: Harness) -> None:
    first_day = daily_partitions.get_first_partition_key()
    harness.land(first_day, "a", "b", "c")
    harness.clock.at(first_day, "13:00")
    assert run_keys(harness.tick()) == [f"report-{first_day}"]


def test_unreadable_cursor_falls_back_to_the_instance(harness: Harness) -> None:
    harness.land(DAY, "a", "b", "c")
    harness.clock.at(DAY, "12:05")
    [request] = [r for r in harness.tick().run_requests if r.partition_key == DAY]
    harness.launch(request)
    harness.cursor = "not json"
    assert DAY not in {r.partition_key for r in harness.tick().run_requests}


def test_sensor_definition(harness: Harness) -> None:
    sensor = harness.defs.resolve_sensor_def("report_fanin_sensor")
    assert sensor.minimum_interval_seconds == 60
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {job.name for job in sensor.jobs} == {"daily_report_job", "daily_kpis_job"}
    assert harness.defs.resolve_job_def("daily_report_job").partitions_def == daily_partitions


def test_a_kpi_landing_between_ticks_completes_the_day(harness: Harness) -> None:
    harness.land(DAY, "a", "b")
    harness.clock.at(DAY, "12:05")
    assert harness.tick().run_requests == []
    assert json.loads(harness.cursor)["days"][DAY]["missing"] == ["kpi/c"]
    harness.land(DAY, "c")
    harness.clock.at(DAY, "12:06")
    assert run_keys(harness.tick()) == [f"report-{DAY}"]


def test_a_new_kpi_invalidates_the_cached_missing_list(instance) -> None:
    before = Harness(instance)
    before.land(DAY, "a", "b", "c")
    before.clock.at(DAY, "12:00")
    before.tick()  # would cache "nothing missing" if the day stayed open
    before.land(DAY, "a")
    after = Harness(instance, keys=[*KEYS, dg.AssetKey(["kpi", "d"])])
    after.cursor = json.dumps({**json.loads(before.cursor), "days": {DAY: {"missing": []}}})
    after.clock.at(DAY, "12:05")
    result = after.tick()
    assert result.run_requests == []
    assert json.loads(after.cursor)["days"][DAY]["missing"] == ["kpi/d"]


def test_200_kpis_tick_is_fast_and_the_missing_tag_stays_short(instance) -> None:
    keys = [dg.AssetKey(["kpi", f"kpi_{n:03d}_with_a_long_name"]) for n in range(200)]
    harness = Harness(instance, settings=replace(SETTINGS, lookback_days=3), keys=keys)
    for key in keys[:120]:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=DAY))
    harness.clock.at(DAY, "12:05")

    timings = []
    for _ in range(2):
        started = time.perf_counter()
        harness.tick()
        timings.append(time.perf_counter() - started)
        harness.clock.now += timedelta(minutes=1)
    print(
        f"\n200 KPIs: first tick (3 open days, 200 keys asked) {timings[0] * 1000:.0f} ms; "
        f"next tick (1 open day, 80 missing asked) {timings[1] * 1000:.0f} ms"
    )
    assert len(json.loads(harness.cursor)["days"][DAY]["missing"]) == 80

    harness.clock.at(DAY, "14:00")
    [partial] = harness.tick().run_requests
    missing = partial.tags[MISSING_TAG]
    assert len(missing) <= MISSING_TAG_MAX_CHARS + 20
    assert missing.startswith("kpi_120_with_a_long_name,kpi_121")
    assert missing.endswith("more)")


ENV_CASES = {
    "DAILY_INDEX_REPORT_DEADLINE_MINUTES": ("90", "deadline_minutes", 90),
    "DAILY_INDEX_REPORT_LOOKBACK_DAYS": ("7", "lookback_days", 7),
    "DAILY_INDEX_KPI_RETRY_BASE_MINUTES": ("5", "retry_base_minutes", 5),
    "DAILY_INDEX_KPI_MAX_RETRIES": ("0", "max_retries", 0),
    "DAILY_INDEX_REPORT_AMEND": ("true", "amend_after_partial", True),
    "DAILY_INDEX_REPORT_SENSOR_INTERVAL_SECONDS": ("30", "minimum_interval_seconds", 30),
}


def test_settings_defaults_follow_the_schedule() -> None:
    assert fanin_settings_from_env({}) == FaninSettings()
    settings = fanin_settings_from_env(
        {"DAILY_INDEX_SCHEDULE_CRON": "30 6 * * *", "DAILY_INDEX_SCHEDULE_TZ": "Europe/Paris"}
    )
    assert (settings.schedule_hour, settings.schedule_minute) == (6, 30)
    assert settings.scheduled_at(datetime(2024, 5, 10).date()).utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("name", sorted(ENV_CASES))
def test_settings_from_env(name: str) -> None:
    raw, field, expected = ENV_CASES[name]
    assert getattr(fanin_settings_from_env({name: raw}), field) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DAILY_INDEX_REPORT_DEADLINE_MINUTES": "two hours"}, "whole number"),
        ({"DAILY_INDEX_REPORT_DEADLINE_MINUTES": "0"}, ">= 1"),
        ({"DAILY_INDEX_REPORT_LOOKBACK_DAYS": "-1"}, ">= 1"),
        ({"DAILY_INDEX_KPI_RETRY_BASE_MINUTES": "1.5"}, "whole number"),
        ({"DAILY_INDEX_KPI_MAX_RETRIES": "-2"}, ">= 0"),
        ({"DAILY_INDEX_REPORT_AMEND": "maybe"}, "true or false"),
        ({"DAILY_INDEX_SCHEDULE_CRON": "0 */6 * * *"}, "once-a-day cron"),
        ({"DAILY_INDEX_SCHEDULE_TZ": "Mars/Olympus"}, "timezone"),
    ],
)
def test_bad_settings_are_clear_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as error:
        fanin_settings_from_env(environ)
    assert message in str(error.value)
    bad_name = next(iter(environ))
    if "TZ" not in bad_name:
        assert bad_name in str(error.value)


def kpi_spec(kpi_id: str, calendar: str = "daily") -> KpiSpec:
    return KpiSpec.model_validate(
        {
            "id": kpi_id,
            "name": kpi_id.upper(),
            "description": "A test KPI.",
            "type": "yield",
            "unit": "%",
            "source": {"kind": "fred", "params": {"series_id": "X"}},
            "metadata": {"source": "test", "category": "macro"},
            "calendar": calendar,
        }
    )


def test_a_day_outside_a_kpis_calendar_does_not_hold_the_report(instance) -> None:
    saturday = "2024-05-11"
    specs = [kpi_spec("a"), kpi_spec("b"), kpi_spec("c", calendar="business_days")]
    harness = Harness(instance, specs=specs)
    harness.land(saturday, "a", "b")
    harness.clock.at(saturday, "12:05")
    result = harness.tick()
    assert run_keys(result) == [f"report-{saturday}"]
    assert result.run_requests[0].tags[REPORT_TAG] == "complete"


def observe(harness: Harness, day: str, kpi_id: str, status: str) -> None:
    harness.instance.report_runless_asset_event(
        dg.AssetObservation(
            dg.AssetKey(["kpi", kpi_id]),
            partition=day,
            metadata={"fetch_status": status, "reason": "FRED marks no value that day"},
        )
    )


def test_an_expected_gap_counts_as_landed_and_a_failure_does_not(harness: Harness) -> None:
    harness.land(DAY, "a", "b")
    observe(harness, DAY, "c", "failed")
    harness.clock.at(DAY, "12:05")
    assert f"report-{DAY}" not in run_keys(harness.tick())
    observe(harness, DAY, "c", "expected_gap")
    harness.clock.at(DAY, "12:06")
    assert run_keys(harness.tick()) == [f"report-{DAY}"]


def test_the_skip_reason_of_a_day_without_a_report_says_so(harness: Harness) -> None:
    harness.clock.at(DAY, "14:00")
    harness.tick()
    harness.clock.at(DAY, "14:05")
    reason = harness.tick().skip_reason.skip_message
    assert reason == f"{DAY}: no report (no KPI had landed by the deadline)"


def test_the_skip_reason_of_a_launched_day_names_it(harness: Harness) -> None:
    harness.land(DAY, "a", "b", "c")
    harness.clock.at(DAY, "12:05")
    assert run_keys(harness.tick()) == [f"report-{DAY}"]
    assert harness.tick().skip_reason.skip_message == f"{DAY}: report launched"


def test_a_day_where_only_gaps_landed_gets_no_report(instance) -> None:
    saturday = "2024-05-11"
    specs = [kpi_spec("a"), kpi_spec("b"), kpi_spec("c", calendar="business_days")]
    harness = Harness(instance, specs=specs)
    harness.clock.at(saturday, "13:00")
    harness.tick()
    observe(harness, saturday, "b", "expected_gap")  # a holiday, say
    harness.clock.at(saturday, "13:30")
    harness.tick()
    harness.clock.at(saturday, "14:00")
    result = harness.tick()
    assert result.run_requests == []
    assert "no KPI landed" in result.skip_reason.skip_message
