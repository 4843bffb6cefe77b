"""Benchmark of a historical import: N KPIs (default 1) x D days (default 1,826), in one run.

Measured in one go, each on a fresh Dagster instance (SQLite in a temporary DAGSTER_HOME,
and with --postgres a fresh database on the local PostgreSQL):
  floor         Dagster's own floor: one step of a daily-partitioned asset (single-run
                backfill) yielding one AssetMaterialization per day of the range, nothing else
  floor-checks  the same step also yielding each day's check evaluation, as the KPI step does
  ours          `daily-index import` of a `date,value` CSV: validation, the series write, and
                the one run of the `kpis` asset recording every day with its check
Both floors and ours record the range's planned events as one event, as the import does
(DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS). Prints wall times, the ratios to the
floors (the target: ours within 1.3x of the floor) and where the import's run spent its time.

The default is five years (1,826 days) of one KPI, ending yesterday. `--kpis 200 --days 365`
is the year of 200 KPIs (73,000 KPI-days): a registry of that many synthetic KPIs and one
wide CSV; it also prints events per second and the share of the run that is Dagster's own
bookkeeping (the floor-checks time over ours).

Usage: python bench/imports.py [--days D] [--kpis N] [--postgres] [--skip-sqlite]
       [--pg-url postgresql+psycopg2://...]
"""

import argparse
import atexit
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import stubs

ROOT = Path(__file__).resolve().parent.parent
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def sqlite_home(folder: Path) -> Path:
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def postgres_home(folder: Path, base_url: str) -> Path:
    """A DAGSTER_HOME whose instance lives in a fresh database of the local PostgreSQL."""
    name = f"bench_imports_{uuid.uuid4().hex[:10]}"
    where = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
    subprocess.run(["createdb", *where, name], check=True)  # noqa: S603, S607 - a name we made
    # Dropped when the benchmark ends, also after a failure.
    atexit.register(subprocess.run, ["dropdb", "--force", *where, name], check=False)
    home = folder / "dagster_home_pg"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n"
        f"    postgres_url: {base_url.rstrip('/')}/{name}\n"
    )
    return home


