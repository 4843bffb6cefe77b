"""The alert rules as pure functions: each kind, units, hysteresis, calendars, z-scores."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from daily_index.alerts.rules import change_between, crossing, evaluate_day, points_from
from daily_index_tests.alerts.conftest import days, kpi

DAY = date(2026, 11, 20)  # a Friday


def series(values: list[float], end: date = DAY) -> list[tuple[date, float]]:
    return list(zip(days(end, len(values)), values, strict=True))


@pytest.mark.parametrize(
    ("now", "before", "unit", "expected"),
    [
        (102.4, 100.0, "pct", 2.4),
        (50.0, -100.0, "pct", 150.0),
        (1.0, 0.0, "pct", None),
        (54.31, 53.96, "pp", 0.35),
        (0.0065, 0.01, "bp", -0.35),
        (74.0, 71.0, "points", 3.0),
    ],
)
def test_change_between_units(now, before, unit, expected) -> None:
    got = change_between(now, before, unit)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("rule", "values", "fires"),
    [
        ({"kind": "above", "threshold": 100}, [90, 101], True),
        ({"kind": "above", "threshold": 100}, [90, 100], False),
        ({"kind": "below", "threshold": 20}, [25, 19], True),
        ({"kind": "below", "threshold": 20}, [25, 21], False),
        ({"kind": "crossing", "threshold": 100}, [99, 101], True),
        ({"kind": "crossing", "threshold": 100}, [101, 102], False),
        ({"kind": "crossing", "threshold": 100, "direction": "up"}, [101, 99], False),
        ({"kind": "crossing", "threshold": 100, "direction": "down"}, [101, 99], True),
        ({"kind": "change", "threshold": 5}, [100, 106], True),
        ({"kind": "change", "threshold": 5}, [100, 104], False),
        ({"kind": "change", "threshold": 5, "direction": "up"}, [100, 90], False),
        ({"kind": "change", "threshold": 5, "direction": "down"}, [100, 90], True),
        (
            {"kind": "change", "threshold": 10, "days": 7},
            [100, 104, 105, 106, 107, 108, 109, 111],
            True,
        ),
        (
            {"kind": "change", "threshold": 10, "days": 7},
            [100, 104, 105, 106, 107, 108, 109, 109],
            False,
        ),
    ],
)
def test_value_rules(rule: dict, values: list[float], fires: bool) -> None:
    spec = kpi("btc_price", rule)
    alerts = evaluate_day(spec, DAY, series(values), deadline_passed=True)
    assert bool(alerts) is fires
    if fires:
        [alert] = alerts
        assert (alert.kpi_id, alert.day, alert.kind) == ("btc_price", DAY, rule["kind"])
        assert alert.value == values[-1]


def test_crossing_with_hysteresis_fires_once_over_an_oscillating_week() -> None:
    spec = kpi("btc_price", {"kind": "crossing", "threshold": 100_000, "hysteresis": 2_000})
    week = [97_000, 99_000, 101_000, 99_500, 100_500, 99_800, 100_200, 101_500]
    points = series(week)
    fired = [
        alert
        for day, _ in points
        for alert in evaluate_day(spec, day, points, deadline_passed=True)
    ]
    assert [(a.day, a.detail.split(" (")[0]) for a in fired] == [
        (points[2][0], "crossed above $100,000")
    ]


def test_crossing_re_arms_past_the_band() -> None:
    # Back below 100 - 2 re-arms the upward crossing; the dip itself is no downward crossing,
    # because the downward side only arms above 100 + 2.
    values = [99, 101, 97.5, 101]
    assert [crossing(values[: n + 1], 100, 2) for n in range(len(values))] == [
        None,
        "up",
        None,
        "up",
    ]
    assert [crossing([99, 103, 99][: n + 1], 100, 2) for n in range(3)] == [None, "up", "down"]
    assert [crossing([99, 101, 98.5, 101][: n + 1], 100, 2) for n in range(4)] == [
        None,
        "up",
        None,
        None,
    ]


def test_change_is_against_the_last_observation_on_or_before_the_horizon() -> None:
    # Business-day series: Friday against the Friday before, a week earlier (no gaps bite).
    spec = kpi(
        "ten_year",
        {"kind": "change", "threshold": 0.25, "days": 3},
        type="yield",
        unit="%",
        calendar="business_days",
    )
    monday, friday = DAY - timedelta(days=4), DAY
    points = [(DAY - timedelta(days=7), 4.0), (DAY - timedelta(days=4), 4.1), (friday, 4.5)]
    [alert] = evaluate_day(spec, friday, points, deadline_passed=True)
    # day - 3 is Tuesday: the last observation on or before it is Monday's.
    assert alert.previous_day == monday
    assert alert.change == pytest.approx(0.4)
    assert alert.change_text == "+0.40 pp"


@pytest.mark.parametrize(
    ("kpi_type", "unit", "before", "now", "text"),
    [
        ("price", "USD", 100.0, 102.4, "+2.4%"),
        ("rate", "%", 4.25, 3.90, "-0.35 pp"),
        ("index", "", 71.0, 74.0, "+3 pts"),
    ],
)
def test_alert_change_text_is_in_the_kpis_unit(kpi_type, unit, before, now, text) -> None:
    spec = kpi("k", {"kind": "change", "threshold": 0.0001}, type=kpi_type, unit=unit)
    [alert] = evaluate_day(spec, DAY, series([before, now]), deadline_passed=True)
    assert alert.change_text == text


def test_funding_rate_change_in_basis_points() -> None:
    spec = kpi(
        "funding", {"kind": "change", "threshold": 20}, type="rate", unit="%", changeUnit="bp"
    )
    [alert] = evaluate_day(spec, DAY, series([0.60, 0.25]), deadline_passed=True)
    assert alert.change == pytest.approx(-35) and alert.change_text == "-35 bp"


def test_zscore_flags_a_move_unusual_for_the_kpi() -> None:
    calm = [100 + (0.5 if n % 2 else -0.5) for n in range(40)]
    spec = kpi("btc_price", {"kind": "zscore", "threshold": 4, "window": 30})
    assert evaluate_day(spec, DAY, series([*calm, calm[-1] * 1.003]), deadline_passed=True) == []
    [alert] = evaluate_day(spec, DAY, series([*calm, calm[-1] * 1.08]), deadline_passed=True)
    assert alert.kind == "zscore" and "σ" in alert.detail
    assert alert.change == pytest.approx(8.0)


def test_zscore_needs_history() -> None:
    spec = kpi("btc_price", {"kind": "zscore", "threshold": 1, "window": 30})
    assert evaluate_day(spec, DAY, series([100, 101, 99, 150]), deadline_passed=True) == []


@pytest.mark.parametrize(
    ("calendar", "day", "deadline_passed", "has_value", "fires"),
    [
        ("daily", DAY, True, False, True),
        ("daily", DAY, False, False, False),
        ("daily", DAY, True, True, False),
        ("business_days", DAY + timedelta(days=1), True, False, False),  # a Saturday
        ("business_days", DAY, True, False, True),
        ({"kind": "weekly", "weekday": "friday"}, DAY, True, False, True),
        ({"kind": "weekly", "weekday": "friday"}, DAY - timedelta(days=1), True, False, False),
    ],
)
def test_no_data_only_for_calendar_days_past_the_deadline(
    calendar, day, deadline_passed, has_value, fires
) -> None:
    spec = kpi("k", {"kind": "no_data"}, calendar=calendar)
    points = [(day - timedelta(days=7), 5.0)] + ([(day, 6.0)] if has_value else [])
    alerts = evaluate_day(spec, day, points, deadline_passed=deadline_passed)
    assert bool(alerts) is fires
    if fires:
        assert alerts[0].value is None and alerts[0].previous == 5.0


def test_later_values_are_ignored_and_non_finite_dropped() -> None:
    spec = kpi("btc_price", {"kind": "above", "threshold": 100})
    points = points_from(
        [(DAY, 90.0), (DAY + timedelta(days=1), 200.0), (DAY - timedelta(days=1), float("nan"))]
    )
    assert points == [(DAY, 90.0), (DAY + timedelta(days=1), 200.0)]
    assert evaluate_day(spec, DAY, points, deadline_passed=True) == []
