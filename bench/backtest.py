"""Benchmark of `daily-index alerts backtest`: 200 rules over 5 years of stored history.

A local store gets N KPIs of 5 years (1,826 days) of a seeded random walk each, some days
missing; each KPI carries four rules (crossing with hysteresis and a cooldown, a 1-day
change, a z-score over 90 changes, a 7-day change going down), so 50 KPIs give 200 rules.
The backtest reads every series from the store and replays every rule (target: under 10 s).

For scale, the same rules judged the plain way (`rules.evaluate_day` on every day with the
series up to it) are timed on a few rules and extrapolated, and the two must agree on every
firing of those rules.

Usage: python bench/backtest.py [--kpis 50] [--days 1826]
"""

import argparse
import os
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta

from daily_index.alerts.backtest import backtest
from daily_index.alerts.engine import read_points
from daily_index.alerts.rules import evaluate_day
from daily_index.registry import KpiSpec
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow

LAST_DAY = date(2026, 11, 30)
PLAIN_RULES = 4
"""Rules timed the plain way (each takes seconds)."""


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
                "metadata": {"source": "stub", "category": "bench"},
                "alerts": [
                    {"kind": "crossing", "threshold": 100.0, "hysteresis": 3.0, "cooldownDays": 5},
                    {"kind": "change", "days": 1, "threshold": 5},
                    {"kind": "zscore", "threshold": 3},
                    {"kind": "change", "days": 7, "threshold": 10, "direction": "down"},
                ],
            }
        )
        for i in range(n)
    ]


def store_history(series: KpiSeriesStore, kpis: list[KpiSpec], days: int) -> None:
    rng = random.Random(20261130)
    stamp = datetime(2026, 12, 1, tzinfo=UTC)
    for kpi in kpis:
        value, rows = 100.0, []
        for n in range(days):
            value = max(1.0, value * (1 + rng.gauss(0, 0.025)) + (100 - value) * 0.01)
            if rng.random() < 0.02:
                continue  # a day the source missed
            day = LAST_DAY - timedelta(days=days - 1 - n)
            rows.append(SeriesRow(day, value, "USD", "bench", stamp, "bench"))
        series.upsert(kpi.id, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=50, help="KPIs (four rules each)")
    parser.add_argument("--days", type=int, default=1826, help="days of history")
    args = parser.parse_args()
    kpis = make_kpis(args.kpis)
    rules = sum(len(k.alerts) for k in kpis)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as folder:
        series = KpiSeriesStore(LocalObjectStore(folder))
        store_history(series, kpis, args.days)

        started = time.perf_counter()
        for kpi in kpis:
            read_points(series, kpi.id)
        read_s = time.perf_counter() - started

        started, cpu = time.perf_counter(), time.process_time()
        results = backtest(kpis, lambda kpi_id: read_points(series, kpi_id))
        backtest_s = time.perf_counter() - started
        backtest_cpu = time.process_time() - cpu

        # The plain way on the first KPI's rules: every day, the whole series up to it.
        plain_s, plain_agree = 0.0, True
        points = read_points(series, kpis[0].id)
        for result in results[:PLAIN_RULES]:
            one = kpis[0].model_copy(update={"alerts": (result.rule,)})
            started = time.perf_counter()
            fired = []
            for day, _ in points:
                fired += evaluate_day(one, day, points, deadline_passed=False)
            plain_s += time.perf_counter() - started
            got = sorted(f.day for f in result.fired + result.held_back)
            plain_agree &= got == [a.day for a in fired]

    fired = sum(len(r.fired) for r in results)
    held = sum(len(r.held_back) for r in results)
    plain_total = plain_s / PLAIN_RULES * rules
    print(
        f"{rules} rules over {args.days} days ({args.kpis} KPIs, "
        f"{sum(r.observations for r in results) // len(results)} observations per rule)"
    )
    print(f"  read every series once:  {read_s:6.2f} s")
    print(
        f"  backtest (read + replay): {backtest_s:6.2f} s  (target < 10 s; "
        f"CPU {backtest_cpu:.2f} s, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"  firings {fired}, held back by cooldowns {held}")
    print(
        f"  plain replay of {PLAIN_RULES} rules: {plain_s:6.2f} s -> about {plain_total:,.0f} s "
        f"for all {rules} ({plain_total / backtest_s:,.0f}x the backtest); "
        f"same firings: {plain_agree}"
    )


if __name__ == "__main__":
    main()
