"""Alerting sensors: KPI alerts for readers, run and check failures for operators.

`kpi_alert_sensor` reads KPI materialisations from the event log with its own cursor (the
storage id of the last event it saw), so every partition that lands between two ticks is
seen, several per tick included (asset sensors can skip partitions that land together:
dagster issue 32853). It judges each KPI day by the registry's rules over the stored series
and sends one digest per channel. `check_failure_alert_sensor` exists because open-source
Dagster does not alert on failed asset checks (dagster issue 29896). Which notices were
sent, where, and with what outcome is the alert ledger's business (daily_index/alerts).

Each sensor is a pure decision (`plan_kpi_tick`, `changed_checks`) plus thin I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from daily_index.alerts.dispatch import DispatchResult, dispatch
from daily_index.alerts.engine import evaluate, notice_for, run_link
from daily_index.alerts.ledger import KPI_LEDGER_KEY, OPERATOR_LEDGER_KEY, AlertLedger, Notice
from daily_index.alerts.rules import alert_key
from daily_index.calendars import in_calendar
from daily_index.defs.resources import AlertsResource, StorageResource
from daily_index.registry import KpiSpec

KPI_ALERT_SENSOR_NAME = "kpi_alert_sensor"
RUN_FAILURE_SENSOR_NAME = "run_failure_alert_sensor"
CHECK_FAILURE_SENSOR_NAME = "check_failure_alert_sensor"
MINIMUM_INTERVAL_SECONDS = 60
EVENT_PAGE = 1000
CHECK_HISTORY_PAGE = 50
ERROR_LINES = 6
_CURSOR_VERSION = 1


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- KPI alerts: the decision ------------------------------------------------------------


@dataclass(frozen=True)
class KpiCursor:
    """What the KPI alert sensor remembers between ticks.

    `storage_id` is the last materialisation event read; `landed` the KPI ids seen per day of
    the window, so no-data needs no event-log query for KPIs known to have landed;
    `watching_since` when the sensor began (POSIX seconds): a day whose deadline passed
    before then is nobody's news (a fresh install must not report the days before it).
    """

    storage_id: int | None = None
    landed: dict[str, frozenset[str]] = field(default_factory=dict)
    watching_since: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": _CURSOR_VERSION,
                "storage_id": self.storage_id,
                "landed": {day: sorted(ids) for day, ids in sorted(self.landed.items())},
                "watching_since": self.watching_since,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | None) -> KpiCursor:
        """The cursor, or an empty one when there is none or it cannot be read."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            if data.get("version") != _CURSOR_VERSION:
                return cls()
            storage_id = data.get("storage_id")
            since = data.get("watching_since")
            return cls(
                storage_id=int(storage_id) if storage_id is not None else None,
                landed={d: frozenset(ids) for d, ids in dict(data.get("landed", {})).items()},
                watching_since=float(since) if since is not None else None,
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True)
class KpiTickPlan:
    """What one tick judges: days with a value, and days whose value is overdue."""

    landed: dict[str, set[date]]
    """KPI id -> days of the window that landed since the cursor (value rules)."""
    overdue: dict[str, set[date]]
    """KPI id -> days of the window past their deadline, not seen landed (no_data)."""
    cursor: KpiCursor


