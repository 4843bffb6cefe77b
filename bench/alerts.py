"""Benchmark of kpi_alert_sensor: one tick over N new KPI materialisations.

On a fresh SQLite-backed Dagster instance (temporary DAGSTER_HOME) and a local store holding
120 days of history per KPI, each KPI with four rules (crossing with hysteresis, 1-day
change, z-score over 90 changes, no data):
  one-day     N KPIs land one day; one tick reads them, judges them, sends the digest
  idle        the next tick, with nothing new
  three-days  a fresh instance: N KPIs x 3 days land between two ticks; one tick
  reset       the same tick again with the cursor lost (everything re-read, nothing resent)
Prints wall time per tick (target: under 1 s), events read, alerts and peak RSS.

Usage: python bench/alerts.py [--kpis 200]
"""

import argparse
import json
import random
import resource
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from daily_index.defs.alerts import KpiCursor, build_kpi_alert_sensor
from daily_index.defs.automation import FaninSettings
from daily_index.defs.resources import AlertsResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index.storage.series import KpiSeriesStore, SeriesRow

DAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
HISTORY_DAYS = 120


def make_kpis(n: int) -> list[KpiSpec]:
    return [
        KpiSpec.model_validate(
            {
                "id": f"bench_kpi_{i:03d}",
                "name": f"Bench KPI {i}",
                "description": "Synthetic KPI for the benchmark.",
                "type": "price",
                "unit": "USD",
                "source": {"kind": "n8n", "params": {"webhook": f"kpi/bench-{i}"}},
                "metadata": {"source": "stub", "category": f"bench_{i % 8}"},
                "alerts": [
                    {"kind": "crossing", "threshold": 100.0, "hysteresis": 2.0},
                    {"kind": "change", "days": 1, "threshold": 3},
                    {"kind": "zscore", "threshold": 3, "window": 90},
                    {"kind": "no_data"},
                ],
            }
        )
        for i in range(n)
    ]


def preload(store: KpiSeriesStore, kpis: list[KpiSpec], last: date) -> dict[str, list[float]]:
    """A random walk around 100 per KPI up to `last`; returns the values by KPI."""
    rng = random.Random(7)
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    walks = {}
    for kpi in kpis:
        value, values = 100.0, []
        for _ in range(HISTORY_DAYS):
            value *= 1 + rng.gauss(0, 0.015)
            values.append(value)
        days = [last - timedelta(days=HISTORY_DAYS - 1 - n) for n in range(HISTORY_DAYS)]
        store.upsert(
            kpi.id,
            [SeriesRow(d, v, "USD", "stub", stamp, "t") for d, v in zip(days, values, strict=True)],
        )
        walks[kpi.id] = values
    return walks


def land(instance: dg.DagsterInstance, kpis: list[KpiSpec], days: list[date]) -> float:
    started = time.perf_counter()
    for day in days:
        for kpi in kpis:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey(["kpi", kpi.id]), partition=day.isoformat())
            )
    return time.perf_counter() - started


class Bench:
    def __init__(self, root: Path, kpis: list[KpiSpec]) -> None:
        (root / "home").mkdir(parents=True)
        self.instance = dg.DagsterInstance.local_temp(str(root / "home"))
        self.storage = StorageResource(local_dir=str(root / "store"))
        self.resources = {
            "alerts": AlertsResource(outbox_dir=str(root / "outbox")),
            "storage": self.storage,
        }
        self.sensor = build_kpi_alert_sensor(
            kpis=kpis, deadline=FaninSettings().deadline, clock=lambda: NOW
        )
        self.cursor: str | None = None
        self.outbox = root / "outbox" / "alerts"

    def tick(self, cursor: str | None = "keep") -> tuple[float, str]:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor if cursor == "keep" else cursor,
            resources=self.resources,
        )
        started = time.perf_counter()
        result = self.sensor(context)
        wall = time.perf_counter() - started
        self.cursor = result.cursor
        return wall, result.skip_reason.skip_message if result.skip_reason else ""

    def alerts_sent(self) -> int:
        entries = json.loads(self.storage.get_store().read_bytes("alerts/ledger.json") or b"{}")
        return len(entries.get("entries", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    args = parser.parse_args()
    kpis = make_kpis(args.kpis)
    print(f"{args.kpis} KPIs x 4 rules, {HISTORY_DAYS} days of history each, SQLite instance")

    def report(name: str, wall: float, said: str, bench: Bench, before: int) -> None:
        new = bench.alerts_sent() - before
        print(f"  {name:<11} {wall:>6.2f} s  {new:>4} alerts recorded  | {said}")

    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        # Steady state: the two days before landed and were judged by an earlier tick.
        bench = Bench(Path(tmp) / "one", kpis)
        preload(bench.storage.get_series(), kpis, DAY)
        land(bench.instance, kpis, [DAY - timedelta(days=2), DAY - timedelta(days=1)])
        bench.tick()
        before = bench.alerts_sent()
        landing = land(bench.instance, kpis, [DAY])
        print(f"  (landing {args.kpis} materialisations took {landing:.1f} s, not counted)")
        report("one-day", *bench.tick(), bench, before)
        report("idle", *bench.tick(), bench, bench.alerts_sent())

        # Three days land between two ticks (the cursor saw an empty log).
        bench = Bench(Path(tmp) / "three", kpis)
        preload(bench.storage.get_series(), kpis, DAY)
        bench.cursor = KpiCursor(storage_id=0).to_json()
        days = [DAY - timedelta(days=2), DAY - timedelta(days=1), DAY]
        landing = land(bench.instance, kpis, days)
        print(f"  (landing {3 * args.kpis} materialisations took {landing:.1f} s, not counted)")
        report("three-days", *bench.tick(), bench, 0)
        report("reset", *bench.tick(cursor=None), bench, bench.alerts_sent())
        digests = len(list(bench.outbox.glob("*.json")))
        print(f"  digests written to the outbox (three-days instance): {digests}")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
