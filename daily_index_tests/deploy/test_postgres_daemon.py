"""The production instance settings on the real PostgreSQL, with `dagster-daemon` running.

A fresh database per test run (dropped at the end), the repository's own dagster.yaml plus
deploy/storage-postgres.yaml (what the containers use), the repository's workspace.yaml, and
the APIs replayed by a local server. A KPI run is queued as the UI queues one; the daemon
launches it, the fan-in sensor launches the report, delivery writes to the local outbox, and
everything is recorded in PostgreSQL. A KPI run killed with SIGKILL is marked failed by run
monitoring. A second daemon start duplicates nothing.

Skipped only when PostgreSQL does not answer on 127.0.0.1:5432 (`.ci/run` starts it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from daily_index.cli import demo_environment
from daily_index.replay import DEMO_DAY, ReplayServer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
DAY = DEMO_DAY.isoformat()


def _admin_connection():
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped (connections and all) at the end."""
    try:
        admin = _admin_connection()
    except Exception as exc:
        pytest.skip(f"PostgreSQL unreachable on {PG['host']}:{PG['port']}: {exc}")
    name = f"daily_index_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _production_home(folder: Path) -> Path:
    """A DAGSTER_HOME holding exactly what the Dockerfile builds: dagster.yaml + storage."""
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (REPO / "dagster.yaml").read_text() + (REPO / "deploy/storage-postgres.yaml").read_text()
    )
    return home


def _environment(server: ReplayServer, folder: Path, database: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAILY_INDEX_", "DAGSTER_")) and k != "FRED_API_KEY"
    }
    env.update(demo_environment(server, folder, today=DEMO_DAY))
    now = datetime.now(UTC)
    env.update(
        {
            "DAGSTER_HOME": str(_production_home(folder)),
            "DAGSTER_PG_HOST": PG["host"],
            "DAGSTER_PG_PORT": str(PG["port"]),
            "DAGSTER_PG_USER": PG["user"],
            "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it",
            "DAGSTER_PG_DB": database,
            # The recorded day lies in the past: the sensor looks back far enough to see it, its
            # deadline is a day away (a deadline passed with no KPI landed settles the day with
            # no report), and no day gets KPI retries (the other days of the window stay idle).
            "DAILY_INDEX_REPORT_LOOKBACK_DAYS": str((now.date() - DEMO_DAY).days + 1),
            "DAILY_INDEX_REPORT_DEADLINE_MINUTES": str(
                int((now - datetime.combine(DEMO_DAY, datetime.min.time(), UTC)).total_seconds())
                // 60
                + 24 * 60
            ),
            "DAILY_INDEX_KPI_MAX_RETRIES": "0",
            "DAILY_INDEX_REPORT_SENSOR_INTERVAL_SECONDS": "5",
            # The daily schedule well away from now: no schedule run joins in during the test.
            "DAILY_INDEX_SCHEDULE_CRON": f"0 {(now + timedelta(hours=12)).hour} * * *",
        }
    )
    return env


class Daemon:
    """`dagster-daemon run` in its own process group, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the daemon and what it started (code server, run workers), then KILL."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # children that outlived the daemon
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._out.close()


def _wait(what: str, condition: Callable[[], object], timeout_s: float, daemon: Daemon):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if daemon.proc.poll() is not None:
            break
        time.sleep(2)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s\n--- daemon ---\n{daemon.output()[-4000:]}")


KILLED_RUN = """
import sys
import dagster as dg
from daily_index.definitions import build_definitions
build_definitions().resolve_job_def("daily_kpis_job").execute_in_process(
    partition_key=sys.argv[1], instance=dg.DagsterInstance.get(),
    tags={"dagster/max_runtime": "5"}, raise_on_error=False,
)
"""


def _kill_a_kpi_run(env: dict[str, str], day: str, instance: dg.DagsterInstance) -> str:
    """A KPI run SIGKILLed while it fetches (its APIs answer slowly): it stays STARTED."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, day], cwd=REPO, env=env)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            started = instance.get_run_records(
                dg.RunsFilter(
                    job_name="daily_kpis_job",
                    tags={"dagster/partition": day},
                    statuses=[dg.DagsterRunStatus.STARTED],
                )
            )
            if started:
                time.sleep(1)
                proc.kill()
                proc.wait(timeout=30)
                return started[0].dagster_run.run_id
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    pytest.fail(f"the KPI run to kill never started (exit code {proc.returncode})")


