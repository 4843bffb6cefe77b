"""Alert settings from the environment, the recipients file, the ledger's rules, Definitions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from daily_index.alerts.ledger import AlertLedger, Notice
from daily_index.alerts.recipients import load_recipients
from daily_index.defs.resources import ConfigurationError, alerts_from_env, build_resources
from daily_index_tests.alerts.conftest import SECRET

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


def test_defaults_need_nothing() -> None:
    alerts = alerts_from_env({})
    assert (alerts.window_days, alerts.ui_base_url, alerts.recipients_file) == (
        3,
        "http://127.0.0.1:3000",
        None,
    )
    [outbox] = alerts.recipients()
    assert outbox.id == "outbox" and outbox.urls[0].startswith("outbox://")
    [operators] = alerts.operators()
    assert operators.urls[0].endswith("/operators")


def test_operator_urls_are_a_secret(monkeypatch) -> None:
    url = f"json://ops:{SECRET}@127.0.0.1:9/ops"
    monkeypatch.setenv("DAILY_INDEX_OPERATOR_URLS", url)
    resources = build_resources({"DAILY_INDEX_OPERATOR_URLS": url})
    alerts = resources["alerts"]
    assert type(alerts.operator_urls) is dg.EnvVar  # the UI shows the variable's name only
    assert SECRET not in repr(alerts)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DAILY_INDEX_ALERT_WINDOW_DAYS": "0"}, "DAILY_INDEX_ALERT_WINDOW_DAYS must be >= 1"),
        ({"DAILY_INDEX_ALERT_WINDOW_DAYS": "three"}, "DAILY_INDEX_ALERT_WINDOW_DAYS must be a"),
        ({"DAILY_INDEX_ALERT_RECIPIENTS_FILE": "/nowhere.yaml"}, "which is not a file"),
        (
            {"DAILY_INDEX_OPERATOR_URLS": f"json://127.0.0.1/x,bogus://{SECRET}"},
            "DAILY_INDEX_OPERATOR_URLS: URL #2",
        ),
    ],
)
def test_bad_settings_are_clear_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        alerts_from_env(environ)
    assert SECRET not in str(raised.value)


def test_recipients_yaml_and_csv(tmp_path: Path) -> None:
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text(
        "recipients:\n"
        "  - {id: desk, name: Desk, urls: [json://127.0.0.1/a, json://127.0.0.1/b]}\n"
        "  - {id: btc, urls: json://127.0.0.1/c, kpis: [btc_price], rules: [crossing]}\n"
        "  - {id: all, urls: json://127.0.0.1/d, kpis: '*'}\n"
    )
    desk, btc, everyone = load_recipients(yaml_file)
    assert [c for c, _ in desk.channels()] == ["desk:1", "desk:2"]
    assert btc.wants("btc_price", "crossing_100000", "crossing")
    assert not btc.wants("btc_price", "change_1d_8", "change")
    assert not btc.wants("eth_price", "crossing_3000", "crossing")
    assert everyone.wants("eth_price", "x", "above") and everyone.name == "all"
    csv_file = tmp_path / "r.csv"
    csv_file.write_text(
        'id,name,urls,rules\nops,Ops,"json://127.0.0.1/a;json://127.0.0.1/b",no_data\n'
    )
    [ops] = load_recipients(csv_file)
    assert len(ops.urls) == 2 and ops.rules == frozenset({"no_data"})
    assert SECRET not in repr(ops)


def notice(day: date, rule: str = "above_80", cooldown: int = 2) -> Notice:
    return Notice(
        key=f"fng|{day}|{rule}",
        title="t",
        text="x",
        kpi_id="fng",
        day=day,
        rule=rule,
        kind="above",
        cooldown_days=cooldown,
    )


def test_ledger_claims_once_and_honours_cooldowns(store) -> None:
    ledger = AlertLedger(store)
    channels = lambda kpi, rule, kind: {"desk:1": "json://127.0.0.1/a"}  # noqa: E731
    days = [date(2026, 11, d) for d in (10, 11, 12, 13, 20)]
    claim = ledger.claim([notice(d) for d in days], channels, now=NOW)
    # 10 fires; 11 and 12 are within 2 days of it; 13 is 3 days on; 20 is on its own.
    assert [n.day.day for n in claim.fresh] == [10, 13, 20]
    assert [n.day.day for n in claim.cooled] == [11, 12]
    assert claim.by_channel == {"desk:1": [n.key for n in claim.fresh]}
    again = ledger.claim([notice(d) for d in days], channels, now=NOW)
    assert (again.fresh, again.cooled, again.by_channel) == ([], [], {})
    # Another rule of the same KPI is not held back by this one's cooldown.
    other = ledger.claim([notice(days[1], rule="above_90")], channels, now=NOW)
    assert len(other.fresh) == 1


def test_ledger_settles_and_retries_failed_channels(store) -> None:
    ledger = AlertLedger(store)
    channels = lambda kpi, rule, kind: {"a:1": "json://h/a", "b:1": "json://h/b"}  # noqa: E731
    claim = ledger.claim([notice(date(2026, 11, 20))], channels, now=NOW)
    ledger.settle({"a:1": None, "b:1": "HTTP 500"}, claim.by_channel, now=NOW, max_attempts=2)
    retry = ledger.claim([], channels, now=NOW)
    assert retry.by_channel == {"b:1": ["fng|2026-11-20|above_80"]}
    ledger.settle({"b:1": "HTTP 500"}, retry.by_channel, now=NOW, max_attempts=2)
    [entry] = ledger.read().values()
    assert {c: (s["status"], s["attempts"]) for c, s in entry["channels"].items()} == {
        "a:1": ("sent", 1),
        "b:1": ("dead", 2),
    }
    assert ledger.claim([], channels, now=NOW).by_channel == {}


def test_definitions_carry_the_alert_sensors(tmp_path: Path) -> None:
    from daily_index.definitions import build_definitions

    defs = build_definitions(environ={"DAILY_INDEX_DATA_DIR": str(tmp_path / "store")})
    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    for name in ("kpi_alert_sensor", "run_failure_alert_sensor", "check_failure_alert_sensor"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING
        assert len(sensors[name].description or "") > 60
        assert {"alerts", "storage"} <= set(sensors[name].required_resource_keys)
    assert "alerts" in repo.get_top_level_resources()


def test_sends_past_the_tick_budget_wait_for_the_next_tick(store, receiver) -> None:
    from daily_index.alerts.dispatch import MAX_PARALLEL_SENDS, dispatch
    from daily_index.alerts.recipients import Recipient

    # More slow channels (0.3 s each) than send threads: the last ones cannot begin within
    # a 0.1 s budget, whatever the machine's speed.
    recipients = [
        Recipient(id=f"r{n}", name=f"R{n}", urls=(receiver.url(f"slow/{n}"),))
        for n in range(MAX_PARALLEL_SENDS + 2)
    ]
    ledger = AlertLedger(store)
    first = dispatch(
        [notice(date(2026, 11, 20))],
        ledger=ledger,
        recipients=recipients,
        now=NOW,
        send_budget_s=0.1,
    )
    assert len(first.sent) == MAX_PARALLEL_SENDS
    assert all("time budget" in error for error in first.failed.values())
    assert len(first.failed) == 2
    second = dispatch([], ledger=ledger, recipients=recipients, now=NOW)
    assert sorted(second.sent) == sorted(first.failed)
    assert receiver.total() == MAX_PARALLEL_SENDS + 2
