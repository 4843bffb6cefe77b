"""The quality check's verdicts, as pure functions."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from daily_index.checks import evaluate
from daily_index_tests.sources.support import spec

DAY = date(2026, 11, 30)


def history(values: list[float]) -> pd.DataFrame:
    days = [DAY - timedelta(days=len(values) - n) for n in range(len(values))]
    return pd.DataFrame({"date": days, "value": values})


def wiggle(n: int, level: float = 100.0, step: float = 1.0) -> list[float]:
    rng = np.random.default_rng(7)
    return list(level + np.cumsum(rng.normal(0, step, n)))


def verdict(outcome, rule: str):
    return next(v for v in outcome.verdicts if v.rule == rule)


def test_a_normal_day_passes_every_rule():
    past = wiggle(40)
    outcome = evaluate(spec("btc_price"), DAY, past[-1] + 0.5, history(past), status="ok")
    assert outcome.passed, outcome.summary()
    assert [v.rule for v in outcome.verdicts] == ["present", "finite", "range", "stale", "jump"]


def test_an_expected_gap_passes_and_says_why():
    outcome = evaluate(
        spec("us_10y_yield"), DAY, None, None, status="gap", reason="weekend (saturday)"
    )
    assert outcome.passed and "expected gap: weekend" in outcome.verdicts[0].detail


def test_a_failed_fetch_without_a_value_fails_with_its_reason():
    outcome = evaluate(spec("btc_price"), DAY, None, None, status="failed", reason="HTTP 500")
    assert not outcome.passed and outcome.severity == "ERROR"
    assert "HTTP 500" in outcome.summary()


@pytest.mark.parametrize(
    ("kpi", "value", "passed"),
    [
        ("btc_price", 0.0, False),
        ("btc_price", 1.0, True),
        ("btc_dominance", 100.5, False),
        ("btc_dominance", 55.0, True),
        ("fear_greed", 101.0, False),  # registry bounds 0-100
        ("btc_spot_volume", 0.0, True),
    ],
)
def test_range_by_type_and_registry(kpi, value, passed):
    outcome = evaluate(spec(kpi), DAY, value, None, status="ok")
    assert verdict(outcome, "range").passed is passed


def test_the_same_price_three_days_running_is_stale():
    outcome = evaluate(spec("btc_price"), DAY, 100.0, history([98.0, 100.0, 100.0]), status="ok")
    assert not verdict(outcome, "stale").passed and outcome.severity == "ERROR"
    moving = evaluate(spec("btc_price"), DAY, 100.0, history([100.0, 100.0, 99.0]), status="ok")
    assert verdict(moving, "stale").passed


def test_a_policy_rate_that_sits_still_is_not_stale():
    outcome = evaluate(spec("fed_funds_rate"), DAY, 4.33, history([4.33] * 30), status="ok")
    assert verdict(outcome, "stale").passed


def test_a_jump_is_a_warning_only():
    past = wiggle(40)
    outcome = evaluate(spec("btc_price"), DAY, past[-1] + 50, history(past), status="ok")
    jump = verdict(outcome, "jump")
    assert not jump.passed and "σ" in jump.detail
    assert not outcome.passed and outcome.severity == "WARN"


def test_a_non_finite_value_fails():
    outcome = evaluate(spec("btc_price"), DAY, float("nan"), None, status="ok")
    assert not verdict(outcome, "finite").passed


def test_a_series_that_mostly_sits_still_keeps_its_smallest_step_usual():
    from daily_index.checks import move_scale

    changes = np.array([0.0] * 85 + [0.01, -0.01, 0.01, 0.01, -0.01])
    assert move_scale(changes) == pytest.approx(0.01)
    moving = np.random.default_rng(3).normal(0, 1, 90)
    assert move_scale(moving) == pytest.approx(np.std(moving, ddof=1))
