"""Smoke test: the Definitions load and every job resolves, under several environments."""

import subprocess
import sys

import dagster as dg
import pytest

from daily_index.definitions import build_definitions
from daily_index.defs.resources import ConfigurationError
from daily_index.registry import load_registry


def test_definitions_load_and_every_job_resolves():
    defs = build_definitions(environ={})
    for job in defs.resolve_all_job_defs():
        assert job.name
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    enabled = load_registry().enabled({})
    assert {f"kpi/{k.id}" for k in enabled} <= keys
    assert {"report/charts", "report/analysis", "report/pdf", "report/delivery"} <= keys
    assert "kpi/us_10y_yield" not in keys  # FRED KPIs stay off without a key
    assert defs.resolve_schedule_def("daily_kpis_schedule").cron_schedule == "0 12 * * *"
    assert defs.resolve_sensor_def("report_fanin_sensor")


def test_fred_kpis_appear_with_a_key_and_schedule_is_configurable():
    defs = build_definitions(
        environ={
            "FRED_API_KEY": "x",
            "DAILY_INDEX_SCHEDULE_CRON": "30 6 * * *",
            "DAILY_INDEX_SCHEDULE_TZ": "Europe/Paris",
        }
    )
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "kpi/us_10y_yield" in keys
    schedule = defs.resolve_schedule_def("daily_kpis_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 6 * * *", "Europe/Paris")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DAILY_INDEX_STORAGE": "r2"}, "DAILY_INDEX_S3_BUCKET"),
        ({"DAILY_INDEX_STORAGE": "ftp"}, "DAILY_INDEX_STORAGE"),
        ({"DAILY_INDEX_FETCH_CONCURRENCY": "many"}, "DAILY_INDEX_FETCH_CONCURRENCY"),
        ({"DAILY_INDEX_LLM_API_KEY": "sk-secret-value"}, "DAILY_INDEX_LLM_PROVIDER"),
        ({"DAILY_INDEX_SUBSCRIBERS_FILE": "/nonexistent.yaml"}, "DAILY_INDEX_SUBSCRIBERS_FILE"),
        ({"DAILY_INDEX_TODAY": "24/11/2026"}, "DAILY_INDEX_TODAY"),
    ],
)
def test_incomplete_configuration_names_the_setting(environ, named):
    with pytest.raises(ConfigurationError) as caught:
        build_definitions(environ=environ)
    assert named in str(caught.value)
    assert "sk-secret-value" not in str(caught.value)


def test_secrets_reach_resources_only_as_env_vars():
    env = {
        "DAILY_INDEX_STORAGE": "r2",
        "DAILY_INDEX_R2_ACCOUNT_ID": "acc",
        "DAILY_INDEX_S3_BUCKET": "b",
        "DAILY_INDEX_S3_ACCESS_KEY_ID": "AKIDVALUE",
        "DAILY_INDEX_S3_SECRET_ACCESS_KEY": "very-secret",
        "FRED_API_KEY": "fred-secret",
    }
    defs = build_definitions(environ=env)
    storage = defs.resources["storage"]
    assert isinstance(storage.secret_access_key, dg.EnvVar)
    assert storage.endpoint_url == "https://acc.r2.cloudflarestorage.com"
    assert "very-secret" not in repr(defs.resources) and "fred-secret" not in repr(defs.resources)


def test_dagster_validates_the_code_location_from_the_repo_root():
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_registry_file_comes_from_the_given_environment(tmp_path):
    registry = tmp_path / "kpis.yaml"
    registry.write_text(
        "version: 1\nkpis:\n  - id: only_one\n    name: Only\n    description: d\n"
        "    type: index\n    source: {kind: alternative_me_fng}\n"
        "    metadata: {source: x, category: c}\n"
    )
    defs = build_definitions(environ={"DAILY_INDEX_KPIS_FILE": str(registry)})
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {k for k in keys if k.startswith("kpi/")} == {"kpi/only_one"}


def test_the_schedule_requests_the_partition_of_the_day_it_runs_on():
    from datetime import UTC, datetime

    defs = build_definitions(environ={})
    schedule = defs.resolve_schedule_def("daily_kpis_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-11-24"
    assert request.run_key == "kpis-2026-11-24"


def test_the_schedule_leaves_out_kpis_without_an_observation_that_day():
    from datetime import UTC, datetime

    defs = build_definitions(environ={"FRED_API_KEY": "x"})
    schedule = defs.resolve_schedule_def("daily_kpis_schedule")

    def tick(day: int) -> dict[str, set[str] | None]:
        context = dg.build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, day, 12, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        return {
            r.partition_key: (
                None
                if r.asset_selection is None
                else {k.to_user_string() for k in r.asset_selection}
            )
            for r in schedule.evaluate_tick(context).run_requests
        }

    # Monday 30 Nov: the crypto KPIs for the day; FRED's 2-day-late series for Saturday the
    # 28th are not due (a weekend), DFF (every day) is; the dollar index (10 days late) for
    # Friday the 20th, with the BTC/dollar correlation derived from it (the same lag).
    monday = tick(30)
    assert set(monday) == {"2026-11-30", "2026-11-28", "2026-11-20"}
    assert "kpi/btc_price" in monday["2026-11-30"]
    assert not {"kpi/us_10y_yield", "kpi/fed_funds_rate"} & monday["2026-11-30"]
    assert monday["2026-11-28"] == {"kpi/fed_funds_rate"}
    assert monday["2026-11-20"] == {"kpi/us_dollar_index", "kpi/btc_dxy_correlation_30d"}
    # Wednesday 2 Dec: the yield for Monday the 30th.
    assert tick(30) == monday
    wednesday = {
        r.partition_key: {k.to_user_string() for k in r.asset_selection}
        for r in schedule.evaluate_tick(
            dg.build_schedule_context(
                scheduled_execution_time=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
                repository_def=defs.get_repository_def(),
            )
        ).run_requests
    }
    assert wednesday["2026-11-30"] == {"kpi/us_10y_yield", "kpi/fed_funds_rate"}
