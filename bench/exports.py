"""Benchmark of `daily-index export`: N KPIs x D days (default 200 x 1,826) to a file.

A local store is filled with synthetic series (every 7th day of each KPI left out, so the
export writes empty cells too), then the CLI runs as a subprocess, as a user runs it:

  floor  pyarrow alone: read every stored series and write them as one wide Parquet file
  ours   `daily-index export --format parquet --layout wide -o FILE` (Python start included)

Prints wall times, the ratio to the floor, the child's peak RSS (target: under 10 s and
1 GB for 5 years x 200 KPIs) and checks that the file holds every stored value.

Usage: python bench/exports.py [--kpis N] [--days D] [--format parquet|csv|json]
       [--layout wide|long]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import stubs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daily_index.storage.objectstore import LocalObjectStore  # noqa: E402
from daily_index.storage.series import KpiSeriesStore, SeriesRow, series_key  # noqa: E402


def fill(store: KpiSeriesStore, ids: list[str], days: int) -> int:
    first = datetime.now(UTC).date() - timedelta(days=days)
    now = datetime.now(UTC)
    stored = 0
    for k, kpi_id in enumerate(ids):
        rows = [
            SeriesRow(first + timedelta(days=n), 100.0 + k + n / 7, "USD", "bench", now, f"t{n}")
            for n in range(days)
            if (n + k) % 7
        ]
        store.upsert(kpi_id, rows)
        stored += len(rows)
    return stored


def floor(objects: LocalObjectStore, ids: list[str], out: Path) -> float:
    started = time.perf_counter()
    # One wide table: the union of the days, one column per KPI (a join per KPI, as a
    # hand-written exporter on pyarrow would do it).
    wide = None
    for kpi_id in ids:
        table = pq.read_table(pa.BufferReader(objects.get(series_key(kpi_id)).data))
        table = table.select(["date", "value"]).rename_columns(["date", kpi_id])
        wide = table if wide is None else wide.join(table, "date", join_type="full outer")
    pq.write_table(wide.sort_by("date"), out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--days", type=int, default=1826)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv", "json"])
    parser.add_argument("--layout", default="wide", choices=["wide", "long"])
    args = parser.parse_args()
    ids = [f"bench_kpi_{i:03d}" for i in range(args.kpis)]
    with tempfile.TemporaryDirectory(prefix="bench-exports-") as tmp:
        folder = Path(tmp)
        stubs.write_registry(folder / "kpis.yaml", ids)
        objects = LocalObjectStore(folder / "data")
        started = time.perf_counter()
        stored = fill(KpiSeriesStore(objects), ids, args.days)
        print(
            f"filled {args.kpis} KPIs x {args.days} days ({stored} values) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        floor_s = floor(objects, ids, folder / "floor.parquet")
        out = folder / f"export.{args.format}"
        env = {
            **os.environ,
            "DAILY_INDEX_DATA_DIR": str(folder / "data"),
            "DAILY_INDEX_KPIS_FILE": str(folder / "kpis.yaml"),
        }
        command = [sys.executable, "-m", "daily_index.cli", "export", "--format", args.format]
        started = time.perf_counter()
        result = subprocess.run(  # noqa: S603 - our own CLI
            [*command, "--layout", args.layout, "-o", str(out)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        ours = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"export failed:\n{result.stdout}\n{result.stderr}")
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = out.stat().st_size / 1e6
        if args.format == "parquet":
            table = pq.read_table(out)
            if args.layout == "long":
                values = len(table)
            else:
                values = sum(len(table) - table[c].null_count for c in table.column_names[1:])
            assert values == stored, (values, stored)  # noqa: S101
    print(f"\nexport of {args.kpis} KPIs x {args.days} days ({args.format}, {args.layout})")
    print(f"  floor (pyarrow read + join + write) {floor_s:6.2f} s")
    print(f"  ours (the CLI, Python start incl.)  {ours:6.2f} s   (target under 10 s)")
    print(f"  ours / floor                         {ours / floor_s:6.2f}x")
    print(f"  peak RSS of the CLI                  {rss_mb:6.0f} MB  (target under 1,024 MB)")
    print(f"  file                                 {size_mb:6.2f} MB")


if __name__ == "__main__":
    main()
