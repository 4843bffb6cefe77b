"""Benchmark: the report run launched through a running `dagster dev` against the CLI's run.

The same day's report (charts, analysis, PDF, delivery to the outbox) on the same data:
  cli  `daily_report_job.execute_in_process` (what `daily-index run` does), in its own process;
       timed inside the process (the run) and around it (the run plus Python's imports);
  ui   the GraphQL `launchRun` of a running `dagster dev` (what the UI's Launch button sends),
       with the instance settings under test in its DAGSTER_HOME: queued, dequeued by the
       daemon, started in a run worker by the code server, timed from the launch to the
       run's RUN_SUCCESS event (read from the event log, so polling adds nothing).
The KPIs (the day and `--history` days before it) come from the bundled recordings, replayed
on 127.0.0.1. Each instance settings file gets its own `dagster dev`, its own copy of the store
and outbox per side, and `--repeat` cli/ui pairs, each pair on its own day (so no side finds a
report already delivered), the cli first in the odd pairs and the ui first in the even ones.
The UI run's time is split with its own events:
  submit  the launch -> enqueued (the webserver's GraphQL mutation);
  queue   enqueued -> starting (the run coordinator's dequeue interval, the daemon's loop);
  worker  starting -> started (the code server spawns a run worker: Python, imports, the
          definitions);
  run     started -> success (the job itself, to compare with the cli's run).

Usage:
  python bench/launch.py [--history 30] [--repeat 2] [--settings FILE ...] [--same-home]
                         [--port 3333]
`--settings` defaults to the repository's dagster.yaml; give an older file first (e.g.
`git show HEAD~1:dagster.yaml > /tmp/before.yaml`) to measure before and after in one run.
Prints every pair, then each settings file's median ratios (target: ui within 1.3x of cli).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
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

# The run's status events, in the order a launched run goes through them (Dagster 1.13 writes
# no event when the daemon dequeues a run: the queue ends when the launch starts).
PHASES = [
    ("submit", None, "RUN_ENQUEUED"),
    ("queue", "RUN_ENQUEUED", "RUN_STARTING"),
    ("worker", "RUN_STARTING", "RUN_START"),
    ("run", "RUN_START", "RUN_SUCCESS"),
]


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
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    return env


def prepared(env: dict[str, str], folder: Path, name: str, settings: Path) -> dict[str, str]:
    """A copy of the prepared store, outbox and Dagster home, with `settings` as dagster.yaml.

    The README's `dagster dev`: the instance settings copied into its DAGSTER_HOME.
    """
    store, outbox, home = (folder / f"{part}-{name}" for part in ("store", "outbox", "home"))
    shutil.copytree(folder / "store", store)
    if (folder / "outbox").exists():
        shutil.copytree(folder / "outbox", outbox)
    shutil.copytree(folder / "dagster_home", home)
    shutil.copy(settings, home / "dagster.yaml")
    return {
        **env,
        "DAILY_INDEX_DATA_DIR": str(store),
        "DAILY_INDEX_OUTBOX_DIR": str(outbox),
        "DAGSTER_HOME": str(home),
    }


def wait_for_webserver(port: int, proc: subprocess.Popen, timeout_s: float = 300) -> None:
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


def launch_through_ui(port: int, day: str, timeout_s: float = 900) -> tuple[float, str]:
    """Launch the day's report as the UI does; (wall clock at launch, run id) once finished."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    deadline = time.monotonic() + 240
    while True:  # the code location may still be loading
        try:
            launched_at = time.time()
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
            return launched_at, run_id
        time.sleep(1)  # the end time comes from the event log: no need to poll fast
    raise SystemExit(f"run {run_id} not finished within {timeout_s:.0f} s")


