"""The instance settings (dagster.yaml) and the jobs' launch policy fit together."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from daily_index.definitions import build_definitions

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-24"


@pytest.fixture(scope="module")
def jobs() -> dict[str, dg.JobDefinition]:
    defs = build_definitions(environ={})
    return {name: defs.resolve_job_def(name) for name in ("daily_kpis_job", "daily_report_job")}


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The README's `dagster dev` instance: the repository's dagster.yaml in DAGSTER_HOME."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        yield instance


def run_tags(job: dg.JobDefinition) -> dict[str, str]:
    """The tags a run of the job for DAY carries, whichever way it is launched."""
    return {**job.run_tags, **job.partitioned_config.get_tags_for_partition_key(DAY)}


@pytest.mark.parametrize("name", ["daily_kpis_job", "daily_report_job"])
def test_jobs_run_in_process(jobs, name: str) -> None:
    # One step, or steps one after another: a process per step would only cost start-up time.
    assert jobs[name].executor_def is dg.in_process_executor


def test_every_report_run_carries_its_day(jobs) -> None:
    tags = run_tags(jobs["daily_report_job"])
    assert tags["daily_index/report_day"] == DAY
    assert tags["dagster/partition"] == DAY


def test_retries_per_job(jobs) -> None:
    assert jobs["daily_kpis_job"].run_tags["dagster/max_retries"] == "0"
    report = jobs["daily_report_job"].run_tags
    assert int(report["dagster/max_retries"]) >= 1
    assert report["dagster/retry_strategy"] == "FROM_FAILURE"


def test_every_job_has_a_max_runtime_short_of_the_first_kpi_retry(jobs) -> None:
    kpi_runtime = int(jobs["daily_kpis_job"].run_tags["dagster/max_runtime"])
    # The fan-in sensor's first retry is 15 min after the schedule by default.
    assert 0 < kpi_runtime < 15 * 60
    assert int(jobs["daily_report_job"].run_tags["dagster/max_runtime"]) > 0


def test_instance_settings_load_and_match_the_jobs(instance, jobs) -> None:
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_poll_interval_seconds <= 60
    assert instance.run_retries_enabled
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    by_key = {limit["key"]: limit for limit in limits}
    assert by_key["daily_index/report_day"] == {
        "key": "daily_index/report_day",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    }
    # Every limit is keyed on a tag some job's runs carry: a renamed tag would limit nothing.
    carried = {key for job in jobs.values() for key in run_tags(job)}
    assert set(by_key) <= carried


def test_telemetry_is_off(instance) -> None:
    assert instance.get_settings("telemetry") == {"enabled": False}
