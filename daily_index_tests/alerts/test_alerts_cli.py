"""`daily-index alerts check`: output, sending, and exit codes, over stored series only."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from daily_index.cli import main
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.alerts.conftest import Receiver, store_values

DAY = date(2026, 11, 20)
REGISTRY = """\
version: 1
kpis:
  - id: btc_price
    name: Bitcoin price
    description: Test KPI.
    type: price
    unit: USD
    source: {kind: n8n, params: {webhook: kpi/btc}}
    metadata: {source: test, category: crypto_prices}
    alerts:
      - {kind: crossing, threshold: 100000, hysteresis: 2000}
      - {kind: change, days: 1, threshold: 8}
  - id: funding
    name: BTC funding rate
    description: Test KPI.
    type: rate
    unit: "%"
    changeUnit: bp
    source: {kind: n8n, params: {webhook: kpi/funding}}
    metadata: {source: test, category: derivatives}
    alerts:
      - {kind: change, days: 1, threshold: 20}
      - {kind: no_data}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    for name in list(__import__("os").environ):
        if name.startswith("DAILY_INDEX_"):
            monkeypatch.delenv(name)
    registry = tmp_path / "kpis.yaml"
    registry.write_text(REGISTRY)
    store = LocalObjectStore(tmp_path / "store")
    store_values(store, "btc_price", {DAY - timedelta(days=1): 92_000.0, DAY: 101_500.0})
    store_values(store, "funding", {DAY - timedelta(days=1): 0.60, DAY: 0.25})
    return {
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_DATA_DIR": str(tmp_path / "store"),
        "DAILY_INDEX_OUTBOX_DIR": str(tmp_path / "outbox"),
        "COLUMNS": "250",  # one table row per alert
    }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, ["alerts", "check", *args], env=env, catch_exceptions=False)


def test_check_prints_the_alerts_and_sends_nothing(env, tmp_path) -> None:
    result = run(env, "--date", DAY.isoformat())
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines() if "│" in line}
    assert sorted(rows) == ["change_1d_20", "change_1d_8", "crossing_100000"]
    assert "Bitcoin price (btc_price)" in rows["crossing_100000"]
    assert "$101,500" in rows["crossing_100000"] and "$92,000" in rows["crossing_100000"]
    assert "crossed above $100,000" in rows["crossing_100000"]
    assert "+10.3%" in rows["change_1d_8"]
    assert "-35 bp" in rows["change_1d_20"] and "0.25%" in rows["change_1d_20"]
    assert all("new (not sent: use --send)" in row for row in rows.values())
    assert not (tmp_path / "outbox").exists()


def test_send_delivers_once(env, receiver: Receiver, tmp_path) -> None:
    recipients = tmp_path / "alert-recipients.csv"
    recipients.write_text(f"id,name,urls,kpis\ndesk,Desk,{receiver.url('desk')},btc_price\n")
    env = env | {"DAILY_INDEX_ALERT_RECIPIENTS_FILE": str(recipients)}
    first = run(env, "--date", DAY.isoformat(), "--send")
    assert first.exit_code == 0, first.output
    assert receiver.count("desk") == 1
    [(_, body)] = receiver.requests["/desk"]
    message = json.loads(body)
    assert message["title"] == "Daily Index KPI alerts: 2 alerts"
    assert "http://127.0.0.1:3000/assets/kpi/btc_price" in message["message"]
    second = run(env, "--date", DAY.isoformat(), "--send")
    assert second.exit_code == 0
    assert receiver.count("desk") == 1
    assert "already alerted" in second.output


def test_nothing_fires_is_exit_0(env) -> None:
    result = run(env, "--date", (DAY - timedelta(days=1)).isoformat())
    assert result.exit_code == 0
    assert "No alert fires for 2026-11-19 (2 KPIs, 4 rules)." in result.output


def test_no_data_after_the_deadline(env) -> None:
    result = run(env, "--date", (DAY + timedelta(days=1)).isoformat())
    assert result.exit_code == 0
    assert "no_data" in result.output and "BTC funding" in result.output


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (
            "recipients:\n  - id: a\n    urls: [json://127.0.0.1/x]\n    kpis: [nope]\n",
            ".yaml",
            "line 2, field 'kpis': unknown KPI id(s): nope",
        ),
        (
            "recipients:\n  - id: a\n    urls: [bogus://x]\n",
            ".yaml",
            "line 2, field 'urls': URL #1",
        ),
        (
            "recipients:\n  - id: a\n    urls: [json://127.0.0.1/x]\n    rules: [often]\n",
            ".yaml",
            "field 'rules': unknown rule name(s) or kind(s): often",
        ),
        ("id,name,urls\na,A,json://127.0.0.1/x\nb,B,\n", ".csv", "line 3, field 'urls': missing"),
        ("recipients: [\n", ".yaml", "not valid YAML at line 2"),
    ],
)
def test_bad_recipients_file_is_exit_2_naming_file_line_and_field(
    env, tmp_path, content, suffix, message
) -> None:
    recipients = tmp_path / f"alert-recipients{suffix}"
    recipients.write_text(content)
    result = CliRunner().invoke(
        main,
        ["alerts", "check", "--date", DAY.isoformat()],
        env=env | {"DAILY_INDEX_ALERT_RECIPIENTS_FILE": str(recipients)},
    )
    assert result.exit_code == 2
    assert str(recipients) in result.stderr and message in result.stderr


def test_bad_date_is_exit_2(env) -> None:
    result = run(env, "--date", "2026-02-30")
    assert result.exit_code == 2
    assert "expected a date as YYYY-MM-DD, got '2026-02-30'" in result.output