def window_days(now: datetime, window: int) -> list[date]:
    """The days that may alert: today (UTC) and the `window - 1` before it."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=n) for n in range(window)]


def plan_kpi_tick(
    cursor: KpiCursor,
    events: Iterable[tuple[str, date, int]],
    *,
    kpis: Sequence[KpiSpec],
    now: datetime,
    window: int,
    deadline: Callable[[date], datetime],
    read_up_to: int | None = None,
) -> KpiTickPlan:
    """Decide which KPI days to judge this tick.

    Args:
        cursor: What earlier ticks saw.
        events: New materialisations: (KPI id, partition day, storage id).
        kpis: The KPIs in the code location.
        now: The tick's time (aware).
        window: How many recent days may alert (older days never do).
        deadline: The report deadline of a day: after it, a missing value is no data.
        read_up_to: The newest event read (of any asset): the next tick starts after it.

    Returns:
        The days to judge, and the cursor to store.
    """
    days = window_days(now, window)
    in_window = set(days)
    known = {kpi.id for kpi in kpis}
    landed_now: dict[str, set[date]] = {}
    seen = {d: set(cursor.landed.get(d.isoformat(), ())) for d in days}
    storage_id = cursor.storage_id
    if read_up_to is not None:
        storage_id = read_up_to if storage_id is None else max(storage_id, read_up_to)
    for kpi_id, day, event_id in events:
        storage_id = event_id if storage_id is None else max(storage_id, event_id)
        if kpi_id not in known or day not in in_window:
            continue
        landed_now.setdefault(kpi_id, set()).add(day)
        seen[day].add(kpi_id)
    since = cursor.watching_since if cursor.watching_since is not None else now.timestamp()
    overdue: dict[str, set[date]] = {}
    for kpi in kpis:
        if not any(rule.kind == "no_data" for rule in kpi.alerts):
            continue
        for day in days:
            due = deadline(day)
            if (
                since <= due.timestamp()
                and due <= now
                and kpi.id not in seen[day]
                and in_calendar(kpi, day)
            ):
                overdue.setdefault(kpi.id, set()).add(day)
    return KpiTickPlan(
        landed=landed_now,
        overdue=overdue,
        cursor=KpiCursor(
            storage_id=storage_id,
            landed={d.isoformat(): frozenset(ids) for d, ids in seen.items() if ids},
            watching_since=since,
        ),
    )


# --- KPI alerts: the I/O -----------------------------------------------------------------


def new_materializations(
    instance: dg.DagsterInstance,
    kpi_ids: Collection[str],
    *,
    after_storage_id: int | None,
    after_timestamp: float,
    imported: set[tuple[str, date]] | None = None,
) -> tuple[list[tuple[str, date, int]], int | None]:
    """KPI partitions materialised after the cursor: (KPI id, day, storage id), in order.

    One event-log query per page of events for all assets at once (a query per KPI key cost
    about 7 ms each on SQLite: 1.4 s for 200 KPIs). Without a cursor (first tick, reset),
    events newer than `after_timestamp` are read instead of the whole history.

    `imported`, when given, is filled with the (KPI id, day) of the events an import
    recorded: they count as landed (no no-data alert) but are never judged (imported days
    never alert).

    Returns:
        The KPI events, and the newest storage id read (of any asset), or None.
    """
    events: list[tuple[str, date, int]] = []
    newest = after_storage_id
    cursor = after_storage_id
    while True:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                after_cursor=cursor,
                after_timestamp=after_timestamp if cursor is None else None,
            ),
            limit=EVENT_PAGE,
            ascending=True,
        )
        for record in records:
            newest = record.storage_id if newest is None else max(newest, record.storage_id)
            key = record.asset_key
            if key is None or len(key.path) != 2 or key.path[0] != "kpi":
                continue
            if key.path[1] not in kpi_ids or not record.partition_key:
                continue
            try:
                day = date.fromisoformat(record.partition_key)
            except ValueError:
                continue
            events.append((key.path[1], day, record.storage_id))
            if imported is not None and _is_import(record):
                imported.add((key.path[1], day))
        if len(records) < EVENT_PAGE:
            return events, newest
        cursor = records[-1].storage_id


def _is_import(record: dg.EventLogRecord) -> bool:
    materialization = record.asset_materialization
    source = materialization.metadata.get("source") if materialization else None
    return str(getattr(source, "value", source) or "").startswith("import:")


def _confirm_missing(
    instance: dg.DagsterInstance,
    overdue: Mapping[str, set[date]],
    *,
    kpis: Mapping[str, KpiSpec],
    already: Mapping[str, object],
) -> tuple[dict[str, set[date]], list[tuple[str, date, int]]]:
    """Of the overdue days not yet alerted, those the event log has no materialisation for.

    Returns the missing days and, for the others, the materialisations found (they landed
    before the cursor's memory: a reset cursor).
    """
    missing: dict[str, set[date]] = {}
    found: list[tuple[str, date, int]] = []
    for kpi_id, days in overdue.items():
        rule = next(r.name for r in kpis[kpi_id].alerts if r.kind == "no_data")
        open_days = sorted(d for d in days if alert_key(kpi_id, d, rule) not in already)
        if not open_days:
            continue
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(["kpi", kpi_id]),
                asset_partitions=[d.isoformat() for d in open_days],
            ),
            limit=len(open_days) * 4,
        )
        have = {r.partition_key: r.storage_id for r in result.records if r.partition_key}
        for day in open_days:
            if day.isoformat() in have:
                found.append((kpi_id, day, have[day.isoformat()]))
            else:
                missing.setdefault(kpi_id, set()).add(day)
    return missing, found


def _summary(result: DispatchResult, what: str) -> str:
    claim = result.claim
    parts = [f"{len(claim.fresh)} new {what}"]
    if claim.cooled:
        parts.append(f"{len(claim.cooled)} held back by a cooldown")
    if result.sent:
        parts.append(f"digests sent to {', '.join(result.sent)}")
    if result.failed:
        parts.append(f"failed (retried next tick): {', '.join(result.failed)}")
    return "; ".join(parts)


def build_kpi_alert_sensor(
    *,
    kpis: Sequence[KpiSpec],
    deadline: Callable[[date], datetime],
    clock: Callable[[], datetime] = _utc_now,
    minimum_interval_seconds: int = MINIMUM_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The sensor that alerts on KPI values by the registry's rules.

    Args:
        kpis: The KPIs of the code location; those without rules are never read.
        deadline: The report deadline of a day (no_data fires after it).
        clock: The time (tests pass a fixed one).
        minimum_interval_seconds: Seconds between ticks.
    """
    with_rules = [k for k in kpis if k.alerts]
    by_id = {k.id: k for k in with_rules}
    rule_names = {r.name for k in with_rules for r in k.alerts} | {
        r.kind for k in with_rules for r in k.alerts
    }
    count = sum(len(k.alerts) for k in with_rules)

    @dg.sensor(
        name=KPI_ALERT_SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Alert on KPI values: {count} rules of {len(with_rules)} KPIs (thresholds, "
            "crossings, changes, z-scores, no data by the report deadline). Reads every new "
            "KPI materialisation from the event log; each (KPI, day, rule) alerts once; one "
            "digest per channel and tick. See docs/alerts.md."
        ),
    )
    def kpi_alert_sensor(
        context: dg.SensorEvaluationContext, alerts: AlertsResource, storage: StorageResource
    ) -> dg.SensorResult:
        now = clock()
        if not with_rules:
            return dg.SensorResult(skip_reason="No KPI has alert rules.")
        recipients = alerts.recipients(known_kpis=set(by_id), known_rules=rule_names)
        cursor = KpiCursor.from_json(context.cursor)
        lookback = now - timedelta(days=alerts.window_days + 1)
        imported: set[tuple[str, date]] = set()
        events, newest = new_materializations(
            context.instance,
            by_id,
            after_storage_id=cursor.storage_id,
            after_timestamp=lookback.timestamp(),
            imported=imported,
        )
        plan = plan_kpi_tick(
            cursor,
            events,
            kpis=with_rules,
            now=now,
            window=alerts.window_days,
            deadline=deadline,
            read_up_to=newest,
        )
        store = storage.get_store()
        ledger = AlertLedger(store, KPI_LEDGER_KEY)
        missing: dict[str, set[date]] = {}
        if plan.overdue:
            missing, found = _confirm_missing(
                context.instance, plan.overdue, kpis=by_id, already=ledger.read()
            )
            if found:
                # Landed before the cursor's memory (a reset cursor): remember and judge them.
                again = plan_kpi_tick(
                    plan.cursor,
                    found,
                    kpis=with_rules,
                    now=now,
                    window=alerts.window_days,
                    deadline=deadline,
                )
                for kpi_id, days in again.landed.items():
                    plan.landed.setdefault(kpi_id, set()).update(days)
                plan = KpiTickPlan(landed=plan.landed, overdue=plan.overdue, cursor=again.cursor)
        for kpi_id, day in imported:
            plan.landed.get(kpi_id, set()).discard(day)
        fired = evaluate(with_rules, storage.get_series(), landed=plan.landed, missing=missing)
        notices = [notice_for(a, ui_base_url=alerts.ui_base_url) for a in fired]
        result = dispatch(
            notices,
            ledger=ledger,
            recipients=recipients,
            now=now,
            max_attempts=alerts.max_attempts,
            label="Daily Index KPI alerts",
        )
        summary = (
            f"{len(events)} new KPI materialisation(s), "
            f"{sum(len(d) for d in plan.landed.values())} recent KPI day(s) judged; "
            + _summary(result, "alert(s)")
        )
        context.log.info(summary)
        return dg.SensorResult(skip_reason=summary, cursor=plan.cursor.to_json())

    return kpi_alert_sensor


# --- Operator alerts -----------------------------------------------------------------------


def first_lines(text: str | None, lines: int = ERROR_LINES, chars: int = 600) -> str:
    """The first lines of an error, cut to a readable size."""
    kept = [line.rstrip() for line in (text or "").strip().splitlines() if line.strip()][:lines]
    joined = "\n".join(kept)
    return joined if len(joined) <= chars else joined[: chars - 1] + "…"


def _root_cause(event: dg.DagsterEvent) -> str:
    """The innermost error of a step failure (Dagster wraps ours in its own)."""
    error = getattr(event.event_specific_data, "error", None)
    if error is None:
        return event.message or ""
    while error.cause is not None:
        error = error.cause
    return error.message


def run_failure_notice(
    *, run_id: str, job_name: str, partition: str | None, errors: Sequence[str], ui_base_url: str
) -> Notice:
    where = f" (partition {partition})" if partition else ""
    detail = "\n".join(first_lines(e) for e in errors if e) or "(no error message recorded)"
    return Notice(
        key=f"run|{run_id}",
        title=f"Run failed: {job_name}{where}",
        text=(
            f"Run {run_id} of job {job_name}{where} failed.\n{detail}\n"
            f"{run_link(ui_base_url, run_id)}"
        ),
        kind="run_failure",
    )


def build_run_failure_alert_sensor(
    *, clock: Callable[[], datetime] = _utc_now
) -> dg.SensorDefinition:
    """Tell the operators about every failed run of this code location's jobs, once."""

    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR_NAME,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Tell the operators (DAILY_INDEX_OPERATOR_URLS, else the outbox folder) about every "
            "failed run of any job in this code location, once per run, with the run's link "
            "and the failure's first lines."
        ),
    )
    def run_failure_alert_sensor(
        context: dg.RunFailureSensorContext, alerts: AlertsResource, storage: StorageResource
    ) -> None:
        run = context.dagster_run
        errors = [context.failure_event.message or ""]
        for event in context.get_step_failure_events():
            errors.append(f"step {event.step_key}: {_root_cause(event)}")
        notice = run_failure_notice(
            run_id=run.run_id,
            job_name=run.job_name,
            partition=run.tags.get("dagster/partition"),
            errors=errors,
            ui_base_url=alerts.ui_base_url,
        )
        result = dispatch(
            [notice],
            ledger=AlertLedger(storage.get_store(), OPERATOR_LEDGER_KEY),
            recipients=alerts.operators(),
            now=clock(),
            max_attempts=alerts.max_attempts,
            label="Daily Index operators",
        )
        context.log.info(_summary(result, "run failure alert(s)"))

    return run_failure_alert_sensor