def run_events(home: str, run_id: str) -> dict[str, float]:
    """The first timestamp of each run status event of the run."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = home
    with dg.DagsterInstance.get() as instance:
        stamps: dict[str, float] = {}
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is not None and event.event_type.name.startswith("RUN_"):
                stamps.setdefault(event.event_type.name, record.timestamp)
    return stamps


def cli_run(env: dict[str, str], day: str) -> dict[str, float]:
    wall = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CLI_RUN, day],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - wall
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"the CLI run printed no result:\n{out.stderr[-3000:]}") from None
    if not result["success"]:
        raise SystemExit(f"the CLI run of {day} failed:\n{out.stderr[-3000:]}")
    return {"run": result["seconds"], "process": wall}


def measure(
    settings: Path,
    env: dict[str, str],
    folder: Path,
    days: list[str],
    port: int,
    name: str,
    same_home: bool,
) -> list[dict[str, float]]:
    ui_env = prepared(env, folder, f"ui-{name}", settings)
    cli_env = prepared(env, folder, f"cli-{name}", settings)
    if same_home:
        # As the README has it: `daily-index run` records its runs in dagster dev's home, whose
        # SQLite files the daemon and the webserver read while either run writes.
        cli_env["DAGSTER_HOME"] = ui_env["DAGSTER_HOME"]
    log = (folder / f"dagster-dev-{name}.log").open("wb")
    dev = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-m", "daily_index.definitions"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=ui_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pairs = []
    try:
        wait_for_webserver(port, dev)
        for n, day in enumerate(days):
            # Alternating which side goes first: neither always gets the warmer caches.
            if n % 2 == 0:
                cli = cli_run(cli_env, day)
            launched_at, run_id = launch_through_ui(port, day)
            if n % 2 == 1:
                cli = cli_run(cli_env, day)
            stamps = run_events(ui_env["DAGSTER_HOME"], run_id)
            if "RUN_SUCCESS" not in stamps:
                raise SystemExit(f"ui run {run_id} of {day} did not succeed: {sorted(stamps)}")
            pair = {"cli": cli["run"], "cli_process": cli["process"]}
            pair["ui"] = stamps["RUN_SUCCESS"] - launched_at
            for phase, start, end in PHASES:
                begin = launched_at if start is None else stamps.get(start)
                if begin is None or end not in stamps:
                    raise SystemExit(f"ui run {run_id}: no {start} or {end} event: {stamps}")
                pair[phase] = stamps[end] - begin
            pairs.append(pair)
            print(
                f"  {day}: cli {pair['cli']:.1f} s (process {pair['cli_process']:.1f} s), ui "
                f"{pair['ui']:.1f} s = {pair['ui'] / pair['cli']:.2f}x (against the process "
                f"{pair['ui'] / pair['cli_process']:.2f}x); ui: "
                + ", ".join(f"{phase} {pair[phase]:.1f} s" for phase, _, _ in PHASES),
                flush=True,
            )
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)
        log.close()
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=30, help="days of KPI history first")
    parser.add_argument("--repeat", type=int, default=2, help="cli/ui pairs per settings file")
    parser.add_argument(
        "--settings",
        type=Path,
        nargs="+",
        default=[ROOT / "dagster.yaml"],
        help="instance settings files to measure, in this order (default: dagster.yaml)",
    )
    parser.add_argument("--port", type=int, default=3333)
    parser.add_argument(
        "--same-home",
        action="store_true",
        help="the cli records its runs in dagster dev's DAGSTER_HOME (default: its own copy)",
    )
    args = parser.parse_args()
    for settings in args.settings:
        if not settings.is_file():
            raise SystemExit(f"--settings {settings}: no such file")
    if not 1 <= args.repeat <= 5:
        raise SystemExit("--repeat: 1 to 5 pairs")

    from daily_index.replay import DEMO_DAY, ReplayServer

    # Each pair on its own day (the day and the days before it), the same days per settings.
    days = [(DEMO_DAY - timedelta(days=n)).isoformat() for n in range(args.repeat)]
    folder = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    results: dict[str, list[dict[str, float]]] = {}
    try:
        with ReplayServer() as server:
            env = environment(server, folder)
            print(f"KPIs for {days[0]} and {args.history} days before it (recorded, replayed) ...")
            subprocess.run(
                [str(BIN / "daily-index"), "run", "--date", days[0], "--history", str(args.history)]
                + ["--kpis-only", "--no-progress"],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
                timeout=900,
            )
            for n, settings in enumerate(args.settings):
                name = f"{n}-{settings.stem}"
                print(f"{settings}: cli in process, then ui through dagster dev, per day ...")
                results[str(settings)] = measure(
                    settings, env, folder, days, args.port, name, args.same_home
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("report run, same days and data (medians):")
    for settings, pairs in results.items():

        def median(key: str, pairs=pairs) -> float:
            return statistics.median(p[key] for p in pairs)

        ratio = statistics.median(p["ui"] / p["cli"] for p in pairs)
        # What a launch adds to the job itself: less at the mercy of the machine's load than
        # the two runs, which other processes slow down by different amounts.
        overhead = statistics.median(p["ui"] - p["run"] for p in pairs)
        steady = statistics.median((p["cli"] + p["ui"] - p["run"]) / p["cli"] for p in pairs)
        process = statistics.median(p["ui"] / p["cli_process"] for p in pairs)
        print(
            f"  {settings}: ui {median('ui'):.1f} s / cli {median('cli'):.1f} s = {ratio:.2f}x "
            f"(target 1.30x); against the CLI process with its imports "
            f"({median('cli_process'):.1f} s): {process:.2f}x; ui "
            + ", ".join(f"{phase} {median(phase):.1f} s" for phase, _, _ in PHASES)
        )
        print(
            f"    launch overhead (ui minus its run) {overhead:.1f} s: the cli's run plus it = "
            f"{steady:.2f}x the cli's run"
        )


if __name__ == "__main__":
    main()