def _runs(instance: dg.DagsterInstance, job: str, day: str = DAY) -> list[dg.DagsterRun]:
    records = instance.get_run_records(dg.RunsFilter(job_name=job, tags={"dagster/partition": day}))
    return [r.dagster_run for r in records]


def _finished(runs: list[dg.DagsterRun]) -> bool:
    return bool(runs) and all(r.is_finished for r in runs)


@pytest.mark.timeout(600)
def test_daemon_on_postgres_runs_the_day_once(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    with ReplayServer() as server, ReplayServer(latency_s=60) as slow:
        env = _environment(server, tmp_path, database)
        for key, value in env.items():
            if key.startswith("DAGSTER_"):
                monkeypatch.setenv(key, value)
        instance = dg.DagsterInstance.get()
        # The day before, its run killed with SIGKILL: run monitoring must mark it failed.
        slow_env = {**env, **demo_environment(slow, tmp_path / "slow", today=DEMO_DAY)}
        slow_env.update({k: v for k, v in env.items() if k.startswith("DAGSTER_")})
        dead_day = (DEMO_DAY - timedelta(days=1)).isoformat()
        dead_run = _kill_a_kpi_run(slow_env, dead_day, instance)
        assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED
        daemon = Daemon(env, tmp_path / "daemon.log")
        try:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

            # Queued as the UI queues a run: the daemon's run queue starts it.
            launch = subprocess.run(
                [
                    str(BIN / "dagster"),
                    *("job", "launch", "-w", str(REPO / "workspace.yaml")),
                    *("-j", "daily_kpis_job", "--tags", json.dumps({"dagster/partition": DAY})),
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert launch.returncode == 0, launch.stdout + launch.stderr

            kpi_runs = _wait(
                "the KPI run finished",
                lambda: (runs := _runs(instance, "daily_kpis_job")) and _finished(runs) and runs,
                240,
                daemon,
            )
            report_runs = _wait(
                "the fan-in sensor's report run finished",
                lambda: (runs := _runs(instance, "daily_report_job")) and _finished(runs) and runs,
                300,
                daemon,
            )
            assert [r.status for r in kpi_runs] == [dg.DagsterRunStatus.SUCCESS]
            assert [r.status for r in report_runs] == [dg.DagsterRunStatus.SUCCESS], (
                daemon.output()[-4000:]
            )
            report = report_runs[0]
            assert report.tags["dagster/run_key"] == f"report-{DAY}"
            assert report.tags["daily_index/report_day"] == DAY
            assert report.tags["dagster/partition"] == DAY
            # In process: one run worker, no process per step.
            steps_in_subprocesses = instance.get_records_for_run(
                report.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED
            ).records
            assert steps_in_subprocesses == []

            delivered = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(["report", "delivery"]), asset_partitions=[DAY]
                ),
                limit=10,
            ).records
            assert len(delivered) == 1
            outbox = Path(env["DAILY_INDEX_OUTBOX_DIR"])
            assert any(p.suffix == ".pdf" for p in outbox.rglob("*")), list(outbox.rglob("*"))

            _wait(
                "the killed KPI run marked failed by run monitoring",
                lambda: instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE,
                150,
                daemon,
            )
        finally:
            daemon.stop()

        # A second start: the sensor ticks again on the same database and launches nothing.
        again = Daemon(env, tmp_path / "daemon2.log")
        try:
            _wait(
                "two ticks of the fan-in sensor after the restart",
                lambda: (
                    again.output().count("Checking for new runs for sensor: report_fanin_sensor")
                    >= 2
                ),
                180,
                again,
            )
            time.sleep(6)
            assert len(_runs(instance, "daily_kpis_job")) == 1
            assert len(_runs(instance, "daily_report_job")) == 1
            # The killed run's day: never retried whole (KPI runs), no report without its KPIs.
            assert len(_runs(instance, "daily_kpis_job", dead_day)) == 1
            assert _runs(instance, "daily_report_job", dead_day) == []
        finally:
            again.stop()
            instance.dispose()
