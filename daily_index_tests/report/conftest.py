"""Builders for day tables with synthetic data, shared by the chart and PDF tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from daily_index.registry import KpiSpec
from daily_index.report.model import DayTable, KpiRow, build_row

DAY = date(2025, 6, 30)
GENERATED_AT = datetime(2025, 6, 30, 12, 5, tzinfo=UTC)

# (id, name, unit, chart type, thresholds, category, level)
SAMPLE_KPIS: list[tuple[str, str, str, str, dict[str, float], str, float]] = [
    (
        "btc_price",
        "Bitcoin price",
        "USD",
        "line",
        {"high": 150000, "low": 50000},
        "crypto_prices",
        67_432.1,
    ),
    (
        "eth_price",
        "Ether price",
        "USD",
        "line",
        {"high": 6000, "low": 1500},
        "crypto_prices",
        3_412.5,
    ),
    ("eth_btc_ratio", "ETH/BTC ratio", "BTC", "line", {"low": 0.02}, "crypto_prices", 0.0512),
    (
        "btc_dominance",
        "Bitcoin dominance",
        "%",
        "area",
        {"high": 65, "low": 40},
        "crypto_market",
        54.2,
    ),
    ("eth_dominance", "Ether dominance", "%", "area", {}, "crypto_market", 17.8),
    (
        "fear_greed",
        "Fear & Greed index",
        "points",
        "bar",
        {"high": 80, "low": 20},
        "sentiment",
        72.0,
    ),
    (
        "btc_funding",
        "BTC funding rate",
        "%",
        "bar",
        {"high": 0.05, "low": -0.02},
        "derivatives",
        0.01,
    ),
    ("stablecoin_supply", "Stablecoin supply", "USD", "area", {}, "stablecoins", 160_000_000_000.0),
    ("us10y", "US 10-year yield", "%", "line", {"high": 5.0, "low": 3.0}, "macro", 4.3),
    ("dxy", "US dollar index", "points", "line", {}, "macro", 104.2),
]


# The registry fields that decide how a sample KPI's changes read (default: an index).
SAMPLE_TYPES: dict[str, dict[str, str]] = {
    "btc_price": {"type": "price"},
    "eth_price": {"type": "price"},
    "eth_btc_ratio": {"type": "ratio"},
    "btc_dominance": {"type": "dominance"},
    "eth_dominance": {"type": "dominance"},
    "btc_funding": {"type": "rate", "changeUnit": "bp"},
    "stablecoin_supply": {"type": "supply"},
    "us10y": {"type": "yield", "calendar": "business_days"},
}


def make_spec(
    kpi_id: str,
    name: str,
    unit: str = "USD",
    chart_type: str = "line",
    thresholds: dict[str, float] | None = None,
    category: str = "crypto_prices",
) -> KpiSpec:
    return KpiSpec.model_validate(
        {
            "id": kpi_id,
            "name": name,
            "description": f"Synthetic test KPI {name}.",
            "type": "index",
            "unit": unit,
            "source": {"kind": "n8n"},
            "analysisConfig": {"chartType": chart_type, "alertThresholds": thresholds or {}},
            "metadata": {"source": "Test source", "category": category},
            **SAMPLE_TYPES.get(kpi_id, {}),
        }
    )


def history_frame(
    level: float, *, days: int = 120, gaps: tuple[int, ...] = (), seed: int = 1, end: date = DAY
) -> pd.DataFrame:
    """A random walk around `level` ending on `end`; `gaps` are days-before-end left out."""
    rng = np.random.default_rng(seed)
    values = level * np.exp(np.cumsum(rng.normal(0, 0.01, days))[::-1] * -1)
    values = values / values[-1] * level  # the last day is exactly `level`
    dates = [end - timedelta(days=days - 1 - i) for i in range(days)]
    keep = [(end - d).days not in gaps for d in dates]
    return pd.DataFrame(
        {
            "date": [d for d, k in zip(dates, keep, strict=True) if k],
            "value": values[np.array(keep)],
        }
    )


def make_table(
    *,
    missing: dict[str, str | None] | None = None,
    empty: tuple[str, ...] = (),
    gaps: tuple[int, ...] = (5, 6, 7, 20),
    names: dict[str, str] | None = None,
    kpis: list[tuple[str, str, str, str, dict[str, float], str, float]] | None = None,
    window_days: int = 90,
    gap: dict[str, str] | None = None,
    refetch_failed: dict[str, str] | None = None,
    stale: tuple[str, ...] = (),
) -> DayTable:
    """A table of SAMPLE_KPIS (or `kpis`).

    Args:
        missing: kpi_id -> failure reason (None: just missing) for KPIs without today's value.
        empty: KPIs with no history at all.
        gaps: days-before-the-report-day without a value, for every KPI.
        names: kpi_id -> replacement display name (for escaping tests).
        kpis: Rows to use instead of SAMPLE_KPIS.
        window_days: The table's chart window.
        gap: kpi_id -> reason for KPIs with no observation expected on the day.
        refetch_failed: kpi_id -> reason for KPIs whose latest fetch failed over a value
            stored by an earlier one.
        stale: KPIs whose last five observations are the same value (a failed check).
    """
    missing = missing or {}
    gap = gap or {}
    refetch_failed = refetch_failed or {}
    names = names or {}
    rows: list[KpiRow] = []
    for index, (kpi_id, name, unit, chart, limits, category, level) in enumerate(
        kpis or SAMPLE_KPIS
    ):
        spec = make_spec(kpi_id, names.get(kpi_id, name), unit, chart, limits, category)
        if kpi_id in empty:
            history = pd.DataFrame(
                {"date": pd.Series(dtype="object"), "value": pd.Series(dtype="float64")}
            )
        else:
            without_day = kpi_id in missing or kpi_id in gap
            kpi_gaps = gaps + ((0,) if without_day else ())
            history = history_frame(level, gaps=kpi_gaps, seed=index + 1)
            if kpi_id in stale:
                history.loc[history.index[-5:], "value"] = level
        if kpi_id in gap:
            rows.append(build_row(spec, history, DAY, gap[kpi_id], fetch="gap"))
        elif kpi_id in refetch_failed:
            rows.append(build_row(spec, history, DAY, refetch_failed[kpi_id], fetch="failed"))
        else:
            rows.append(build_row(spec, history, DAY, missing.get(kpi_id)))
    return DayTable(day=DAY, rows=tuple(rows), window_days=window_days)


def make_analysis(**overrides: Any) -> dict[str, Any]:
    analysis: dict[str, Any] = {
        "headline": "Bitcoin holds above 67k as dominance edges higher",
        "summary": "Crypto markets were calm.\n\nMacro indicators were little changed.",
        "kpi_notes": [
            {"kpi_id": "btc_price", "note": "Bitcoin traded in a narrow range."},
            {"kpi_id": "fear_greed", "note": "Sentiment stays in greed territory."},
        ],
        "risks": ["Thin weekend liquidity.", "Funding rates could reset quickly."],
        "outlook": "Range-bound trading is the base case for the coming week.",
        "analyst": "rule-based",
        "analyst_label": "Rule-based analyst (no LLM configured)",
    }
    analysis.update(overrides)
    return analysis


@pytest.fixture
def table() -> DayTable:
    return make_table()


@pytest.fixture
def partial_table() -> DayTable:
    return make_table(
        missing={"eth_price": "n8n webhook timed out after 30 s", "dxy": None},
        empty=("stablecoin_supply",),
    )
