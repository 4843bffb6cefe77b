"""kpi_alert_sensor on a real SQLite Dagster instance, with real receivers on 127.0.0.1.

KPI days "land" as the KPI step lands them: the value in the stored series, then a
materialisation of the day's partition in the event log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from daily_index.alerts.ledger import FAILED, SENT
from daily_index.defs.alerts import (
    KpiCursor,
    build_kpi_alert_sensor,
    plan_kpi_tick,
)
from daily_index.defs.automation import FaninSettings
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import AlertsResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index_tests.alerts.conftest import (
    SECRET,
    Receiver,
    days,
    kpi,
    ledger,
    outbox_messages,
    store_values,
)

TODAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # past the day's deadline (12:00 + 120 min)
DEADLINE = FaninSettings().deadline
BTC = kpi("btc_price", {"kind": "above", "threshold": 100_000})


class Harness:
    """One instance, the sensor with a settable clock, its resources and its cursor."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        tmp_path: Path,
        kpis: list[KpiSpec],
        recipients: list[dict] | None = None,
        window: int = 3,
        max_attempts: int = 5,
    ) -> None:
        self.instance = instance
        self.now = NOW
        self.sensor = build_kpi_alert_sensor(kpis=kpis, deadline=DEADLINE, clock=lambda: self.now)
        recipients_file = None
        if recipients is not None:
            recipients_file = tmp_path / "alert-recipients.yaml"
            recipients_file.write_text(yaml.safe_dump({"recipients": recipients}))
        self.outbox = tmp_path / "outbox"
        self.storage = StorageResource(local_dir=str(tmp_path / "store"))
        self.store = self.storage.get_store()
        self.resources = {
            "alerts": AlertsResource(
                recipients_file=str(recipients_file) if recipients_file else None,
                outbox_dir=str(self.outbox),
                window_days=window,
                max_attempts=max_attempts,
            ),
            "storage": self.storage,
        }
        self.cursor: str | None = None

    def land(self, kpi_id: str, values: dict[date, float]) -> None:
        store_values(self.store, kpi_id, values)
        for day in values:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    dg.AssetKey(["kpi", kpi_id]),
                    partition=day.isoformat(),
                    metadata={"value": values[day]},
                )
            )

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        return result

    def alert_messages(self) -> list[dict]:
        return outbox_messages(self.outbox / "alerts")


def said(result: dg.SensorResult) -> str:
    """The tick's summary, as the UI shows it."""
    return result.skip_reason.skip_message if result.skip_reason else ""


@pytest.fixture
def make(instance, tmp_path) -> Callable[..., Harness]:
    def build(kpis: list[KpiSpec] | None = None, **kwargs) -> Harness:
        return Harness(instance, tmp_path, kpis or [BTC], **kwargs)

    return build


def test_three_partitions_landing_between_ticks_all_alert_in_one_digest(make) -> None:
    harness = make()
    harness.tick()
    values = [101_000.0, 102_000.0, 104_448.0]
    harness.land("btc_price", dict(zip(days(TODAY, 3), values, strict=True)))
    result = harness.tick()
    [digest] = harness.alert_messages()
    assert digest["title"] == "Daily Index KPI alerts: 3 alerts"
    for day in days(TODAY, 3):
        assert f"Btc Price (btc_price) on {day.isoformat()}: above $100,000" in digest["body"]
    assert "value $104,448; previous $102,000 (2026-11-19); change +2.4%" in digest["body"]
    assert "http://127.0.0.1:3000/assets/kpi/btc_price" in digest["body"]
    assert "3 new alert(s)" in said(result)
    entries = ledger(harness.store)
    assert sorted(entries) == [f"btc_price|{d.isoformat()}|above_100000" for d in days(TODAY, 3)]
    assert all(e["channels"]["outbox:1"]["status"] == SENT for e in entries.values())