def _metadata_lines(metadata: Mapping[str, object], limit: int = 5) -> list[str]:
    lines = []
    for name, value in list(metadata.items())[:limit]:
        shown = getattr(value, "value", value)
        lines.append(f"{name}: {first_lines(str(shown), 1, 160)}")
    return lines


def check_failure_notice(
    *,
    check_key: dg.AssetCheckKey,
    execution_id: int,
    run_id: str,
    evaluation: dg.AssetCheckEvaluation,
    ui_base_url: str,
    partition: str | None = None,
) -> Notice:
    partition = evaluation.partition or partition
    where = f" for {partition}" if partition else ""
    severity = getattr(evaluation.severity, "value", str(evaluation.severity))
    asset = check_key.asset_key.to_user_string()
    body = [f"Check {check_key.name!r} of {asset} failed ({severity}){where} in run {run_id}."]
    if evaluation.description:
        body.append(first_lines(evaluation.description))
    body += _metadata_lines(evaluation.metadata)
    body.append(run_link(ui_base_url, run_id))
    return Notice(
        key=f"check|{asset}|{check_key.name}|{partition or '-'}|{run_id}|{execution_id}",
        title=f"Check failed ({severity}): {asset} {check_key.name}{where}",
        text="\n".join(body),
        kpi_id=None,
        kind="check_failure",
    )


