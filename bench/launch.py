"""Benchmark: the report run launched through a running `dagster dev` against the CLI's run.

The same day's report (charts, analysis, PDF, delivery to the outbox) on the same data, built
twice from the same starting point:
  cli  `daily_report_job.execute_in_process` (what `daily-index run` does), in its own process;
  ui   the GraphQL `launchRun` of a running `dagster dev` (what the UI's Launch button sends),
       with the repository's dagster.yaml in its DAGSTER_HOME: queued, dequeued by the daemon,
       started in a run worker, timed from the launch to SUCCESS.
The KPIs (the day and `--history` days before it) come from the bundled recordings, replayed
on 127.0.0.1; each side gets its own copy of the store and outbox, so neither finds the other's
report already delivered. Prints both times and the ratio (target: ui within 1.3x of cli).

Usage: python bench/launch.py [--history 30] [--port 3333]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

CLI_RUN = """
import json, sys, time
import dagster as dg
from daily_index.definitions import build_definitions
job = build_definitions().resolve_job_def("daily_report_job")
started = time.perf_counter()
result = job.execute_in_process(
    partition_key=sys.argv[1], instance=dg.DagsterInstance.get(), raise_on_error=False,
    tags={"trigger": "bench"},
)
print(json.dumps({"seconds": time.perf_counter() - started, "success": result.success}))
"""


def environment(server, folder: Path) -> dict[str, str]:
    from daily_index.cli import demo_environment
    from daily_index.replay import DEMO_DAY

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAILY_INDEX_", "DAGSTER_")) and k != "FRED_API_KEY"
    }
    env.update(demo_environment(server, folder, today=DEMO_DAY))
    home = folder / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # The README's `dagster dev`: the repository's instance settings in its DAGSTER_HOME.
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    return env


def side(env: dict[str, str], folder: Path, name: str) -> dict[str, str]:
    """A copy of the prepared store and outbox for one side."""
    store, outbox = folder / f"store-{name}", folder / f"outbox-{name}"
    shutil.copytree(folder / "store", store)
    if (folder / "outbox").exists():
        shutil.copytree(folder / "outbox", outbox)
    return {**env, "DAILY_INDEX_DATA_DIR": str(store), "DAILY_INDEX_OUTBOX_DIR": str(outbox)}


def wait_for_webserver(port: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("dagster dev exited before it answered")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):  # noqa: S310
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"dagster dev did not answer within {timeout_s:.0f} s")


def launch_through_ui(port: int, day: str, timeout_s: float = 900) -> tuple[float, str, str]:
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    deadline = time.monotonic() + 240
    while True:  # the code location may still be loading
        try:
            started = time.perf_counter()
            run_id = client.submit_job_execution(
                "daily_report_job",
                # What the UI's launchpad sends for a partition of the job.
                tags={"dagster/partition": day, "daily_index/report_day": day},
            )
            break
        except DagsterGraphQLClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return time.perf_counter() - started, status, run_id
        time.sleep(0.25)
    raise SystemExit(f"run {run_id} not finished within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=30, help="days of KPI history first")
    parser.add_argument("--port", type=int, default=3333)
    args = parser.parse_args()

    from daily_index.replay import DEMO_DAY, ReplayServer

    day = DEMO_DAY.isoformat()
    folder = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    with ReplayServer() as server:
        env = environment(server, folder)
        print(f"KPIs for {day} and {args.history} days before it (recorded, replayed) ...")
        subprocess.run(
            [str(BIN / "daily-index"), "run", "--date", day, "--history", str(args.history)]
            + ["--kpis-only", "--no-progress"],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            timeout=900,
        )
        ui_env = side(env, folder, "ui")
        cli_env = side(env, folder, "cli")
        dev = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-m", "daily_index.definitions", "-p", str(args.port)],
            cwd=ROOT,
            env=ui_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_webserver(args.port, dev)
            print("CLI: daily_report_job in process ...")
            wall = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CLI_RUN, day],
                cwd=ROOT,
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            wall = time.perf_counter() - wall
            cli = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  run {cli['seconds']:.1f} s (process with imports {wall:.1f} s)")
            print(f"  success: {cli['success']}")
            print("UI: launchRun through dagster dev, launch to SUCCESS ...")
            ui_seconds, status, run_id = launch_through_ui(args.port, day)
            print(f"  {ui_seconds:.1f} s, {status}")
        finally:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
    import dagster as dg

    os.environ["DAGSTER_HOME"] = ui_env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_record_by_id(run_id)
        in_run = record.end_time - record.start_time
    print(
        f"ui run worker, start to end: {in_run:.1f} s; queue, worker start and code load: "
        f"{ui_seconds - in_run:.1f} s"
    )
    print(
        f"report run, same day and data: ui {ui_seconds:.1f} s / cli {cli['seconds']:.1f} s = "
        f"{ui_seconds / cli['seconds']:.2f}x (target 1.30x; against the CLI process with its "
        f"imports: {ui_seconds / wall:.2f}x)"
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
