"""Benchmark of a historical import: one KPI, every day the partitions hold, in one run.

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

The partitions start on 2024-01-01 and end today, so five years (1,826 days) cannot be
recorded yet: the default is every day from 2024-01-01 to yesterday.

Usage: python bench/imports.py [--days N] [--postgres] [--pg-url postgresql://...]
"""

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
FIRST = date(2024, 1, 1)
PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def sqlite_home(folder: Path) -> Path:
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def postgres_home(folder: Path, base_url: str) -> Path:
    """A DAGSTER_HOME whose instance lives in a fresh database of the local PostgreSQL."""
    name = f"bench_imports_{uuid.uuid4().hex[:10]}"
    subprocess.run(  # noqa: S603 - fixed arguments, a name we generated
        ["createdb", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", name], check=True
    )
    home = folder / "dagster_home_pg"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n"
        f"    postgres_url: {base_url.rstrip('/')}/{name}\n"
    )
    return home


def floor_job(days: int, *, checks: bool) -> dg.JobDefinition:
    partitions = dg.DailyPartitionsDefinition(start_date=FIRST.isoformat(), timezone="UTC")
    key = dg.AssetKey(["kpi", "floor"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check_specs = (
            [dg.AssetCheckSpec("quality", asset=key, partitions_def=partitions)] if checks else []
        )

    @dg.multi_asset(
        name="floor",
        specs=[dg.AssetSpec(key, skippable=True)],
        check_specs=check_specs,
        partitions_def=partitions,
        can_subset=True,  # as the KPI step: its check outputs are optional
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def floor(context: dg.AssetExecutionContext):
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


def run_floor(home: Path, days: int, *, checks: bool) -> float:
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    job = floor_job(days, checks=checks)
    last = FIRST + timedelta(days=days - 1)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    elapsed = time.perf_counter() - started
    recorded = len(instance.get_materialized_partitions(dg.AssetKey(["kpi", "floor"])))
    assert result.success and recorded == days, (result.success, recorded)  # noqa: S101
    return elapsed


def run_ours(folder: Path, home: Path, days: int) -> tuple[float, dict[str, tuple]]:
    csv_path = folder / "btc_price.csv"
    rows = [f"{FIRST + timedelta(days=n)},{40000 + n * 0.25!r}" for n in range(days)]
    csv_path.write_text("date,value\n" + "\n".join(rows) + "\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAILY_INDEX_DATA_DIR": str(folder / f"data_{home.name}"),
    }
    command = [sys.executable, "-m", "daily_index.cli", "import", str(csv_path)]
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - our own CLI
        [*command, "--kpi", "btc_price", "--no-progress"],
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
    recorded = len(instance.get_materialized_partitions(dg.AssetKey(["kpi", "btc_price"])))
    assert recorded == days, recorded  # noqa: S101
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


def bench(label: str, make_home, days: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        folder = Path(tmp)
        floor = run_floor(make_home(folder / "floor"), days, checks=False)
        floor_checks = run_floor(make_home(folder / "floor_checks"), days, checks=True)
        ours, spent = run_ours(folder, make_home(folder / "ours"), days)
    print(f"\n{label}: {days} days x 1 KPI in one run")
    print(f"  floor         {floor:7.1f} s  ({days / floor:5.0f} partitions/s)")
    print(f"  floor-checks  {floor_checks:7.1f} s")
    run_s = max(last for _, _, last in spent.values())
    print(f"  ours          {ours:7.1f} s  (the whole CLI process, Python start included)")
    print(f"  ours, the run {run_s:7.1f} s  (first to last event of the import's run)")
    print(f"  ours / floor         {ours / floor:5.2f}x   (target 1.30x)")
    print(f"  ours / floor-checks  {ours / floor_checks:5.2f}x")
    print(f"  run / floor          {run_s / floor:5.2f}x")
    print(f"  run / floor-checks   {run_s / floor_checks:5.2f}x")
    print("  the import's run, by event type (count, first s, last s):")
    for kind, (count, first, last) in sorted(spent.items(), key=lambda kv: kv[1][1]):
        print(f"    {kind:32s} {count:6d} {first:7.1f} {last:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_days = (datetime.now(UTC).date() - FIRST).days
    parser.add_argument("--days", type=int, default=default_days)
    parser.add_argument("--postgres", action="store_true", help="Also on the local PostgreSQL.")
    # dagster-postgres brings psycopg2; SQLAlchemy 2.1's plain `postgresql` means psycopg 3.
    parser.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    os.environ[PLANNED_SUBSET_ENV] = "true"
    if not args.skip_sqlite:
        bench("SQLite", sqlite_home, args.days)
    if args.postgres:
        bench("PostgreSQL", lambda folder: postgres_home(folder, args.pg_url), args.days)


if __name__ == "__main__":
    main()
