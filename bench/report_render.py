"""Time the report renderers on a synthetic 200-KPI x 90-day table.

    python bench/report_render.py [--kpis 200] [--days 90] [--workers 2] [--out DIR]

Prints wall times for the charts and the PDF, the page count and size, and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from daily_index.registry import KpiSpec
from daily_index.report.charts import render_charts
from daily_index.report.model import DayTable, build_row
from daily_index.report.pdf import render_pdf

CATEGORIES = ("crypto_prices", "crypto_market", "derivatives", "stablecoins", "macro")
UNITS = ("USD", "%", "BTC", "points", "")
CHART_TYPES = ("line", "bar", "area")


def synthetic_table(kpis: int, days: int, day: date, seed: int = 7) -> DayTable:
    """KPIs with random walks, some gaps, a few missing today and one with no data."""
    rng = np.random.default_rng(seed)
    dates = [day - timedelta(days=d) for d in range(days + 30 - 1, -1, -1)]
    rows = []
    for i in range(kpis):
        spec = KpiSpec.model_validate(
            {
                "id": f"kpi_{i:03d}",
                "name": f"Synthetic indicator {i:03d}",
                "description": "Synthetic benchmark KPI.",
                "type": "index",
                "unit": UNITS[i % len(UNITS)],
                "source": {"kind": "n8n"},
                "analysisConfig": {
                    "chartType": CHART_TYPES[i % len(CHART_TYPES)],
                    "alertThresholds": {"high": 130.0} if i % 4 == 0 else {},
                },
                "metadata": {"source": "bench", "category": CATEGORIES[i % len(CATEGORIES)]},
            }
        )
        values = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(dates))))
        keep = rng.random(len(dates)) > 0.05
        if i % 25 == 3:
            keep[-1] = False
        if i == kpis - 1:
            keep[:] = False
        history = pd.DataFrame(
            {"date": [d for d, k in zip(dates, keep, strict=True) if k], "value": values[keep]}
        )
        reason = "n8n webhook timed out after 30 s" if i % 50 == 3 else None
        rows.append(build_row(spec, history, day, reason))
    return DayTable(day=day, rows=tuple(rows), window_days=days)


def synthetic_analysis(table: DayTable) -> dict:
    return {
        "headline": "Synthetic markets drift sideways while a few indicators break out",
        "summary": "Benchmark text. " * 40,
        "kpi_notes": [
            {"kpi_id": r.kpi_id, "note": f"{r.spec.name} moved on the day. " * 3}
            for r in table.rows[::5]
        ],
        "risks": ["Liquidity is thin.", "Several sources were late."],
        "outlook": "Expect more of the same. " * 10,
        "analyst": "rule-based",
        "analyst_label": "Rule-based analyst (no LLM configured)",
    }


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="report-bench-"))
    day = date(2025, 6, 30)
    started = time.perf_counter()
    table = synthetic_table(args.kpis, args.days, day)
    built = time.perf_counter()
    charts = render_charts(table, out / "charts", window_days=args.days, workers=args.workers)
    charted = time.perf_counter()
    info = render_pdf(
        table=table,
        analysis=synthetic_analysis(table),
        charts=charts,
        out_path=out / "report.pdf",
        partial=not table.complete,
        generated_at=datetime.now(UTC),
        generation={"registry_version": "1", "run_id": "bench"},
    )
    done = time.perf_counter()
    png_bytes = sum(p.stat().st_size for p in charts.paths)
    own, children = peak_rss_mb()
    print(f"KPIs x days        {args.kpis} x {args.days} (workers={args.workers})")
    print(f"table build        {built - started:6.2f} s")
    print(
        f"charts             {charted - built:6.2f} s  ({len(charts)} charts + "
        f"{len(charts.overview)} sheets, {png_bytes / 1e6:.1f} MB, "
        f"{png_bytes / max(len(charts.paths), 1) / 1e3:.0f} kB avg)"
    )
    print(
        f"pdf                {done - charted:6.2f} s  ({info.pages} pages, "
        f"{info.bytes / 1e6:.1f} MB)"
    )
    print(f"peak RSS           {own:6.0f} MB (this process), {children:.0f} MB (child processes)")
    print(f"output             {info.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
