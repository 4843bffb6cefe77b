"""Benchmark of the KPI step: N KPIs against a local stub with L ms latency.

Runs, in one go and each in its own process (so peak RSS is its own) on a fresh
SQLite-backed Dagster instance:
  floor         one step yielding N materialisations that fetch and store nothing
  floor-checks  the same step also yielding the N check results the real step yields
  ours          the real KPI multi-asset (concurrent fetch, Parquet upsert over 90 stored
                days, one quality check per KPI), local storage
  ours-s3       the same against an S3-compatible server on 127.0.0.1 (moto server mode)
  naive         N single-asset steps, each fetching and storing its KPI
and `dagster definitions validate` on an N-KPI registry. Prints wall times, ratios to the
floors and peak RSS; `ours / floor-checks` is the figure the checks target (1.15x) is about.

Usage: python bench/kpis.py [--kpis 200] [--latency-ms 50] [--skip naive]
"""

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import stubs

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"


def _stub_value(kpi_id: str) -> float:
    return 100.0 + len(kpi_id)


def start_stub(latency_ms: float) -> tuple[multiprocessing.Process, str]:
    """The n8n stub in a child process, as a remote API would be.

    In this process it would compete with the measured run for the GIL.
    """
    context = multiprocessing.get_context("fork")
    ports = context.Queue()
    child = context.Process(
        target=stubs.n8n_child, args=(latency_ms, _stub_value, ports), daemon=True
    )
    child.start()
    return child, f"http://127.0.0.1:{ports.get(timeout=30)}"


def write_registry(path: Path, n: int) -> None:
    lines = ["version: 1", "kpis:"]
    for i in range(n):
        lines += [
            f"  - id: bench_kpi_{i:03d}",
            f"    name: Bench KPI {i}",
            "    description: Synthetic KPI for the benchmark.",
            "    type: price",
            "    unit: USD",
            f"    source: {{kind: n8n, params: {{webhook: kpi/bench-{i}}}}}",
            f"    metadata: {{source: stub, category: bench_{i % 8}}}",
        ]
    path.write_text("\n".join(lines) + "\n")