def test_no_second_alert_from_a_stored_cursor_or_after_a_cursor_reset(make) -> None:
    harness = make()
    harness.land("btc_price", {TODAY: 105_000.0})
    harness.tick()
    assert len(harness.alert_messages()) == 1
    stored = harness.cursor
    harness.tick()
    harness.cursor = stored
    harness.tick()
    harness.cursor = None  # a reset cursor (or a new daemon with a lost one)
    result = harness.tick()
    assert "0 new alert(s)" in said(result)
    # A re-materialisation of the same day (a rerun) does not alert again either.
    harness.land("btc_price", {TODAY: 106_000.0})
    harness.tick()
    assert len(harness.alert_messages()) == 1


def test_an_imported_five_year_history_gives_no_alert(make) -> None:
    harness = make(window=3)
    history = days(TODAY - timedelta(days=3), 5 * 365)
    store_values(harness.store, "btc_price", {d: 150_000.0 for d in history})
    # Each event costs Dagster one write (about 25 ms here): every 30th day of the five years
    # and the ten days just before the window stand for the whole import.
    landed = sorted(set(history[::30]) | set(history[-10:]))
    harness.land("btc_price", {d: 150_000.0 for d in landed})
    result = harness.tick()
    assert harness.alert_messages() == []
    assert f"{len(landed)} new KPI materialisation(s), 0 recent KPI day(s) judged" in said(result)
    assert ledger(harness.store) == {}
    # The cursor moved past the import: the next tick reads nothing again.
    assert json.loads(harness.cursor)["storage_id"] is not None
    assert "0 new KPI materialisation(s)" in said(harness.tick())


def test_crossing_with_hysteresis_fires_once_over_a_week_of_oscillating_values(make) -> None:
    rule = {"kind": "crossing", "threshold": 100_000, "hysteresis": 2_000}
    harness = make([kpi("btc_price", rule)])
    week = days(TODAY, 8)
    values = [97_000, 99_000, 101_000, 99_500, 100_500, 99_800, 100_200, 101_500]
    for day, value in zip(week, values, strict=True):
        harness.now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=13)
        harness.land("btc_price", {day: float(value)})
        harness.tick()
    [message] = harness.alert_messages()
    assert f"on {week[2].isoformat()}: crossed above $100,000" in message["body"]


def test_cooldown_holds_back_the_next_days(make) -> None:
    harness = make([kpi("fng", {"kind": "above", "threshold": 80, "cooldownDays": 2})])
    for n, day in enumerate(days(TODAY, 3)):
        harness.now = NOW - timedelta(days=2 - n)
        harness.land("fng", {day: 85.0})
        harness.tick()
    assert len(harness.alert_messages()) == 1
    entries = ledger(harness.store)
    assert [e["suppressed"] for _, e in sorted(entries.items())] == [None, "cooldown", "cooldown"]


def test_no_data_after_the_deadline_only_and_once(make) -> None:
    harness = make([kpi("ten_year", {"kind": "no_data"}, calendar="business_days")], window=1)
    harness.now = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)  # before the 14:00 deadline
    harness.tick()
    assert harness.alert_messages() == []
    harness.now = NOW
    harness.tick()
    harness.tick()
    harness.cursor = None
    harness.tick()
    [message] = harness.alert_messages()
    assert "Ten Year (ten_year) on 2026-11-20: no data by the report deadline" in message["body"]
    # Saturday is outside a business-day calendar: no alert for it.
    harness.now = NOW + timedelta(days=1)
    harness.tick()
    assert len(harness.alert_messages()) == 1


def test_a_fresh_install_does_not_report_the_days_before_it(make) -> None:
    harness = make([kpi("ten_year", {"kind": "no_data"})], window=3)
    harness.tick()  # 18:00: every deadline of the window has passed already
    harness.now = NOW + timedelta(days=1)
    harness.tick()
    [message] = harness.alert_messages()
    assert message["title"] == "Ten Year no data by the report deadline (2026-11-21)"


def test_a_landed_day_is_not_missing_after_a_cursor_reset(make) -> None:
    harness = make([kpi("ten_year", {"kind": "no_data"})], window=2)
    harness.land("ten_year", {TODAY - timedelta(days=1): 4.1, TODAY: 4.2})
    # A cursor that remembers nothing landed but is past every event (a cursor from another
    # instance, or one whose memory of landed days was lost): the event log is asked.
    harness.cursor = KpiCursor(storage_id=10**9, watching_since=0).to_json()
    result = harness.tick()
    assert harness.alert_messages() == []
    assert "0 new alert(s)" in said(result)


