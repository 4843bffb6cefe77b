"""Historical analog days on synthetic history with a planted twin day."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from daily_index.analogs import Analogs, analog_days, build_history, standardised_changes
from daily_index.registry import KpiSpec
from daily_index.report.model import move_zscore

END = date(2025, 6, 30)
DAYS = 400
KPIS = 40
TWIN = 150
"""Days before END of the planted twin."""
DECOY = 60
"""Days before END of a day that matches today on only a few KPIs."""


def spec(kpi_id: str, kind: str) -> KpiSpec:
    extra = {"price": {"type": "price"}, "rate": {"type": "rate", "changeUnit": "bp"}}
    return KpiSpec.model_validate(
        {
            "id": kpi_id,
            "name": kpi_id.replace("_", " "),
            "description": "Synthetic.",
            "type": "index",
            "unit": "USD",
            "source": {"kind": "n8n"},
            "metadata": {"source": "test", "category": "test"},
            **extra.get(kind, {}),
        }
    )


def levels(changes: np.ndarray, unit: str, start: float) -> np.ndarray:
    if unit == "pct":
        return start * np.cumprod(1 + changes / 100.0)
    if unit == "bp":
        return start + np.cumsum(changes) / 100.0
    return start + np.cumsum(changes)


def synthetic(seed: int = 7) -> tuple[list[KpiSpec], dict[str, pd.DataFrame], np.ndarray]:
    """KPIs of three change units; today's moves are large, the twin repeats them."""
    rng = np.random.default_rng(seed)
    kinds = ["price", "index", "rate"]
    specs = [spec(f"kpi_{n:02d}", kinds[n % 3]) for n in range(KPIS)]
    sigma = rng.uniform(0.5, 3.0, KPIS)
    changes = rng.normal(0.0, 1.0, (DAYS, KPIS)) * sigma
    changes[-1] = rng.choice([-1, 1], KPIS) * rng.uniform(2.0, 4.0, KPIS) * sigma
    changes[-1 - TWIN] = changes[-1] * rng.uniform(0.8, 1.2, KPIS)
    # The decoy matches today exactly on 8 KPIs; the others have no observation that day.
    changes[-1 - DECOY, :8] = changes[-1, :8]
    days = [END - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    histories = {}
    for column, kpi in enumerate(specs):
        values = levels(changes[:, column], kpi.change_unit, 100.0 + column)
        keep = np.ones(DAYS, dtype=bool)
        if column >= 8:
            keep[-1 - DECOY] = False
        histories[kpi.id] = pd.DataFrame(
            {"date": [d for d, k in zip(days, keep, strict=True) if k], "value": values[keep]}
        )
    return specs, histories, changes


@pytest.fixture(scope="module")
def history():
    return synthetic()


def test_the_planted_twin_comes_first_and_the_low_overlap_decoy_is_skipped(history):
    specs, histories, _ = history
    found = analog_days(specs, histories, END, k=5)

    assert found.reason is None
    assert found.kpis_today == KPIS
    assert [d.day for d in found.days][0] == END - timedelta(days=TWIN)
    assert found.days[0].similarity > 0.9
    assert found.days[0].overlap == KPIS
    assert found.days[1].similarity < found.days[0].similarity - 0.3
    assert END - timedelta(days=DECOY) not in [d.day for d in found.days]
    assert len(found.days) == 5
    assert all(d.day < END for d in found.days)
    sims = [d.similarity for d in found.days]
    assert sims == sorted(sims, reverse=True)


def test_what_followed_the_twin_is_its_own_next_7_and_30_days(history):
    specs, histories, _ = history
    found = analog_days(specs, histories, END, k=1, follow=["kpi_00", "kpi_01", "kpi_02"])

    twin = END - timedelta(days=TWIN)
    by_key = {(f.kpi_id, f.horizon): f for f in found.followed}
    for kpi_id in ("kpi_00", "kpi_01", "kpi_02"):
        frame = histories[kpi_id].set_index("date")["value"]
        unit = next(s.change_unit for s in specs if s.id == kpi_id)
        for horizon in (7, 30):
            before, after = frame[twin], frame[twin + timedelta(days=horizon)]
            expected = {
                "pct": (after - before) / abs(before) * 100,
                "bp": (after - before) * 100,
                "points": after - before,
            }[unit]
            followed = by_key[(kpi_id, horizon)]
            assert followed.count == 1
            assert followed.unit == unit
            assert followed.median == pytest.approx(expected, abs=1e-5)
            assert followed.low == followed.high == followed.median


def test_a_recent_analog_counts_only_for_horizons_that_have_passed(history):
    specs, histories, changes = history
    # Today's picture repeated 10 days ago as well: its 30 days have not passed yet.
    recent = END - timedelta(days=10)
    moved = {}
    for column, kpi in enumerate(specs):
        c = changes[:, column].copy()
        c[-11] = c[-1]
        values = levels(c, kpi.change_unit, 100.0 + column)
        # Every day present (the decoy's missing KPIs are irrelevant here).
        days = [END - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
        moved[kpi.id] = pd.DataFrame({"date": days, "value": values})
    found = analog_days(specs, moved, END, k=2, follow=["kpi_00"])
    assert recent in [d.day for d in found.days]
    by_horizon = {f.horizon: f for f in found.followed}
    assert by_horizon[7].count == 2
    assert by_horizon[30].count == 1


def test_the_standardised_change_is_the_reports_sigma():
    rng = np.random.default_rng(3)
    for unit in ("pct", "pp", "bp", "points"):
        values = 50 + np.cumsum(rng.normal(0, 1, 150))
        values[100:110] = values[99]  # a still stretch: the move scale's median floor
        assert standardised_changes(values, unit)[-1] == pytest.approx(move_zscore(values, unit))


def test_too_few_kpis_or_no_history_give_a_reason(history):
    specs, histories, _ = history
    two = analog_days(specs[:2], {s.id: histories[s.id] for s in specs[:2]}, END)
    assert two.days == []
    assert "only 2 KPI(s)" in (two.reason or "")
    empty = analog_days(specs, {}, END)
    assert empty.reason == "no stored KPI history"
    short = {s.id: histories[s.id].tail(5) for s in specs}
    assert analog_days(specs, short, END).days == []


def test_analogs_survive_json(history):
    specs, histories, _ = history
    found = analog_days(specs, histories, END, follow=["kpi_03"])
    assert Analogs.from_dict(found.to_dict()) == found


def test_the_matrix_is_calendar_days_by_kpi(history):
    specs, histories, _ = history
    matrix = build_history(specs, histories, END)
    assert matrix is not None
    assert matrix.z.shape == (DAYS, KPIS)
    assert matrix.days[-1] == END
    # The decoy day has no observation for most KPIs: NaN there, the last value carried
    # in `level` for what-followed arithmetic.
    row = matrix.index_of(END - timedelta(days=DECOY))
    assert np.isnan(matrix.z[row, 8:]).all()
    assert np.isfinite(matrix.level[row]).all()
