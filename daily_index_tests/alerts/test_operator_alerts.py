"""Operator alerts on a real SQLite instance: a failed run and a failed asset check, once each."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pytest

from daily_index.defs.alerts import (
    build_check_failure_alert_sensor,
    build_run_failure_alert_sensor,
    changed_checks,
    first_lines,
)
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import AlertsResource, StorageResource
from daily_index_tests.alerts.conftest import SECRET, Receiver, ledger

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


@dg.op
def fetch_everything() -> None:
    raise RuntimeError("the KPI source answered 503\nSecond line\nThird line")


@dg.job
def broken_job() -> None:
    fetch_everything()


@dg.asset(key=["kpi", "btc_price"], partitions_def=daily_partitions)
def btc_price() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"value": 1.0})


@dg.asset_check(asset=btc_price, name="quality")
def quality() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="value 1.0 is below the KPI's minimum 1000",
        metadata={"minimum": 1000.0, "value": 1.0},
    )


def resources(tmp_path, receiver: Receiver | None = None) -> dict[str, object]:
    urls = f"json://ops:{SECRET}@127.0.0.1:{receiver.port}/ops" if receiver else None
    return {
        "alerts": AlertsResource(outbox_dir=str(tmp_path / "outbox"), operator_urls=urls),
        "storage": StorageResource(local_dir=str(tmp_path / "store")),
    }


def test_a_failed_run_alerts_the_operators_once(instance, tmp_path, receiver: Receiver) -> None:
    result = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    sensor = build_run_failure_alert_sensor(clock=lambda: NOW)
    for _ in range(2):  # the daemon's own cursor aside, a repeat must not send twice
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources=resources(tmp_path, receiver),
        ).for_run_failure()
        sensor(context)
    [(_, body)] = receiver.requests["/ops"]
    message = json.loads(body)
    run_id = result.run_id
    assert message["title"] == "Run failed: broken_job"
    assert f"Run {run_id} of job broken_job failed." in message["message"]
    assert "the KPI source answered 503" in message["message"]
    assert f"http://127.0.0.1:3000/runs/{run_id}" in message["message"]
    store = StorageResource(local_dir=str(tmp_path / "store")).get_store()
    [entry] = ledger(store, operators=True).values()
    assert entry["channels"]["operators:1"]["status"] == "sent"
    assert SECRET not in json.dumps(entry)


def test_a_failed_check_alerts_the_operators_once(instance, tmp_path) -> None:
    result = dg.materialize([btc_price, quality], instance=instance, partition_key="2026-11-20")
    assert result.success  # a failed WARN check does not fail the run: hence this sensor
    sensor = build_check_failure_alert_sensor(
        check_keys=[dg.AssetCheckKey(dg.AssetKey(["kpi", "btc_price"]), "quality")],
        clock=lambda: datetime.now(UTC),
    )
    cursor = None
    outbox = tmp_path / "outbox" / "operators"
    for reset in (False, False, True):
        context = dg.build_sensor_context(
            instance=instance, cursor=None if reset else cursor, resources=resources(tmp_path)
        )
        tick = sensor(context)
        cursor = tick.cursor
    [path] = sorted(outbox.glob("*.json"))
    message = json.loads(path.read_text())
    assert message["title"] == "Check failed (WARN): kpi/btc_price quality for 2026-11-20"
    assert "value 1.0 is below the KPI's minimum 1000" in message["body"]
    assert "minimum: 1000.0" in message["body"]
    assert f"/runs/{result.run_id}" in message["body"]
    # A second failing evaluation (a rerun) is a new alert.
    dg.materialize([btc_price, quality], instance=instance, partition_key="2026-11-20")
    sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(tmp_path)))
    assert len(list(outbox.glob("*.json"))) == 2


@pytest.mark.parametrize(
    ("seen", "latest", "changed"),
    [
        ({}, {"a": 1, "b": None}, ["a"]),
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["a"]),
    ],
)
def test_changed_checks(seen, latest, changed) -> None:
    assert changed_checks(seen, latest) == changed


def test_first_lines_cuts_long_errors() -> None:
    text = "\n".join(f"line {n}" for n in range(20))
    assert first_lines(text, 3) == "line 0\nline 1\nline 2"
    assert first_lines("x" * 1000, chars=10) == "x" * 9 + "…"