def preload_history(storage, kpis, days: int = 90) -> None:
    """90 stored days before DAY per KPI, so the upsert and the checks see a real series."""
    import datetime as dt

    from daily_index.storage.series import SeriesRow

    series = storage.get_series()
    end = dt.date.fromisoformat(DAY)
    now = dt.datetime.now(dt.UTC)
    for kpi in kpis:
        rows = [
            SeriesRow(
                end - dt.timedelta(days=n),
                _stub_value(kpi.id) * (1 + 0.01 * ((n * 7) % 5 - 2)),
                "USD",
                "stub",
                now,
                f"preload-{n}",
            )
            for n in range(1, days + 1)
        ]
        series.upsert(kpi.id, rows)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scenario(name: str, n: int, latency_ms: float, workdir: Path) -> dict:
    """Run one scenario in this process; returns its figures."""
    import dagster as dg

    from daily_index.defs.kpis import build_kpi_assets
    from daily_index.defs.partitions import daily_partitions
    from daily_index.defs.resources import KpiSourcesResource, StorageResource
    from daily_index.registry import load_registry

    registry_file = workdir / "kpis.yaml"
    kpis = load_registry(registry_file).enabled({})
    stub, url = start_stub(latency_ms)
    sources = KpiSourcesResource(n8n_base_url=url, timeout_s=10)
    storage = StorageResource(backend="local", local_dir=str(workdir / f"store-{name}"))
    moto = None
    if name == "ours-s3":
        import boto3

        # moto in its own process, as R2 is: in this one it would compete for the GIL.
        port = stubs.free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stubs.wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket="bench")
        storage = StorageResource(
            backend="s3",
            bucket="bench",
            endpoint_url=endpoint,
            region_name="us-east-1",
            access_key_id="bench",
            secret_access_key="bench",
        )

    if name in ("floor", "floor-checks"):
        from daily_index.defs.kpis import _check_specs

        specs = [dg.AssetSpec(["kpi", k.id], skippable=True) for k in kpis]
        with_checks = name == "floor-checks"
        check_specs = [c for k in kpis for c in _check_specs(k)] if with_checks else None

        @dg.multi_asset(
            name="kpis",
            specs=specs,
            check_specs=check_specs,
            partitions_def=daily_partitions,
            can_subset=True,
        )
        def floor(context: dg.AssetExecutionContext):
            for key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)
            if with_checks:
                # The same events the real one-day step yields: one result per KPI.
                for key in context.selected_asset_keys:
                    yield dg.AssetCheckResult(
                        asset_key=key,
                        check_name="quality",
                        passed=True,
                        description="all checks passed",
                        metadata={"present": "pass", "failed_rules": "none"},
                    )

        assets = [floor]
    elif name == "naive":
        from daily_index.contract import partition_timestamp
        from daily_index.sources import fetch_all
        from daily_index.sources.base import FetchRequest
        from daily_index.storage.series import SeriesRow

        def one(kpi):
            @dg.asset(key=["kpi", kpi.id], partitions_def=daily_partitions)
            def single(context: dg.AssetExecutionContext, storage: StorageResource):
                import datetime as dt

                day = dt.date.fromisoformat(context.partition_key)
                request = FetchRequest(kpi, day, day, f"trace-{kpi.id}", partition_timestamp(day))
                outcome = fetch_all([request], sources.settings())[0]
                update = outcome.update
                storage.get_series().upsert(
                    kpi.id,
                    [
                        SeriesRow(
                            day,
                            update.value,
                            update.unit,
                            update.source,
                            dt.datetime.now(dt.UTC),
                            update.trace_id,
                        )
                    ],
                )
                return dg.MaterializeResult(metadata={"value": update.value})

            return single

        assets = [one(k) for k in kpis]
    else:
        assets = [build_kpi_assets(kpis=kpis)]
        preload_history(storage, kpis)

    with tempfile.TemporaryDirectory() as home:
        instance = dg.DagsterInstance.local_temp(home)
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            instance=instance,
            partition_key=DAY,
            resources={"sources": sources, "storage": storage},
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
        events = len(instance.get_records_for_run(result.run_id, limit=100000).records)
    stub.terminate()
    if moto is not None:
        moto.terminate()
        moto.wait(timeout=10)
    return {
        "scenario": name,
        "wall_s": round(wall, 2),
        "success": result.success,
        "materialised": len(result.get_asset_materialization_events()),
        "checks": len(result.get_asset_check_evaluations()),
        "events": events,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def time_validate(workdir: Path) -> float:
    env = {**os.environ, "DAILY_INDEX_KPIS_FILE": str(workdir / "kpis.yaml")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="scenario to skip (floor, floor-checks, ours, ours-s3, naive, validate)",
    )
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.scenario:
        figures = scenario(args.scenario, args.kpis, args.latency_ms, Path(args.workdir))
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="bench-kpis-") as tmp:
        workdir = Path(tmp)
        write_registry(workdir / "kpis.yaml", args.kpis)
        print(
            f"{args.kpis} KPIs, {args.latency_ms:g} ms stub latency, SQLite instance, "
            f"partition {DAY}"
        )
        results = {}
        for name in ("floor", "floor-checks", "ours", "ours-s3", "naive"):
            if name in args.skip:
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--scenario",
                    name,
                    "--kpis",
                    str(args.kpis),
                    "--latency-ms",
                    str(args.latency_ms),
                    "--workdir",
                    str(workdir),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[name]
            print(
                f"  {name:<12} {r['wall_s']:>7.2f} s  {r['materialised']:>4} materialised  "
                f"{r['checks']:>4} checks  {r['events']:>6} events  "
                f"peak RSS {r['peak_rss_mb']:.0f} MB" + ("" if r["success"] else "  (RUN FAILED)"),
                flush=True,
            )
        floor = results.get("floor", {}).get("wall_s")
        if floor:
            for name in ("floor-checks", "ours", "ours-s3", "naive"):
                if name in results:
                    print(f"  {name} / floor = {results[name]['wall_s'] / floor:.2f}x")
        floor_checks = results.get("floor-checks", {}).get("wall_s")
        if floor_checks:
            for name in ("ours", "ours-s3"):
                if name in results:
                    ratio = results[name]["wall_s"] / floor_checks
                    print(f"  {name} / floor-checks = {ratio:.2f}x (target <= 1.15x)")
        if floor and floor_checks and "ours" in results:
            share = (floor_checks - floor) / results["ours"]["wall_s"]
            print(f"  share of the day the checks add: (floor-checks - floor) / ours = {share:.0%}")
        if "ours" in results and "naive" in results:
            print(f"  naive / ours = {results['naive']['wall_s'] / results['ours']['wall_s']:.2f}x")
        if "validate" not in args.skip:
            print(
                f"  dagster definitions validate ({args.kpis} KPIs): {time_validate(workdir):.2f} s"
            )


if __name__ == "__main__":
    main()
