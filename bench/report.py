"""Whole-day benchmark through the real Dagster jobs: KPIs, charts, analysis, PDF, delivery.

One day of the product on this machine, built only on public pieces
(`build_definitions(environ=...)`, `daily_kpis_job`, `daily_report_job`):

  1. an N-KPI n8n registry served by a local webhook stub (L ms latency, child process);
  2. D days of history written straight into storage with `KpiSeriesStore.upsert`
     (no Dagster run: it is set-up, not what is measured);
  3. `daily_kpis_job` for the day (one step fetching every KPI concurrently);
  4. `daily_report_job` for the day: `report/charts`, `report/analysis` (an
     OpenAI-compatible stub, bench/llm_stub_server.py in 'good' mode, child process),
     `report/pdf`, `report/delivery` to E json:// endpoints on local HTTP receivers
     (child process; 1% dead: half a closed port, half a receiver answering 500),
     through DAILY_INDEX_SUBSCRIBERS_FILE (a generated CSV or YAML file). Webhooks
     never get the PDF attached: they get the summary and a link (a base URL,
     `--link-base`; `--no-link` to see the "no link" path of the local store).

With `--postgres`, Dagster's instance (runs, event log) lives in a fresh database of the
local PostgreSQL (127.0.0.1:5432, trust auth) through deploy/storage-postgres.yaml's
settings (DAGSTER_PG_* variables), dropped at the end; the default is a temporary SQLite
instance.

Prints per-stage wall times (from the step events of each run), the total, peak RSS
(this process, the largest child, and a sampled sum over the product's process tree),
the PDF's pages and size, the analyst used and the delivery ledger's counts. Targets are
shown next to the figures; nothing is asserted.

    python bench/report.py [--kpis 200] [--endpoints 5000] [--days 90] [--latency-ms 50]
                           [--skip-delivery] [--subscribers-format csv|yaml]
                           [--receives mix|pdf|link|summary] [--postgres]
                           [--link-base URL | --no-link]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import stubs

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("crypto_prices", "crypto_market", "derivatives", "stablecoins", "macro")
CHART_TYPES = ("line", "bar", "area")
UNITS = ("USD", "%", "BTC", "points")
TARGETS_S = {"charts": 20, "pdf": 30, "delivery": 20, "total": 60}
TARGET_RSS_MB = 1024
TARGET_PDF_MB = 1.5
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


# --- harness (stubs from bench/stubs.py, forked before anything heavy is imported) ---------


def _kpi_value(kpi_id: str, offset: int = 0) -> float:
    """A deterministic random-walk-ish value per KPI and day offset (0 = the day)."""
    seed = sum(ord(c) for c in kpi_id)
    return round(100.0 * math.exp(0.25 * math.sin(seed + offset / 9.0) + 0.002 * seed), 4)


# --- inputs ---------------------------------------------------------------------------------


def write_registry(path: Path, n: int) -> list[str]:
    ids, lines = [], ["version: 1", "kpis:"]
    for i in range(n):
        kpi_id = f"bench_kpi_{i:03d}"
        ids.append(kpi_id)
        thresholds = "{high: 115}" if i % 4 == 0 else "{}"
        lines += [
            f"  - id: {kpi_id}",
            f"    name: Bench KPI {i}",
            "    description: Synthetic KPI for the whole-day benchmark.",
            "    type: price",
            f"    unit: {json.dumps(UNITS[i % len(UNITS)])}",
            f"    source: {{kind: n8n, params: {{webhook: kpi/bench-{i}}}}}",
            f"    analysisConfig: {{chartType: {CHART_TYPES[i % len(CHART_TYPES)]}, "
            f"alertThresholds: {thresholds}}}",
            f"    metadata: {{source: stub, category: {CATEGORIES[i % len(CATEGORIES)]}}}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return ids


def write_subscribers(
    path: Path,
    endpoints: int,
    ok_ports: list[int],
    failing_port: int,
    dead_port: int,
    receives: str = "mix",
) -> dict[str, int]:
    """E subscribers, one json:// URL each; every 100th is bad (alternately dead / 500).

    `receives="mix"`: odd subscribers get the summary, even ones the PDF attached (as
    bench/delivery.py); otherwise every subscriber gets that mode.
    """
    rows, expected = [], {"ok": 0, "dead_port": 0, "http_500": 0}
    for i in range(endpoints):
        if i % 100 == 0:
            port = dead_port if i % 200 == 0 else failing_port
            expected["dead_port" if port == dead_port else "http_500"] += 1
        else:
            port = ok_ports[i % len(ok_ports)]
            expected["ok"] += 1
        rows.append(
            (
                f"s{i:05d}",
                f"Subscriber {i}",
                f"json://127.0.0.1:{port}/hook/{i}",
                ("summary" if i % 2 else "pdf") if receives == "mix" else receives,
            )
        )
    if path.suffix == ".csv":
        text = "id,name,urls,fallback,tags,receives\n" + "".join(
            f"{sid},{name},{url},,,{receives}\n" for sid, name, url, receives in rows
        )
    else:
        text = "subscribers:\n" + "".join(
            f'  - id: {sid}\n    name: {name}\n    url: "{url}"\n    receives: {receives}\n'
            for sid, name, url, receives in rows
        )
    path.write_text(text)
    return expected


def preload_history(data_dir: Path, kpi_ids: list[str], day: date, days: int) -> float:
    """Write D days before `day` straight into each KPI's Parquet series; returns seconds."""
    from daily_index.storage.objectstore import LocalObjectStore
    from daily_index.storage.series import KpiSeriesStore, SeriesRow

    started = time.perf_counter()
    series = KpiSeriesStore(LocalObjectStore(data_dir))
    fetched = datetime.now(UTC)
    for kpi_id in kpi_ids:
        series.upsert(
            kpi_id,
            [
                SeriesRow(
                    day - timedelta(days=k),
                    _kpi_value(kpi_id, -k),
                    "USD",
                    "bench-preload",
                    fetched,
                    f"preload-{kpi_id}-{k}",
                )
                for k in range(days, 0, -1)
            ],
        )
    return time.perf_counter() - started


