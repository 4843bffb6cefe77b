"""Benchmark of the historical analog-day search: 5 years x 200 KPIs.

Synthetic random walks (prices, index points and basis-point rates) with a twin of the last
day planted 400 days earlier. Measures, from the histories in memory (as `report/evidence`
has them after reading the series): building the matrix of standardised changes, then the
search for the 5 most similar days and what followed them for 6 KPIs. Target: under 1 s.
Prints a floor too, measured in the same run: one pandas rolling std over the same
days x KPIs matrix (the least any per-day σ of every KPI costs), so the figure reads as a
ratio on a loaded machine.

Usage: python bench/analogs.py [--kpis 200] [--years 5]
"""

import argparse
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from daily_index.analogs import build_history, find_analogs
from daily_index.registry import KpiSpec

END = date(2026, 11, 24)
TWIN_DAYS_BEFORE = 400


def make(kpis: int, days: int) -> tuple[list[KpiSpec], dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(5)
    kinds = [{"type": "price"}, {"type": "index"}, {"type": "rate", "changeUnit": "bp"}]
    specs = [
        KpiSpec.model_validate(
            {
                "id": f"bench_{n:03d}",
                "name": f"Bench {n}",
                "description": "Synthetic.",
                "unit": "USD",
                "source": {"kind": "n8n"},
                "metadata": {"source": "stub", "category": "bench"},
                **{"type": "index", **kinds[n % 3]},
            }
        )
        for n in range(kpis)
    ]
    changes = rng.normal(0, 1, (days, kpis)) * rng.uniform(0.5, 3, kpis)
    changes[-1] *= 3
    changes[-1 - TWIN_DAYS_BEFORE] = changes[-1]
    dates = [END - timedelta(days=days - 1 - i) for i in range(days)]
    histories = {}
    for column, spec in enumerate(specs):
        c = changes[:, column]
        if spec.change_unit == "pct":
            values = 100 * np.cumprod(1 + c / 100)
        else:
            values = 100 + np.cumsum(c) / (100 if spec.change_unit == "bp" else 1)
        histories[spec.id] = pd.DataFrame({"date": dates, "value": values})
    return specs, histories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--years", type=int, default=5)
    args = parser.parse_args()
    days = args.years * 365 + 1
    specs, histories = make(args.kpis, days)

    started = time.perf_counter()
    matrix = build_history(specs, histories, END)
    built = time.perf_counter()
    assert matrix is not None
    found = find_analogs(matrix, END, follow=[s.id for s in specs[:6]])
    searched = time.perf_counter()

    floor_started = time.perf_counter()
    pd.DataFrame(matrix.level).diff().rolling(90, min_periods=10).std()
    floor = time.perf_counter() - floor_started

    twin = END - timedelta(days=TWIN_DAYS_BEFORE)
    total = searched - started
    print(f"{args.kpis} KPIs x {days} days ({args.years} years)")
    print(f"  build matrix     {built - started:.3f} s")
    print(f"  search + follow  {searched - built:.3f} s")
    print(f"  total            {total:.3f} s (target < 1 s) -> {'OK' if total < 1 else 'MISSED'}")
    print(
        f"  floor            {floor:.3f} s (one rolling std over the matrix); "
        f"total = {total / floor:.1f} x floor"
    )
    print(
        f"  best analog      {found.days[0].day} (similarity {found.days[0].similarity:.3f}); "
        f"planted twin {twin}: {'first' if found.days[0].day == twin else 'NOT first'}"
    )


if __name__ == "__main__":
    main()