def _run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The partition a run was for (a check on a partitioned asset, itself unpartitioned)."""
    run = instance.get_run_by_id(run_id)
    return run.tags.get("dagster/partition") if run is not None else None


def changed_checks(seen: Mapping[str, int], latest: Mapping[str, int | None]) -> list[str]:
    """Check keys whose latest completed execution differs from the one last seen."""
    return sorted(k for k, v in latest.items() if v is not None and seen.get(k) != v)


def build_check_failure_alert_sensor(
    *,
    check_keys: Sequence[dg.AssetCheckKey],
    clock: Callable[[], datetime] = _utc_now,
) -> dg.SensorDefinition:
    """Tell the operators about every failed asset check evaluation, once.

    The event log keeps check executions in their own table: one query gives the latest
    completed execution per check; only checks whose latest changed since the cursor are
    read further, and of those only the failed evaluations of the alert window count.
    """
    by_name = {k.to_user_string(): k for k in check_keys}

    @dg.sensor(
        name=CHECK_FAILURE_SENSOR_NAME,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Tell the operators about every failed evaluation of the {len(by_name)} asset "
            "checks (ERROR and WARN), once each, with the verdict's explanation and the run's "
            "link. Open-source Dagster does not alert on failed checks by itself."
        ),
    )
    def check_failure_alert_sensor(
        context: dg.SensorEvaluationContext, alerts: AlertsResource, storage: StorageResource
    ) -> dg.SensorResult:
        now = clock()
        if not by_name:
            return dg.SensorResult(skip_reason="No asset checks in this code location.")
        try:
            seen = dict(json.loads(context.cursor or "{}").get("latest", {}))
        except (ValueError, AttributeError, TypeError):
            seen = {}
        events = context.instance.event_log_storage
        summaries = events.get_asset_check_summary_records(list(by_name.values()))
        latest = {
            name: (
                summary.last_completed_check_execution_record.id
                if summary.last_completed_check_execution_record is not None
                else None
            )
            for name, summary in ((n, summaries.get(k)) for n, k in by_name.items())
            if summary is not None
        }
        since = now.timestamp() - alerts.window_days * 86400
        notices = []
        for name in changed_checks(seen, latest):
            check_key = by_name[name]
            for record in events.get_asset_check_execution_history(
                check_key, limit=CHECK_HISTORY_PAGE
            ):
                evaluation = record.evaluation
                if (
                    not isinstance(evaluation, dg.AssetCheckEvaluation)
                    or evaluation.passed
                    or record.create_timestamp < since
                ):
                    continue
                notices.append(
                    check_failure_notice(
                        check_key=check_key,
                        execution_id=record.id,
                        run_id=record.run_id,
                        evaluation=evaluation,
                        ui_base_url=alerts.ui_base_url,
                        partition=record.partition
                        or _run_partition(context.instance, record.run_id),
                    )
                )
        result = dispatch(
            notices,
            ledger=AlertLedger(storage.get_store(), OPERATOR_LEDGER_KEY),
            recipients=alerts.operators(),
            now=now,
            max_attempts=alerts.max_attempts,
            label="Daily Index operators",
        )
        summary = _summary(result, "failed check alert(s)")
        context.log.info(summary)
        cursor = json.dumps(
            {"version": _CURSOR_VERSION, "latest": {k: v for k, v in latest.items() if v}},
            separators=(",", ":"),
        )
        return dg.SensorResult(skip_reason=summary, cursor=cursor)

    return check_failure_alert_sensor
