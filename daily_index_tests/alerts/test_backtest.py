"""The backtest of alert rules: hand-counted cases with hysteresis and cooldown.

Also: the same days as the live rule evaluation run on every day, and the command.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from daily_index.alerts.backtest import backtest, backtest_rule
from daily_index.alerts.rules import evaluate_day, points_from
from daily_index.cli import main
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.alerts.conftest import kpi, registry_yaml, store_values

START = date(2026, 1, 1)


def day(n: int) -> date:
    """Day n of the test period (day 1 is January 1st)."""
    return START + timedelta(days=n - 1)


def points(values: list[float]):
    return [(day(n), v) for n, v in enumerate(values, start=1)]


# Crossing of 100 with a hysteresis of 5 and a 3-day cooldown, counted by hand:
#   day  1   2    3   4    5   6    7   8    9   10   11  12
#   val  95  101  99  102  94  103  94  101  94  106  99  110
# up:    armed (95 <= 100); fires on 2; 99 and 102 stay inside the band (no re-arm, so no
#        firing on 4); 94 < 95 re-arms; fires on 6, 8 and 10 (each after a 94).
# down:  disarmed (95 < 100) until 106 > 105 arms it on 10; fires on 11 (99 < 100).
# cooldown: 2 sent; 6 sent (4 days after 2); 8 held back (2 after 6); 10 sent (4 after 6:
#        a held-back firing does not restart the cooldown); 11 held back (1 after 10).
CROSSING_VALUES = [95, 101, 99, 102, 94, 103, 94, 101, 94, 106, 99, 110]


def test_a_crossing_with_hysteresis_and_cooldown_fires_on_the_hand_counted_days():
    rule = {"kind": "crossing", "threshold": 100, "hysteresis": 5, "cooldownDays": 3}
    spec = kpi("btc_price", rule)
    result = backtest_rule(spec, spec.alerts[0], points(CROSSING_VALUES))
    assert [f.day for f in result.fired] == [day(2), day(6), day(10)]
    assert [f.day for f in result.held_back] == [day(8), day(11)]
    assert [f.alert.detail.split(" (")[0] for f in result.fired + result.held_back] == [
        "crossed above $100",
        "crossed above $100",
        "crossed above $100",
        "crossed above $100",
        "crossed below $100",
    ]
    # The move after day 2: to the value of day 9 (94), in percent. Day 6 + 7 is beyond
    # the last stored day (12): not known yet.
    first = result.fired[0]
    assert first.move_day == day(9)
    assert first.move == pytest.approx((94 - 101) / 101 * 100)
    assert result.fired[1].move is None and result.fired[2].move is None
    assert result.observations == 12
    # Without hysteresis, 99 re-arms the upward side and day 4 fires too; down arms at 101.
    bare = kpi("btc_price", {"kind": "crossing", "threshold": 100})
    plain = backtest_rule(bare, bare.alerts[0], points(CROSSING_VALUES))
    assert [f.day for f in plain.fired] == [day(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)]


def test_an_above_rule_with_cooldown_is_held_back_between_firings():
    spec = kpi("fear_greed", {"kind": "above", "threshold": 80, "cooldownDays": 3}, type="index")
    # Above 80 on days 1-5 and 9: sent 1, held 2-4, sent 5 (4 days on), sent 9 (4 days on).
    values = [85, 86, 90, 81, 82, 70, 60, 75, 88]
    result = backtest_rule(spec, spec.alerts[0], points(values))
    assert [f.day for f in result.fired] == [day(1), day(5), day(9)]
    assert [f.day for f in result.held_back] == [day(2), day(3), day(4)]
    # Index points: the move after day 1 is to day 8's 75.
    assert result.fired[0].move == pytest.approx(75 - 85)


def test_the_period_limits_the_days_judged_not_the_history_they_read():
    rule = {"kind": "crossing", "threshold": 100, "hysteresis": 5}
    spec = kpi("btc_price", rule)
    result = backtest_rule(spec, spec.alerts[0], points(CROSSING_VALUES), start=day(3), end=day(9))
    # Day 2's crossing is outside; day 4 still does not fire (armed state from days 1-3).
    assert [f.day for f in result.fired] == [day(6), day(8)]
    assert result.observations == 7


def test_a_crossing_re_arms_like_the_live_rule_after_a_long_stay_in_the_band():
    # The live rule replays the last 400 observations: after more than 400 days inside the
    # band (95-100) its window starts at or below the threshold, armed, so 101 fires again.
    rule = {"kind": "crossing", "threshold": 100, "hysteresis": 5}
    spec = kpi("btc_price", rule)
    history = points([90, 101, *([98] * 450), 101])
    result = backtest_rule(spec, spec.alerts[0], history)
    assert [f.day for f in result.fired] == [day(2), day(453)]
    assert evaluate_day(spec, day(453), history, deadline_passed=False)
    short = points([90, 101, *([98] * 100), 101])  # 100 days in the band: still disarmed
    assert [f.day for f in backtest_rule(spec, spec.alerts[0], short).fired] == [day(2)]


def _walk(seed: int, n: int, *, zeros: bool = False, holes: bool = False) -> list:
    """A random walk around 100 with fat-tailed jumps; optional zeros and missing days."""
    rng = random.Random(seed)
    value, out = 100.0, []
    for i in range(n):
        value = max(
            1.0, value * (1 + rng.gauss(0, 0.02) + (rng.random() < 0.03) * rng.gauss(0, 0.1))
        )
        if holes and rng.random() < 0.1:
            continue
        out.append((START + timedelta(days=i), 0.0 if zeros and rng.random() < 0.02 else value))
    return points_from(out)


RULES = [
    ({"kind": "above", "threshold": 105}, {}),
    ({"kind": "below", "threshold": 95, "cooldownDays": 2}, {}),
    ({"kind": "crossing", "threshold": 100, "hysteresis": 3}, {"n": 900}),
    ({"kind": "crossing", "threshold": 100, "direction": "down"}, {"n": 900}),
    ({"kind": "change", "days": 1, "threshold": 4}, {"holes": True}),
    ({"kind": "change", "days": 7, "threshold": 6, "direction": "up"}, {"holes": True}),
    ({"kind": "change", "days": 3, "threshold": 5, "direction": "down"}, {"zeros": True}),
    ({"kind": "zscore", "threshold": 2.5}, {}),
    ({"kind": "zscore", "threshold": 2, "window": 30, "direction": "up"}, {"zeros": True}),
    ({"kind": "zscore", "threshold": 3, "window": 20}, {"holes": True}),
    ({"kind": "no_data"}, {"holes": True}),
]


@pytest.mark.parametrize(("rule", "shape"), RULES, ids=[r["kind"] for r, _ in RULES])
def test_the_backtest_fires_on_the_days_the_live_evaluation_fires(rule, shape):
    spec = kpi("btc_price", rule)
    history = _walk(
        len(str(rule)), shape.get("n", 400), **{k: v for k, v in shape.items() if k != "n"}
    )
    result = backtest_rule(spec, spec.alerts[0], history)
    # The live rule on every day with the whole series, as the sensor would see each day.
    expected = []
    first, last = history[0][0], history[-1][0]
    for n in range((last - first).days + 1):
        probe = first + timedelta(days=n)
        expected += evaluate_day(spec, probe, history, deadline_passed=True)
    got = sorted(result.fired + result.held_back, key=lambda f: f.day)
    assert [(f.day, f.alert.detail) for f in got] == [(a.day, a.detail) for a in expected]
    assert len(expected) >= 3, "the case should fire a few times to mean something"


def test_backtest_filters_by_rule_name_or_kind():
    specs = [
        kpi("a", {"kind": "above", "threshold": 1}, {"kind": "no_data"}),
        kpi("b", {"kind": "above", "threshold": 1, "id": "high"}),
    ]
    stored = {"a": points([0.5, 2, 3]), "b": points([2, 0, 2])}
    results = backtest(specs, stored.__getitem__, rule_name="above")
    assert [(r.kpi.id, r.rule.name) for r in results] == [("a", "above_1"), ("b", "high")]
    assert [len(r.fired) for r in results] == [2, 2]
    assert [r.rule.name for r in backtest(specs, stored.__getitem__, rule_name="high")] == ["high"]


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    for name in list(__import__("os").environ):
        if name.startswith("DAILY_INDEX_"):
            monkeypatch.delenv(name)
    specs = [
        kpi(
            "btc_price",
            {"kind": "crossing", "threshold": 100, "hysteresis": 5, "cooldownDays": 3},
            {"kind": "above", "threshold": 109, "id": "very_high"},
        ),
        kpi("quiet", {"kind": "below", "threshold": 0}),
        kpi("no_rules"),
    ]
    registry = tmp_path / "kpis.yaml"
    registry.write_text(registry_yaml(specs))
    store = LocalObjectStore(tmp_path / "store")
    store_values(store, "btc_price", dict(points(CROSSING_VALUES)))
    store_values(store, "quiet", dict(points([5, 6, 7])))
    return {
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_DATA_DIR": str(tmp_path / "store"),
        "COLUMNS": "250",
    }


def test_backtest_json_lists_each_rule_with_its_firings(env):
    result = CliRunner().invoke(main, ["alerts", "backtest", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    by_rule = {(r["kpi"], r["rule"]): r for r in doc["rules"]}
    assert set(by_rule) == {
        ("btc_price", "crossing_100"),
        ("btc_price", "very_high"),
        ("quiet", "below_0"),
    }
    crossing = by_rule[("btc_price", "crossing_100")]
    assert [f["day"] for f in crossing["firings"]] == [str(day(n)) for n in (2, 6, 10)]
    assert crossing["held_back_days"] == [str(day(8)), str(day(11))]
    assert crossing["firings"][0]["move_7d"] == pytest.approx((94 - 101) / 101 * 100)
    assert crossing["firings"][0]["move_to"] == str(day(9))
    assert crossing["fired"] == 3 and crossing["held_back"] == 2 and crossing["observations"] == 12
    assert [f["day"] for f in by_rule[("btc_price", "very_high")]["firings"]] == [str(day(12))]
    assert by_rule[("quiet", "below_0")]["fired"] == 0


def test_backtest_table_and_filters(env):
    args = ["alerts", "backtest", "--kpi", "btc_price", "--rule", "crossing", "--from", str(day(5))]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "crossing_100" in result.output and "very_high" not in result.output
    assert "2026-01-06" in result.output and "2026-01-02" not in result.output
    assert "3-day cooldown" in result.output
    assert "crossed above $100" in result.output and "not known yet" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--kpi", "nope"], "--kpi 'nope': no such KPI"),
        (["--kpi", "no_rules"], "has no alert rules"),
        (["--rule", "nope"], "--rule 'nope': no such rule"),
        (["--from", "2026-02-01", "--to", "2026-01-01"], "is after --to"),
        (["--from", "01/02/2026"], "expected a date as YYYY-MM-DD"),
    ],
)
def test_backtest_bad_options_exit_2_saying_what(env, args, words):
    result = CliRunner().invoke(main, ["alerts", "backtest", *args], env=env)
    assert result.exit_code == 2
    assert words in " ".join(result.output.split()), result.output