# --- measuring ------------------------------------------------------------------------------


def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load() -> str:
    """The 1/5/15-minute load averages: wall times on a shared machine depend on them."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class TreeRss:
    """Samples the summed RSS and CPU time of this process and its descendants.

    The harness (stubs) is excluded. CPU time is each process's user + system time plus
    that of its reaped children, so a stage's CPU seconds (`cpu_between`) stay
    comparable on a shared machine where wall times stretch with the load.
    """

    def __init__(self, exclude: set[int], interval_s: float = 0.25):
        self.exclude = exclude
        self.interval_s = interval_s
        self.peak_kb = 0
        self.peak_procs = 0
        self.cpu_samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _table() -> dict[int, tuple[int, int, float]]:
        out = {}
        ticks = os.sysconf("SC_CLK_TCK")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rindex(")") + 2 :].split()
                ppid = int(fields[1])
                # utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after the name.
                cpu_s = sum(int(x) for x in fields[11:15]) / ticks
                with open(f"/proc/{entry}/statm") as f:
                    rss_pages = int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(entry)] = (ppid, rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024, cpu_s)
        return out

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the tree used between two wall-clock timestamps (interpolated)."""

        def at(ts: float) -> float:
            samples = self.cpu_samples
            if not samples:
                return 0.0
            for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
                if t0 <= ts <= t1:
                    return c0 + (c1 - c0) * ((ts - t0) / (t1 - t0) if t1 > t0 else 0.0)
            return samples[0][1] if ts < samples[0][0] else samples[-1][1]

        return max(0.0, at(end) - at(start))

    def sample(self) -> None:
        table = self._table()
        tree, frontier = set(), [os.getpid()]
        while frontier:
            pid = frontier.pop()
            if pid in tree or pid in self.exclude:
                continue
            tree.add(pid)
            frontier += [p for p, (ppid, _, _) in table.items() if ppid == pid]
        total = sum(table[p][1] for p in tree if p in table)
        self.cpu_samples.append((time.time(), sum(table[p][2] for p in tree if p in table)))
        if total > self.peak_kb:
            self.peak_kb, self.peak_procs = total, len(tree)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def step_times(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) timestamps of each step, from STEP_START and STEP_SUCCESS/FAILURE."""
    import dagster as dg

    starts, times = {}, {}
    for record in instance.get_records_for_run(run_id, limit=1_000_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            times[event.step_key] = (starts.get(event.step_key, entry.timestamp), entry.timestamp)
    return times


def stage_of(step_key: str) -> str:
    for stage in ("charts", "analysis", "pdf", "delivery"):
        if step_key.endswith(stage):
            return stage
    return "kpis" if "kpi" in step_key else step_key


@contextmanager
def dagster_instance(folder: Path, postgres: bool):
    """A temporary SQLite instance, or one on a fresh PostgreSQL database (dropped after)."""
    import dagster as dg

    if not postgres:
        yield dg.DagsterInstance.local_temp(str(folder)), "SQLite (temporary)"
        return
    import psycopg2

    name = f"bench_report_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    settings = {
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it",
        "DAGSTER_PG_DB": name,
    }
    os.environ.update(settings)
    (folder / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n" + (ROOT / "deploy" / "storage-postgres.yaml").read_text()
    )
    instance = dg.DagsterInstance.from_config(str(folder))
    try:
        yield instance, f"PostgreSQL (fresh database {name} on {PG['host']}:{PG['port']})"
    finally:
        instance.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--days", type=int, default=90, help="history (and chart window) days")
    parser.add_argument("--latency-ms", type=float, default=50, help="n8n stub latency")
    parser.add_argument("--llm-latency-ms", type=float, default=200, help="LLM stub latency")
    parser.add_argument("--skip-delivery", action="store_true")
    parser.add_argument("--subscribers-format", choices=("csv", "yaml"), default="csv")
    parser.add_argument(
        "--receives",
        choices=("mix", "pdf", "link", "summary"),
        default="mix",
        help="what subscribers receive (mix: half PDF attached, half summary)",
    )
    parser.add_argument("--receivers", type=int, default=4, help="HTTP receivers answering 200")
    parser.add_argument("--day", default=None, help="the day (default: yesterday, UTC)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Dagster's instance on a fresh database of the local PostgreSQL (127.0.0.1:5432)",
    )
    links = parser.add_mutually_exclusive_group()
    links.add_argument(
        "--link-base",
        default="https://reports.example.org",
        help="DAILY_INDEX_REPORT_LINK_BASE for the run (links in the messages; never fetched)",
    )
    links.add_argument(
        "--no-link", action="store_true", help="no link base: the local store has no link"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    day = date.fromisoformat(args.day) if args.day else datetime.now(UTC).date() - timedelta(days=1)

    # Harness first, forked before dagster/matplotlib are imported: the remote side of
    # the day (n8n, receivers, LLM) runs in its own processes, as it would in production.
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    harness: list = []
    n8n = fork.Process(
        target=stubs.n8n_child, args=(args.latency_ms, _kpi_value, queue), daemon=True
    )
    n8n.start()
    harness.append(n8n)
    n8n_port = queue.get(timeout=30)
    receiver_ports: list[int] = []
    if not args.skip_delivery:
        receivers = fork.Process(
            target=stubs.receivers_child, args=(args.receivers, queue), daemon=True
        )
        receivers.start()
        harness.append(receivers)
        receiver_ports = queue.get(timeout=30)
    llm_port = stubs.free_port()
    llm = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "llm_stub_server.py"),
            "--port",
            str(llm_port),
            "--mode",
            "good",
            "--latency-ms",
            str(args.llm_latency_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stubs.wait_port(llm_port)

    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        return _run(
            args,
            day,
            tmp,
            n8n_port,
            receiver_ports,
            llm_port,
            exclude={p.pid for p in harness} | {llm.pid},
        )
    finally:
        llm.terminate()
        llm.wait(timeout=10)
        for process in harness:
            process.terminate()
            process.join(timeout=10)
        if args.keep:
            print(f"work folder kept: {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _run(
    args,
    day: date,
    tmp: Path,
    n8n_port: int,
    receiver_ports: list[int],
    llm_port: int,
    exclude: set[int],
) -> int:
    data_dir = tmp / "store"
    kpi_ids = write_registry(tmp / "kpis.yaml", args.kpis)
    environ = {
        "DAILY_INDEX_KPIS_FILE": str(tmp / "kpis.yaml"),
        "DAILY_INDEX_STORAGE": "local",
        "DAILY_INDEX_DATA_DIR": str(data_dir),
        "DAILY_INDEX_N8N_BASE_URL": f"http://127.0.0.1:{n8n_port}",
        "DAILY_INDEX_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        "DAILY_INDEX_LLM_MODEL": "stub",
        "DAILY_INDEX_LLM_API_KEY": "bench-not-a-secret",
        "DAILY_INDEX_TODAY": day.isoformat(),
        "DAILY_INDEX_CHART_WINDOW_DAYS": str(args.days),
        "DAILY_INDEX_OUTBOX_DIR": str(tmp / "outbox"),
    }
    expected = None
    if not args.skip_delivery:
        *ok_ports, failing_port = receiver_ports
        subscribers = tmp / f"subscribers.{args.subscribers_format}"
        expected = write_subscribers(
            subscribers, args.endpoints, ok_ports, failing_port, stubs.free_port(), args.receives
        )
        if not args.no_link:
            environ["DAILY_INDEX_REPORT_LINK_BASE"] = args.link_base
        environ["DAILY_INDEX_SUBSCRIBERS_FILE"] = str(subscribers)
    # The LLM key is read through dg.EnvVar at run time, and the registry file through
    # os.environ: both must be in this process's environment, not only in `environ`.
    for key in [k for k in os.environ if k.startswith("DAILY_INDEX_")]:
        os.environ.pop(key)
    os.environ.update(environ)

    started_all = time.perf_counter()
    import dagster  # noqa: F401 (its import time is reported apart from the day)

    from daily_index.cli import materialisation_metadata as materialisation
    from daily_index.cli import step_error
    from daily_index.definitions import build_definitions
    from daily_index.defs.analysis import ANALYSIS_KEY
    from daily_index.defs.charts import CHARTS_KEY
    from daily_index.defs.delivery import DELIVERY_KEY
    from daily_index.defs.report import PDF_KEY
    from daily_index.delivery import read_ledger
    from daily_index.storage.objectstore import LocalObjectStore

    imported = time.perf_counter() - started_all

    print(
        f"{args.kpis} KPIs x {args.days} days, n8n stub {args.latency_ms:g} ms, "
        f"LLM stub {args.llm_latency_ms:g} ms, "
        + (
            "no delivery"
            if args.skip_delivery
            else f"{args.endpoints} endpoints ({args.subscribers_format}, "
            f"receives {args.receives}, {expected['dead_port']} dead port + "
            f"{expected['http_500']} HTTP 500)"
        )
        + f", day {day}, {os.cpu_count()} CPUs, load average {_load()}",
        flush=True,
    )
    preload_s = preload_history(data_dir, kpi_ids, day, args.days)
    print(
        f"  history preload  {preload_s:6.2f} s  ({args.kpis} series x {args.days} days, "
        "KpiSeriesStore.upsert, not a Dagster run)",
        flush=True,
    )

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with (
        TreeRss(exclude) as tree,
        tempfile.TemporaryDirectory(dir=tmp) as home,
        dagster_instance(Path(home), args.postgres) as (instance, instance_kind),
    ):
        print(f"  Dagster instance {instance_kind}", flush=True)
        day_started = time.perf_counter()
        defs = build_definitions(environ=environ)
        kpi_job = defs.resolve_job_def("daily_kpis_job")
        report_job = defs.resolve_job_def("daily_report_job")
        built = time.perf_counter() - day_started

        t0, c0 = time.perf_counter(), _cpu_s()
        kpis = kpi_job.execute_in_process(
            partition_key=day.isoformat(), instance=instance, raise_on_error=False, run_config=quiet
        )
        kpis_wall, kpis_cpu = time.perf_counter() - t0, _cpu_s() - c0
        stored = len(kpis.get_asset_materialization_events())
        print(
            f"  KPI run          {kpis_wall:6.2f} s  ({stored}/{args.kpis} stored"
            + ("" if kpis.success else f"; RUN FAILED: {step_error(kpis).splitlines()[0]}")
            + ")",
            flush=True,
        )

        selection = None
        if args.skip_delivery:
            selection = [CHARTS_KEY, ANALYSIS_KEY, PDF_KEY]
        t0, c0 = time.perf_counter(), _cpu_s()
        report = report_job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            run_config=quiet,
            asset_selection=selection,
        )
        report_wall, report_cpu = time.perf_counter() - t0, _cpu_s() - c0
        day_wall = time.perf_counter() - day_started
        spans = {stage_of(k): v for k, v in step_times(instance, kpis.run_id).items()}
        spans |= {stage_of(k): v for k, v in step_times(instance, report.run_id).items()}
        stages = {stage: end - start for stage, (start, end) in spans.items()}
        if not report.success:
            print(f"  REPORT RUN FAILED: {step_error(report)}", flush=True)

    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    pdf = materialisation(report, PDF_KEY)
    analysis = materialisation(report, ANALYSIS_KEY)
    sent = materialisation(report, DELIVERY_KEY)

    def target(stage: str, seconds: float) -> str:
        limit = TARGETS_S.get(stage)
        if limit is None:
            return ""
        return f"  (target < {limit} s: {'met' if seconds < limit else 'MISSED'})"

    print("stages (step wall time from the runs' events; CPU seconds of the process tree)")
    for stage in ("kpis", "charts", "analysis", "pdf", "delivery"):
        if stage in stages:
            cpu = tree.cpu_between(*spans[stage])
            print(
                f"  {stage:<15}{stages[stage]:7.2f} s  {cpu:6.1f} CPU s"
                f"{target(stage, stages[stage])}"
            )
    overhead = day_wall - built - sum(stages.values())
    print(
        f"  Dagster outside steps {overhead:5.2f} s (run start/stop, event log), "
        f"definitions built in {built:.2f} s, imports {imported:.2f} s"
    )
    print(
        f"  runs: KPI job {kpis_wall:.2f} s ({kpis_cpu:.1f} CPU s), report job "
        f"{report_wall:.2f} s ({report_cpu:.1f} CPU s; this process and its reaped "
        f"children); load average at the end {_load()}"
    )
    print(
        f"whole day        {day_wall:7.2f} s{target('total', day_wall)}  "
        "(definitions + KPI run + report run; preload and imports excluded)"
    )
    print(
        f"peak RSS         this process {own_mb:.0f} MB (ru_maxrss RUSAGE_SELF); largest child "
        f"{children_mb:.0f} MB (RUSAGE_CHILDREN: the chart workers, waited-for children only)"
    )
    print(
        f"                 sampled tree sum {tree.peak_kb / 1024:.0f} MB over {tree.peak_procs} "
        f"process(es), harness stubs excluded  (target < {TARGET_RSS_MB} MB: "
        f"{'met' if max(tree.peak_kb / 1024, own_mb + children_mb) < TARGET_RSS_MB else 'MISSED'}"
        ")"
    )
    if pdf:
        pdf_mb = pdf.get("bytes", 0) / 1e6
        print(
            f"PDF              {pdf.get('pages')} pages, {pdf_mb:.2f} MB (target <= "
            f"{TARGET_PDF_MB} MB: {'met' if pdf_mb <= TARGET_PDF_MB else 'MISSED'})"
            f"{', PARTIAL' if pdf.get('partial') else ''}; headline: {pdf.get('headline')!r}"
        )
    if analysis:
        print(
            f"analyst          {analysis.get('analyst')} (model {analysis.get('model')}, "
            f"LLM latency {analysis.get('latency_ms')} ms, tokens "
            f"{analysis.get('prompt_tokens')} in / {analysis.get('completion_tokens')} out)"
        )
    if not args.skip_delivery:
        ledger = read_ledger(LocalObjectStore(data_dir), day)
        counts = ledger.status.value_counts().to_dict() if len(ledger) else {}
        unexplained = ledger[(ledger.status != "sent") & ledger.last_error.isna()]
        print(
            f"delivery         asset metadata: sent {sent.get('sent')}, failed "
            f"{sent.get('failed')}, dead {sent.get('dead')}, endpoints {sent.get('endpoints')}, "
            f"elapsed {sent.get('elapsed_s')} s"
        )
        print(
            f"  delivered      {sent.get('delivered')} (links: {sent.get('link')}; "
            f"no link: {sent.get('no_link')})"
        )
        print(
            f"  ledger         {len(ledger)} rows {counts}; not sent without a reason: "
            f"{len(unexplained)}; expected {expected['ok']} ok, "
            f"{expected['dead_port'] + expected['http_500']} bad"
        )
        complete = len(ledger) == args.endpoints and set(counts) <= {"sent", "failed", "dead"}
        print(
            f"  every endpoint in the ledger as sent or failed with a reason: "
            f"{'yes' if complete and unexplained.empty else 'NO'}"
        )
        for reason, n in (
            ledger[ledger.status != "sent"]
            .last_error.str.slice(0, 110)
            .value_counts()
            .head(3)
            .items()
        ):
            print(f"  reason x{n:<5} {reason}")
        problems = sent.get("subscriber_problems") or []
        if problems:
            count = sent.get("subscriber_problem_count", len(problems))
            print(f"  subscriber file problems: {count} (first: {problems[0]})")
    return 0 if kpis.success and report.success else 1


if __name__ == "__main__":
    sys.exit(main())