def test_one_digest_per_channel_per_tick_with_watchlists(make, receiver: Receiver) -> None:
    kpis = [
        kpi("btc_price", {"kind": "above", "threshold": 100_000}),
        kpi("eth_price", {"kind": "below", "threshold": 2_000}),
    ]
    harness = make(
        kpis,
        recipients=[
            {
                "id": "desk",
                "name": "Desk",
                "urls": [receiver.url("desk/a"), receiver.url("desk/b")],
            },
            {"id": "btc", "name": "BTC only", "urls": receiver.url("btc/a"), "kpis": ["btc_price"]},
            {"id": "drops", "name": "Drops", "urls": receiver.url("drops/a"), "rules": ["below"]},
        ],
    )
    harness.land("btc_price", {d: 101_000.0 for d in days(TODAY, 2)})
    harness.land("eth_price", {TODAY: 1_900.0})
    harness.tick()
    assert {p: receiver.count(p) for p in ("desk/a", "desk/b", "btc/a", "drops/a")} == {
        "desk/a": 1,
        "desk/b": 1,
        "btc/a": 1,
        "drops/a": 1,
    }
    bodies = {
        path: json.loads(body)
        for path, requests in receiver.requests.items()
        for _, body in requests
    }
    assert bodies["/desk/a"]["title"] == "Daily Index KPI alerts: 3 alerts"
    assert bodies["/btc/a"]["title"] == "Daily Index KPI alerts: 2 alerts"
    assert bodies["/drops/a"]["title"].startswith("Eth Price below $2,000")
    harness.tick()
    assert receiver.total() == 4


def test_email_digest_through_a_real_smtp_server(make, smtp) -> None:
    box, port = smtp
    url = (
        f"mailto://alerts:{SECRET}@127.0.0.1:{port}"
        "?mode=insecure&from=alerts@example.org&to=desk@example.org"
    )
    harness = make(recipients=[{"id": "mail", "name": "Desk", "urls": [url]}])
    harness.land("btc_price", {TODAY: 120_000.0})
    harness.tick()
    [raw] = box.messages
    assert b"Btc Price above $100,000 (2026-11-20)" in raw
    assert box.logins == [("alerts", SECRET)]


def test_a_failing_channel_is_retried_next_tick_without_blocking_the_others(
    make, receiver: Receiver, smtp
) -> None:
    box, port = smtp
    broken = f"json://hook:{SECRET}@127.0.0.1:{receiver.port}/fail/1"
    harness = make(
        recipients=[
            {"id": "ok", "name": "OK", "urls": [receiver.url("ok/1")]},
            {"id": "broken", "name": "Broken", "urls": [broken]},
            {
                "id": "mail",
                "name": "Mail",
                "urls": [
                    f"mailto://a:b@127.0.0.1:{port}?mode=insecure&from=a@example.org&to=x@example.org"
                ],
            },
        ],
        max_attempts=2,
    )
    harness.land("btc_price", {TODAY: 120_000.0})
    first = harness.tick()
    assert receiver.count("ok/1") == 1 and len(box.messages) == 1
    assert receiver.count("fail/1") == 1
    state = ledger(harness.store)["btc_price|2026-11-20|above_100000"]["channels"]
    assert (state["ok:1"]["status"], state["broken:1"]["status"]) == (SENT, FAILED)
    assert "broken:1" in said(first)
    harness.land("btc_price", {TODAY - timedelta(days=1): 110_000.0})
    harness.tick()
    # The broken channel got one digest holding its retry and the new alert; the others
    # got the new alert only.
    assert receiver.count("fail/1") == 2
    assert receiver.count("ok/1") == 2 and len(box.messages) == 2
    retry = json.loads(receiver.requests["/fail/1"][1][1])
    assert retry["title"] == "Daily Index KPI alerts: 2 alerts"
    state = ledger(harness.store)["btc_price|2026-11-20|above_100000"]["channels"]
    assert (state["broken:1"]["status"], state["broken:1"]["attempts"]) == ("dead", 2)
    # The second alert has had one attempt on the broken channel: one more, then it is dead
    # too, and nothing is sent any more. The working channels never saw a repeat.
    harness.tick()
    harness.tick()
    assert receiver.count("fail/1") == 3
    assert receiver.count("ok/1") == 2 and len(box.messages) == 2
    statuses = [e["channels"]["broken:1"]["status"] for e in ledger(harness.store).values()]
    assert statuses == ["dead", "dead"]
    text = harness.store.read_bytes("alerts/ledger.json").decode()
    assert SECRET not in text and SECRET not in said(first)


