"""The one formatter of values and changes, and changes in the reader's unit."""

from __future__ import annotations

import pytest

from daily_index.formatting import (
    Change,
    brief,
    change_between,
    format_change,
    format_value,
    format_zscore,
)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (97_338.2, "USD", "$97,338"),
        (3.21e12, "USD", "$3.21T"),
        (3_214_500_000_000, "USD", "$3.215T"),
        (160.5e9, "USD", "$160.5B"),
        (160_000_000_000.0, "USD", "$160B"),
        (35_200_000.0, "USD", "$35.2M"),
        (3_412.5, "USD", "$3,412"),
        (12.5, "USD", "$12.50"),
        (-12.5, "USD", "-$12.50"),
        (0.9998, "USD", "$0.9998"),
        (54.31, "%", "54.31%"),
        (54.2, "%", "54.20%"),
        (4.3, "%", "4.30%"),
        (0.0102, "%", "0.0102%"),
        (0.01, "%", "0.01%"),
        (-0.0075, "%", "-0.0075%"),
        (0.0, "%", "0%"),
        (0.05123, "BTC", "0.05123 BTC"),
        (19_800_000, "BTC", "19.8M BTC"),
        (74, "points", "74"),
        (104.2, "points", "104.20"),
        (1234.5, "points", "1,234"),
        (-3.5, "", "-3.50"),
        (None, "USD", "missing"),
        (float("nan"), "%", "missing"),
    ],
)
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (Change(2.4, "pct"), "+2.4%"),
        (Change(-26.04, "pct"), "-26.0%"),
        (Change(0.354, "pct"), "+0.35%"),
        (Change(0.996, "pct"), "+1.0%"),
        (Change(9.96, "bp"), "+10 bp"),
        (Change(-0.0004, "pct"), "0.00%"),
        (Change(-0.35, "pp"), "-0.35 pp"),
        (Change(1.2, "pp"), "+1.20 pp"),
        (Change(12.3, "bp"), "+12 bp"),
        (Change(-2.5, "bp"), "-2.5 bp"),
        (Change(-0.25, "bp"), "-0.25 bp"),
        (Change(3.0, "points"), "+3 pts"),
        (Change(-1.0, "points"), "-1 pt"),
        (Change(0.35, "points"), "+0.35 pts"),
        (Change(1234.0, "points"), "+1,234 pts"),
        (Change(0.0, "points"), "0 pts"),
        (None, "–"),
    ],
)
def test_format_change(change, text):
    assert format_change(change) == text
    if change is not None:
        assert str(change) == text


@pytest.mark.parametrize(
    ("now", "before", "unit", "expected"),
    [
        (102.4, 100.0, "pct", Change(2.4, "pct")),
        (-5.0, -10.0, "pct", Change(50.0, "pct")),
        (54.0, 54.35, "pp", Change(-0.35, "pp")),
        (0.0112, 0.01, "bp", Change(0.12, "bp")),
        (0.0075, 0.0101, "bp", Change(-0.26, "bp")),
        (77.0, 74.0, "points", Change(3.0, "points")),
        (1.0, 0.0, "pct", None),
        (None, 1.0, "pct", None),
        (1.0, None, "pp", None),
        (float("nan"), 1.0, "pct", None),
    ],
)
def test_change_between(now, before, unit, expected):
    change = change_between(now, before, unit)
    if expected is None:
        assert change is None
    else:
        assert change.unit == expected.unit
        assert change.value == pytest.approx(expected.value)


def test_a_funding_rate_change_reads_in_basis_points_not_percent():
    # 0.0101% -> 0.0075%: a -26% "percent change" that is really a quarter of a basis point.
    assert format_change(change_between(0.0075, 0.0101, "bp")) == "-0.26 bp"
    assert format_change(change_between(0.0075, 0.0101, "pct")) == "-25.7%"


@pytest.mark.parametrize(
    ("z", "text"), [(3.14, "+3.1σ"), (-0.96, "-1.0σ"), (0.01, "0.0σ"), (None, "–")]
)
def test_format_zscore(z, text):
    assert format_zscore(z) == text


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("HTTP 500", "HTTP 500"),
        (
            "no observation expected: weekend (sunday; a business-day series)",
            "no observation expected: weekend (sunday; a business-day series)",
        ),
        (
            "no observation expected: weekend (sunday; a business-day series, see the registry)",
            "no observation expected: weekend",
        ),
        (
            "no observation available: CoinGecko's keyless /global has no history, so past days "
            "such as 2026-11-22 cannot be fetched",
            "no observation available: CoinGecko's keyless /global has no history",
        ),
        ("x" * 80, "x" * 71 + "…"),
        (None, ""),
    ],
)
def test_brief_keeps_the_first_clause_of_a_long_reason(text, short):
    assert brief(text) == short