def floor_job(first: date, kpis: int, *, checks: bool) -> dg.JobDefinition:
    partitions = dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone="UTC")
    keys = [dg.AssetKey(["kpi", f"floor_{i:03d}"]) for i in range(kpis)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check_specs = [
            dg.AssetCheckSpec("quality", asset=key, partitions_def=partitions)
            for key in (keys if checks else [])
        ]

    @dg.multi_asset(
        name="floor",
        specs=[dg.AssetSpec(key, skippable=True) for key in keys],
        check_specs=check_specs,
        partitions_def=partitions,
        can_subset=True,  # as the KPI step: its check outputs are optional
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def floor(context: dg.AssetExecutionContext):
        for key in keys:
            for n, partition in enumerate(context.partition_keys):
                yield dg.AssetMaterialization(
                    key, partition=partition, metadata={"value": 100.0 + n, "source": "bench"}
                )
            if checks:
                for partition in context.partition_keys:
                    yield dg.AssetCheckEvaluation(
                        asset_key=key,
                        check_name="quality",
                        passed=True,
                        partition=partition,
                        metadata={"range": "pass"},
                    )

    return dg.Definitions(assets=[floor]).resolve_implicit_global_asset_job_def()


def run_floor(home: Path, first: date, days: int, kpis: int, *, checks: bool) -> float:
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    job = floor_job(first, kpis, checks=checks)
    last = first + timedelta(days=days - 1)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    elapsed = time.perf_counter() - started
    recorded = len(instance.get_materialized_partitions(dg.AssetKey(["kpi", "floor_000"])))
    assert result.success and recorded == days, (result.success, recorded)  # noqa: S101
    return elapsed


def kpi_ids(kpis: int) -> list[str]:
    return ["btc_price"] if kpis == 1 else [f"bench_kpi_{i:03d}" for i in range(kpis)]


def run_ours(
    folder: Path, home: Path, first: date, days: int, kpis: int
) -> tuple[float, dict[str, tuple]]:
    ids = kpi_ids(kpis)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAILY_INDEX_DATA_DIR": str(folder / f"data_{home.name}"),
    }
    csv_path = folder / "history.csv"
    if kpis == 1:
        header, option = "date,value", ["--kpi", ids[0]]
    else:
        stubs.write_registry(folder / "kpis.yaml", ids)
        env["DAILY_INDEX_KPIS_FILE"] = str(folder / "kpis.yaml")
        header, option = "date," + ",".join(ids), []
    rows = []
    for n in range(days):
        values = ",".join(repr(40000 + n * 0.25 + k) for k in range(kpis))
        rows.append(f"{first + timedelta(days=n)},{values}")
    csv_path.write_text(header + "\n" + "\n".join(rows) + "\n")
    command = [sys.executable, "-m", "daily_index.cli", "import", str(csv_path)]
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - our own CLI
        [*command, *option, "--no-progress"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"import failed:\n{result.stdout}\n{result.stderr}")
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    for kpi_id in (ids[0], ids[-1]):
        recorded = len(instance.get_materialized_partitions(dg.AssetKey(["kpi", kpi_id])))
        assert recorded == days, (kpi_id, recorded)  # noqa: S101
    return elapsed, phases(instance)


def phases(instance: dg.DagsterInstance) -> dict[str, tuple]:
    """Per event type of the import's run: count, first and last second since the run began."""
    run = instance.get_runs(limit=1)[0]
    events = instance.all_logs(run.run_id)
    start = events[0].timestamp
    out: dict[str, list] = defaultdict(lambda: [0, None, 0.0])
    for event in events:
        kind = event.dagster_event.event_type_value if event.dagster_event else "LOG"
        entry = out[kind]
        entry[0] += 1
        entry[1] = event.timestamp - start if entry[1] is None else entry[1]
        entry[2] = event.timestamp - start
    return {k: tuple(v) for k, v in out.items()}


def bench(label: str, make_home, days: int, kpis: int) -> None:
    first = YESTERDAY - timedelta(days=days - 1)
    events = days * kpis
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        folder = Path(tmp)
        floor = run_floor(make_home(folder / "floor"), first, days, kpis, checks=False)
        floor_checks = run_floor(make_home(folder / "floor_checks"), first, days, kpis, checks=True)
        ours, spent = run_ours(folder, make_home(folder / "ours"), first, days, kpis)
    print(f"\n{label}: {days} days x {kpis} KPI(s) ({events} KPI-days) in one run, from {first}")
    print(f"  floor         {floor:7.1f} s  ({events / floor:5.0f} partitions/s)")
    print(f"  floor-checks  {floor_checks:7.1f} s")
    run_s = max(last for _, _, last in spent.values())
    print(f"  ours          {ours:7.1f} s  (the whole CLI process, Python start included)")
    print(f"  ours, the run {run_s:7.1f} s  (first to last event of the import's run)")
    print(f"  ours / floor         {ours / floor:5.2f}x   (target 1.30x)")
    print(f"  ours / floor-checks  {ours / floor_checks:5.2f}x")
    print(f"  run / floor          {run_s / floor:5.2f}x")
    print(f"  run / floor-checks   {run_s / floor_checks:5.2f}x")
    print(f"  ours: {events / ours:5.0f} KPI-days/s; Dagster's bookkeeping (floor-checks / ours)")
    print(f"        is {100 * floor_checks / ours:4.0f}% of the import")
    print("  the import's run, by event type (count, first s, last s):")
    for kind, (count, first, last) in sorted(spent.items(), key=lambda kv: kv[1][1]):
        print(f"    {kind:32s} {count:6d} {first:7.1f} {last:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1826)
    parser.add_argument("--kpis", type=int, default=1, help="KPIs in the file (wide CSV if > 1)")
    parser.add_argument("--postgres", action="store_true", help="Also on the local PostgreSQL.")
    # dagster-postgres brings psycopg2; SQLAlchemy 2.1's plain `postgresql` means psycopg 3.
    parser.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    os.environ[PLANNED_SUBSET_ENV] = "true"
    if not args.skip_sqlite:
        bench("SQLite", sqlite_home, args.days, args.kpis)
    if args.postgres:
        pg_home = lambda folder: postgres_home(folder, args.pg_url)  # noqa: E731
        bench("PostgreSQL", pg_home, args.days, args.kpis)


if __name__ == "__main__":
    main()