@pytest.mark.parametrize(
    ("landed", "events", "now", "judged", "overdue"),
    [
        # a day of the window lands: judged; the other past-deadline days are overdue
        (
            {},
            [("k", TODAY, 5)],
            NOW,
            {"k": {TODAY}},
            {TODAY - timedelta(days=1), TODAY - timedelta(days=2)},
        ),
        # an old day (import, backfill) is never judged
        ({}, [("k", TODAY - timedelta(days=9), 5)], NOW, {}, set(days(TODAY, 3))),
        # before today's deadline, today is not overdue
        ({}, [], NOW.replace(hour=13), {}, {TODAY - timedelta(days=1), TODAY - timedelta(days=2)}),
        # remembered as landed: not overdue
        (
            {TODAY.isoformat(): ["k"]},
            [],
            NOW,
            {},
            {TODAY - timedelta(days=1), TODAY - timedelta(days=2)},
        ),
        # a KPI not in the code location is ignored
        ({}, [("gone", TODAY, 7)], NOW, {}, set(days(TODAY, 3))),
    ],
)
def test_plan_kpi_tick(landed, events, now, judged, overdue) -> None:
    spec = kpi("k", {"kind": "no_data"})
    cursor = KpiCursor(
        storage_id=3, landed={d: frozenset(v) for d, v in landed.items()}, watching_since=0
    )
    plan = plan_kpi_tick(cursor, events, kpis=[spec], now=now, window=3, deadline=DEADLINE)
    assert plan.landed == judged
    assert plan.overdue.get("k", set()) == overdue
    assert plan.cursor.storage_id == max([3, *(e[2] for e in events)])
    assert KpiCursor.from_json(plan.cursor.to_json()) == plan.cursor


def test_plan_kpi_tick_skips_days_outside_the_calendar_and_follows_the_log() -> None:
    spec = kpi("k", {"kind": "no_data"}, calendar="business_days")
    saturday = NOW + timedelta(days=1)
    plan = plan_kpi_tick(
        KpiCursor(watching_since=0),
        [],
        kpis=[spec],
        now=saturday,
        window=3,
        deadline=DEADLINE,
        read_up_to=42,
    )
    assert plan.overdue == {"k": {TODAY - timedelta(days=1), TODAY}}  # Thursday, Friday
    assert plan.cursor.storage_id == 42


def test_sensor_definition_reads_well() -> None:
    sensor = build_kpi_alert_sensor(kpis=[BTC], deadline=DEADLINE)
    assert sensor.name == "kpi_alert_sensor"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "1 rules of 1 KPIs" in (sensor.description or "")


def test_kpis_of_one_real_run_all_alert(make) -> None:
    """Three KPIs landed by one step of one run, as the KPI multi-asset lands them."""
    kpis = [kpi(f"k{n}", {"kind": "above", "threshold": 10}) for n in range(3)]
    harness = make(kpis)

    @dg.multi_asset(
        name="kpis",
        specs=[dg.AssetSpec(key=["kpi", k.id], skippable=True) for k in kpis],
        partitions_def=daily_partitions,
        can_subset=True,
    )
    def stand_in(context, storage: StorageResource):
        day = date.fromisoformat(context.partition_key)
        for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
            store_values(storage.get_store(), key.path[-1], {day: 11.0})
            yield dg.MaterializeResult(asset_key=key, metadata={"value": 11.0})

    result = dg.materialize(
        [stand_in],
        instance=harness.instance,
        partition_key=TODAY.isoformat(),
        resources={"storage": harness.storage},
    )
    assert result.success
    harness.tick()
    [digest] = harness.alert_messages()
    assert digest["title"] == "Daily Index KPI alerts: 3 alerts"
