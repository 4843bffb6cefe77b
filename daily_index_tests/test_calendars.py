"""Observation calendars and expected gaps, as pure functions."""

from __future__ import annotations

from datetime import date

import pytest

from daily_index.calendars import (
    calendar_gap,
    expected_gap,
    history_gap,
    in_calendar,
    last_expected_on_or_before,
)
from daily_index_tests.sources.support import spec

FRIDAY, SATURDAY, SUNDAY, MONDAY = (date(2026, 11, d) for d in (27, 28, 29, 30))


@pytest.mark.parametrize(
    ("calendar", "day", "expected"),
    [
        ("daily", SATURDAY, True),
        ("business_days", FRIDAY, True),
        ("business_days", SATURDAY, False),
        ("business_days", SUNDAY, False),
        ({"kind": "weekly", "weekday": "friday"}, FRIDAY, True),
        ({"kind": "weekly", "weekday": "friday"}, MONDAY, False),
        ({"kind": "monthly", "day": 1}, date(2026, 12, 1), True),
        ({"kind": "monthly"}, MONDAY, False),
    ],
)
def test_in_calendar(calendar, day, expected):
    assert in_calendar(spec("us_10y_yield", calendar=calendar), day) is expected


def test_a_weekend_of_a_business_day_series_says_why():
    reason = calendar_gap(spec("us_10y_yield"), SATURDAY)
    assert reason == "no observation expected: weekend (saturday; a business-day series)"
    assert calendar_gap(spec("us_10y_yield"), MONDAY) is None


@pytest.mark.parametrize(
    ("kpi", "day", "gap"),
    [
        ("btc_dominance", MONDAY, False),  # today: /global answers
        ("btc_dominance", SUNDAY, True),  # no history at all
        ("btc_price", date(2025, 12, 1), False),  # 364 days back: within 365
        ("btc_price", date(2025, 11, 29), True),  # 366 days back
        ("fear_greed", date(2024, 1, 1), False),  # whole history
    ],
)
def test_history_limits_by_source(kpi, day, gap):
    assert (history_gap(spec(kpi), day, MONDAY) is not None) is gap


def test_history_days_in_the_registry_win():
    assert history_gap(spec("fear_greed", historyDays=7), date(2026, 11, 1), MONDAY)
    assert expected_gap(spec("btc_dominance", historyDays=30), SUNDAY, MONDAY) is None


def test_last_expected_day_skips_the_weekend():
    assert last_expected_on_or_before(spec("us_10y_yield"), SUNDAY) == FRIDAY
    assert last_expected_on_or_before(spec("btc_price"), SUNDAY) == SUNDAY


def test_a_lagged_derived_kpi_says_which_inputs_it_waits_for():
    from daily_index.registry import load_registry

    correlation = next(k for k in load_registry().kpis if k.id == "btc_dxy_correlation_30d")
    reason = expected_gap(correlation, date(2026, 11, 24), today=date(2026, 11, 24))
    assert reason == (
        "no observation yet: computed from btc_price and us_dollar_index, whose values "
        "arrive 10 day(s) late; 2026-11-24 is computed on 2026-12-04"
    )
