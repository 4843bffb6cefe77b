"""Jobs, schedules and sensors: when things run.

The daily schedule materialises the day's KPI partition at 12:00 UTC (cron and timezone
configurable). The report side (fan-in sensor, alerting) hangs off the same jobs.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from daily_index.calendars import expected_gap, in_calendar
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import ConfigurationError, env_bool, env_int
from daily_index.registry import KpiSpec

DEFAULT_CRON = "0 12 * * *"
DEFAULT_TIMEZONE = "UTC"

# A run of either job outliving its `dagster/max_runtime` is taken for dead (its worker was
# killed) and marked failed by the daemon's run monitoring (dagster.yaml): the default run
# launcher cannot watch a worker's process. Generous against the measured runs (KPI step about
# 12 s for 200 KPIs, a whole report about 60 s), short against the fan-in sensor's first retry
# (15 min after the schedule), which waits while a KPI run of the day is still going.
KPI_RUN_MAX_RUNTIME_S = 600
REPORT_RUN_MAX_RUNTIME_S = 1800

daily_kpis_job = dg.define_asset_job(
    name="daily_kpis_job",
    selection=dg.AssetSelection.key_prefixes(["kpi"]),
    # One step (all KPIs of a day fetched concurrently): in process, a launch from the UI, the
    # schedule or a sensor costs what `daily-index run` costs, not a process per step.
    executor_def=dg.in_process_executor,
    tags={
        # A run that failed because some KPIs failed must not be re-run whole by the instance's
        # run retries: the fan-in sensor re-requests just the missing KPIs.
        "dagster/max_retries": "0",
        "dagster/max_runtime": str(KPI_RUN_MAX_RUNTIME_S),
        # dagster.yaml limits the runs holding this tag (n8n and the public APIs).
        "daily_index/n8n": "1",
    },
    description="Fetch and store every active KPI for one day (one step, concurrent fetches).",
)


def build_daily_kpis_schedule(
    *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE, specs: Sequence[KpiSpec] = ()
) -> dg.ScheduleDefinition:
    """The daily KPI runs: the day's partition, and the day a publication lag back.

    KPIs published with a lag (`publicationLagDays`) are fetched for the day that lag back.
    A KPI is requested only for a day its calendar has an observation on. Left out rather
    than fetched and skipped: a run that fails for another KPI marks every partition it
    planned and did not materialise as failed, and a weekend of a business-day series must
    not turn red because a crypto API was down that Saturday.
    """

    @dg.schedule(
        name="daily_kpis_schedule",
        cron_schedule=cron,
        execution_timezone=timezone,
        job=daily_kpis_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Materialise the day's KPI partition ({cron}, {timezone}), and for KPIs published "
            "with a lag (publicationLagDays) the day that lag back; KPIs whose calendar has no "
            "observation on a day (weekends of business-day series) are left out."
        ),
    )
    def daily_kpis_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        today = context.scheduled_execution_time.date()
        by_lag: dict[int, list[KpiSpec]] = {}
        for spec in specs:
            by_lag.setdefault(spec.publication_lag_days, []).append(spec)
        requests = []
        for lag, group in sorted(by_lag.items()):
            day = today - timedelta(days=lag)
            due = [spec for spec in group if in_calendar(spec, day)]
            if not due:
                continue
            # The whole job when every KPI is due: the common case reads well in the UI.
            selection = None if len(due) == len(specs) else [dg.AssetKey(s.asset_path) for s in due]
            requests.append(
                dg.RunRequest(
                    run_key=f"kpis-{day.isoformat()}" + (f"-lag{lag}" if lag else ""),
                    partition_key=day.isoformat(),
                    asset_selection=selection,
                    tags={"trigger": "schedule"},
                )
            )
        if not specs:
            requests.append(
                dg.RunRequest(
                    run_key=f"kpis-{today.isoformat()}",
                    partition_key=today.isoformat(),
                    tags={"trigger": "schedule"},
                )
            )
        return requests or dg.SkipReason(f"No KPI has an observation due for {today}.")

    return daily_kpis_schedule


def schedule_settings(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        "cron": environ.get("DAILY_INDEX_SCHEDULE_CRON", DEFAULT_CRON),
        "timezone": environ.get("DAILY_INDEX_SCHEDULE_TZ", DEFAULT_TIMEZONE),
    }


# --- The report fan-in sensor ----------------------------------------------------------------

REPORT_DAY_TAG = "daily_index/report_day"

daily_report_job = dg.define_asset_job(
    name="daily_report_job",
    # Partitioned by daily_partitions through its assets (`partitions_def=` here is deprecated).
    # The day's headlines are fetched in the report run: the report is what reads them.
    selection=dg.AssetSelection.key_prefixes(["report"], ["news"]),
    # Every run of the job gets its day as a tag, however it starts (sensor, UI, backfill,
    # `dagster job launch`): dagster.yaml lets one report run per day run at a time.
    config=dg.PartitionedConfig(
        partitions_def=daily_partitions,
        run_config_for_partition_key_fn=lambda _day: {},
        tags_for_partition_key_fn=lambda day: {REPORT_DAY_TAG: day},
    ),
    # Its steps run one after another: in process, not a process per step.
    executor_def=dg.in_process_executor,
    tags={
        # Safe to retry from the failed step: delivery sends only what the ledger has not sent.
        "dagster/max_retries": "2",
        "dagster/retry_strategy": "FROM_FAILURE",
        "dagster/max_runtime": str(REPORT_RUN_MAX_RUNTIME_S),
        # dagster.yaml limits the runs holding this tag (the LLM provider's rate limits).
        "daily_index/llm": "1",
    },
    description="Build and deliver one day's report (charts, analysis, PDF, delivery).",
)

REPORT_SENSOR_NAME = "report_fanin_sensor"
REPORT_TAG = "daily_index/report"
MISSING_TAG = "daily_index/missing"
# Dagster's own run tags: the daemon skips a request whose run key already ran for the sensor.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
PARTITION_TAG = "dagster/partition"
MISSING_TAG_MAX_CHARS = 500
_CURSOR_VERSION = 1
_ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
_SIMPLE_DAILY_CRON = re.compile(r"^\s*(\d{1,2})\s+(\d{1,2})\s+\*\s+\*\s+\*\s*$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FaninSettings:
    """When a day's KPIs are due and how long the report waits for stragglers.

    The day D is scheduled at `schedule_hour:schedule_minute` in `timezone` on D. Missing KPIs
    are re-requested at scheduled + retry_base_minutes * 2**(k-1) for attempt k, and at
    scheduled + deadline_minutes the report goes out partial.
    """

    schedule_hour: int = 12
    schedule_minute: int = 0
    timezone: str = DEFAULT_TIMEZONE
    deadline_minutes: int = 120
    lookback_days: int = 3
    retry_base_minutes: int = 15
    max_retries: int = 3
    amend_after_partial: bool = False
    minimum_interval_seconds: int = 60

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.schedule_hour <= 23 or not 0 <= self.schedule_minute <= 59:
            problems.append(
                f"schedule time {self.schedule_hour}:{self.schedule_minute} is not a time of day"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not a known IANA timezone")
        if self.deadline_minutes < 1:
            problems.append(f"deadline_minutes must be >= 1, got {self.deadline_minutes}")
        if self.lookback_days < 1:
            problems.append(f"lookback_days must be >= 1, got {self.lookback_days}")
        if self.retry_base_minutes < 1:
            problems.append(f"retry_base_minutes must be >= 1, got {self.retry_base_minutes}")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if self.minimum_interval_seconds < 1:
            problems.append(
                f"minimum_interval_seconds must be >= 1, got {self.minimum_interval_seconds}"
            )
        if problems:
            raise ValueError("report fan-in settings: " + "; ".join(problems))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def scheduled_at(self, day: date) -> datetime:
        return datetime.combine(day, time(self.schedule_hour, self.schedule_minute), self.tz)

    def deadline(self, day: date) -> datetime:
        return self.scheduled_at(day) + timedelta(minutes=self.deadline_minutes)

    def retry_due(self, day: date, attempt: int) -> datetime:
        return self.scheduled_at(day) + timedelta(
            minutes=self.retry_base_minutes * 2 ** (attempt - 1)
        )


def fanin_settings_from_env(environ: Mapping[str, str]) -> FaninSettings:
    """Fan-in settings from the environment; the scheduled time follows the daily schedule.

    The schedule's cron must be a plain daily one (`M H * * *`): the sensor needs one
    scheduled time per day to place retries and the deadline.
    """
    schedule = schedule_settings(environ)
    match = _SIMPLE_DAILY_CRON.match(schedule["cron"])
    if not match:
        raise ConfigurationError(
            f"DAILY_INDEX_SCHEDULE_CRON={schedule['cron']!r}: the report fan-in sensor needs a "
            "once-a-day cron of the form 'M H * * *' (e.g. '0 12 * * *')"
        )
    try:
        ZoneInfo(schedule["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"DAILY_INDEX_SCHEDULE_TZ={schedule['timezone']!r} is not a known IANA timezone"
        ) from None
    defaults = FaninSettings()
    return FaninSettings(
        schedule_hour=int(match.group(2)),
        schedule_minute=int(match.group(1)),
        timezone=schedule["timezone"],
        deadline_minutes=env_int(
            environ, "DAILY_INDEX_REPORT_DEADLINE_MINUTES", defaults.deadline_minutes, minimum=1
        ),
        lookback_days=env_int(
            environ, "DAILY_INDEX_REPORT_LOOKBACK_DAYS", defaults.lookback_days, minimum=1
        ),
        retry_base_minutes=env_int(
            environ, "DAILY_INDEX_KPI_RETRY_BASE_MINUTES", defaults.retry_base_minutes, minimum=1
        ),
        max_retries=env_int(
            environ, "DAILY_INDEX_KPI_MAX_RETRIES", defaults.max_retries, minimum=0
        ),
        amend_after_partial=env_bool(
            environ, "DAILY_INDEX_REPORT_AMEND", defaults.amend_after_partial
        ),
        minimum_interval_seconds=env_int(
            environ,
            "DAILY_INDEX_REPORT_SENSOR_INTERVAL_SECONDS",
            defaults.minimum_interval_seconds,
            minimum=1,
        ),
    )


def _kpi_id(key: dg.AssetKey) -> str:
    return key.path[-1]


def _missing_tag(missing: list[dg.AssetKey], max_chars: int = MISSING_TAG_MAX_CHARS) -> str:
    """Comma-joined KPI ids, cut to a readable length with a count of the rest."""
    ids = sorted(_kpi_id(k) for k in missing)
    shown: list[str] = []
    used = 0
    for kpi_id in ids:
        if used + len(kpi_id) + 1 > max_chars:
            break
        shown.append(kpi_id)
        used += len(kpi_id) + 1
    rest = len(ids) - len(shown)
    return ",".join(shown) + (f",... (+{rest} more)" if rest else "")


def _fingerprint(keys: list[dg.AssetKey]) -> str:
    joined = "\n".join(k.to_user_string() for k in keys)
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()[:12]


def _read_cursor(raw: str | None, kpis: str, log: logging.Logger) -> dict[str, dict]:
    """Per-day state from the cursor; cached missing lists only if the KPI set is unchanged."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        if data.get("version") == _CURSOR_VERSION and isinstance(data.get("days"), dict):
            days = {day: dict(state) for day, state in data["days"].items()}
            if data.get("kpis") != kpis:
                for state in days.values():
                    state.pop("missing", None)
            return days
    except (ValueError, AttributeError, TypeError):
        pass
    # Not fatal: the run keys already on the instance say what was launched.
    log.warning(f"report_fanin_sensor: ignoring unreadable cursor {raw[:200]!r}")
    return {}


def _partitions_with(
    fetch: Callable[..., dg.EventRecordsResult],
    key: dg.AssetKey,
    days: list[str],
    keep: Callable[[dg.EventLogRecord], bool] = lambda record: True,
) -> set[str]:
    """The days among `days` with a record of `key` that `keep` accepts.

    `fetch` is the instance's `fetch_materializations` or `fetch_observations`.
    """
    found: set[str] = set()
    cursor = None
    while True:
        result = fetch(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=days), limit=100, cursor=cursor
        )
        found.update(r.partition_key for r in result.records if r.partition_key and keep(r))
        if not result.has_more or len(found) == len(days):
            return found & set(days)
        cursor = result.cursor


def _is_expected_gap(record: dg.EventLogRecord) -> bool:
    observation = record.asset_observation
    status = observation.metadata.get("fetch_status") if observation is not None else None
    return status is not None and status.value == "expected_gap"


def _landed(
    instance: dg.DagsterInstance,
    candidates: dict[str, list[dg.AssetKey]],
    specs: Mapping[dg.AssetKey, KpiSpec],
    today: date,
) -> tuple[dict[str, set[dg.AssetKey]], dict[str, set[dg.AssetKey]]]:
    """Of the candidate keys per day: those settled, and those settled by an expected gap.

    Settled: materialised, an expected gap by the registry (outside the KPI's calendar, not
    published yet, beyond its source's history), or observed as a gap (a market holiday).
    One event-log query per key (covering all its candidate days): 200 KPIs cost about
    0.6 s on SQLite, so the caller only asks about keys not already known to have landed.
    """
    days_by_key: dict[dg.AssetKey, list[str]] = {}
    landed: dict[str, set[dg.AssetKey]] = {day: set() for day in candidates}
    gaps: dict[str, set[dg.AssetKey]] = {day: set() for day in candidates}
    for day, keys in candidates.items():
        for key in keys:
            spec = specs.get(key)
            if spec is not None and expected_gap(spec, date.fromisoformat(day), today):
                gaps[day].add(key)
            else:
                days_by_key.setdefault(key, []).append(day)
    for key, days in days_by_key.items():
        found = _partitions_with(instance.fetch_materializations, key, days)
        for day in found:
            landed[day].add(key)
        rest = [day for day in days if day not in found]
        if rest:
            for day in _partitions_with(instance.fetch_observations, key, rest, _is_expected_gap):
                gaps[day].add(key)
    for day in candidates:
        landed[day] |= gaps[day]
    return landed, gaps


def build_report_fanin_sensor(
    *,
    kpi_keys: list[dg.AssetKey],
    settings: FaninSettings,
    clock: Callable[[], datetime] = _utc_now,
    specs: Sequence[KpiSpec] = (),
) -> dg.SensorDefinition:
    """The sensor that launches day D's report once every KPI of D has landed.

    A KPI has landed for D when it was materialised, when D is outside its calendar (`specs`
    give the calendars), or when its run observed D as an expected gap.

    Before the deadline it re-requests the missing KPIs with exponential backoff; at the
    deadline it launches the report anyway, tagged partial with the missing KPIs listed; with
    `amend_after_partial` it launches an amended report once the stragglers land. Each launch
    has a run key, remembered in the cursor and checked against the instance's runs, so a day
    gets its report exactly once even when the daemon restarts or the cursor is reset.
    """
    keys = sorted(set(kpi_keys), key=lambda k: k.to_user_string())
    by_name = {k.to_user_string(): k for k in keys}
    spec_by_key = {dg.AssetKey(spec.asset_path): spec for spec in specs}
    kpis_fingerprint = _fingerprint(keys)
    first_day = daily_partitions.start.date()

    @dg.sensor(
        name=REPORT_SENSOR_NAME,
        jobs=[daily_report_job, daily_kpis_job],
        minimum_interval_seconds=settings.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launch day D's report once all {len(keys)} KPIs have landed; re-request missing "
            f"KPIs (up to {settings.max_retries} times, backoff from "
            f"{settings.retry_base_minutes} min); partial report at scheduled time + "
            f"{settings.deadline_minutes} min ({settings.timezone})."
        ),
    )
    def report_fanin_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock()
        if now.tzinfo is None:
            raise ValueError("report_fanin_sensor: the clock must return an aware datetime")
        if not keys:
            return dg.SensorResult(skip_reason="No KPI is configured: nothing to fan in.")
        local_today = now.astimezone(settings.tz).date()
        candidates = [local_today - timedelta(days=n) for n in range(settings.lookback_days)]
        days = sorted(d for d in candidates if d >= first_day and settings.scheduled_at(d) <= now)
        state = _read_cursor(context.cursor, kpis_fingerprint, context.log)
        # Forget days that left the window: the cursor stays small.
        state = {day: state.get(day, {}) for day in (d.isoformat() for d in days)}

        def launched(run_key: str) -> dict[str, str] | None:
            records = context.instance.get_run_records(
                dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: REPORT_SENSOR_NAME}),
                limit=1,
            )
            return dict(records[0].dagster_run.tags) if records else None

        for day, day_state in state.items():
            # Fill in what the cursor does not know (first tick, reset cursor, restart).
            if "report" not in day_state:
                tags = launched(f"report-{day}")
                if tags is not None:
                    day_state["report"] = tags.get(REPORT_TAG, "complete")
            if (
                settings.amend_after_partial
                and day_state.get("report") == "partial"
                and not day_state.get("amended")
                and launched(f"report-{day}-amended") is not None
            ):
                day_state["amended"] = True

        def settled(day_state: dict) -> bool:
            if "report" not in day_state:
                return False
            if day_state["report"] == "partial" and settings.amend_after_partial:
                return bool(day_state.get("amended"))
            return True

        open_days = [day for day, s in state.items() if not settled(s)]
        # A KPI that landed for a day stays landed: only the cached missing ones are asked about.
        candidates = {
            day: [by_name[n] for n in state[day]["missing"] if n in by_name]
            if "missing" in state[day]
            else keys
            for day in open_days
        }
        landed, gapped = _landed(
            context.instance, candidates, spec_by_key, now.astimezone(UTC).date()
        )

        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        for day in open_days:
            day_state = state[day]
            d = date.fromisoformat(day)
            missing = [k for k in candidates[day] if k not in landed[day]]
            # KPIs settled by a gap, not by a value, do not make a report worth sending. Counted
            # over the ticks; a tick that asked about every KPI (no cached list) counts afresh.
            before = int(day_state.get("gaps", 0)) if "missing" in day_state else 0
            day_state["gaps"] = before + len(gapped[day])
            day_state["missing"] = [k.to_user_string() for k in missing]
            if "report" in day_state:
                # A partial report went out and amendments are on.
                if missing:
                    note = f"{day}: partial report out, {len(missing)} KPI(s) still missing"
                    notes.append(note)
                    context.log.info(note)
                    continue
                requests.append(
                    dg.RunRequest(
                        job_name=daily_report_job.name,
                        partition_key=day,
                        run_key=f"report-{day}-amended",
                        tags={REPORT_TAG: "amended"},
                    )
                )
                day_state["amended"] = True
                context.log.info(
                    f"{day}: all {len(keys)} KPIs landed after the partial report; "
                    "launching the amended report"
                )
                continue
            if not missing:
                requests.append(
                    dg.RunRequest(
                        job_name=daily_report_job.name,
                        partition_key=day,
                        run_key=f"report-{day}",
                        tags={REPORT_TAG: "complete"},
                    )
                )
                day_state["report"] = "complete"
                context.log.info(f"{day}: all {len(keys)} KPIs landed; launching the report")
                continue
            if now >= settings.deadline(d) and len(missing) + day_state["gaps"] >= len(keys):
                # A report without a single value helps nobody (e.g. a first deployment).
                day_state["report"] = "none"
                note = f"{day}: deadline passed and no KPI landed; no report for this day"
                notes.append(note)
                context.log.warning(note)
                continue
            if now >= settings.deadline(d):
                requests.append(
                    dg.RunRequest(
                        job_name=daily_report_job.name,
                        partition_key=day,
                        run_key=f"report-{day}",
                        tags={REPORT_TAG: "partial", MISSING_TAG: _missing_tag(missing)},
                    )
                )
                day_state["report"] = "partial"
                context.log.info(
                    f"{day}: deadline {settings.deadline(d).isoformat()} passed with "
                    f"{len(missing)}/{len(keys)} KPIs missing ({_missing_tag(missing, 120)}); "
                    "launching a partial report"
                )
                continue
            note = _retry_decision(context, settings, d, day_state, missing, requests, now)
            notes.append(note)
            context.log.info(note)

        for day_state in state.values():
            if settled(day_state):
                day_state.pop("missing", None)
        cursor = json.dumps(
            {"version": _CURSOR_VERSION, "kpis": kpis_fingerprint, "days": state}, sort_keys=True
        )
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        if not days:
            reason = f"No day in the last {settings.lookback_days} has reached its scheduled time."
        else:
            reason = "; ".join(notes) or "; ".join(
                _settled_note(day, day_state) for day, day_state in sorted(state.items())
            )
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return report_fanin_sensor


def _settled_note(day: str, day_state: dict) -> str:
    """What happened to a settled day, in the words of the skip reason."""
    report = day_state.get("report")
    if report == "none":
        return f"{day}: no report (no KPI had landed by the deadline)"
    if report == "partial":
        amended = " and its amendment" if day_state.get("amended") else ""
        return f"{day}: partial report{amended} launched"
    return f"{day}: report launched"


def _retry_decision(
    context: dg.SensorEvaluationContext,
    settings: FaninSettings,
    day: date,
    day_state: dict,
    missing: list[dg.AssetKey],
    requests: list[dg.RunRequest],
    now: datetime,
) -> str:
    """Before the deadline: re-request the missing KPIs if a retry attempt is due."""
    key = day.isoformat()
    waiting = f"{key}: {len(missing)} KPI(s) missing"
    due = [
        k
        for k in range(1, settings.max_retries + 1)
        if settings.retry_due(day, k) <= now < settings.deadline(day)
    ]
    done = int(day_state.get("retry", 0))
    attempt = max(due, default=0)
    if attempt <= done:
        upcoming = [
            k
            for k in range(done + 1, settings.max_retries + 1)
            if settings.retry_due(day, k) < settings.deadline(day)
        ]
        if upcoming:
            at = settings.retry_due(day, upcoming[0]).strftime("%H:%M %Z")
            return f"{waiting}; retry {upcoming[0]} due at {at}"
        return f"{waiting}; no retry left, partial report at {settings.deadline(day):%H:%M %Z}"
    run_key = f"kpis-retry-{key}-{attempt}"
    if context.instance.get_run_records(
        dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: REPORT_SENSOR_NAME}), limit=1
    ):
        day_state["retry"] = attempt
        return f"{waiting}; retry {attempt} already launched"
    active = context.instance.get_run_records(
        dg.RunsFilter(
            job_name=daily_kpis_job.name,
            tags={PARTITION_TAG: key},
            statuses=_ACTIVE_RUN_STATUSES,
        ),
        limit=1,
    )
    if active:
        return f"{waiting}; a KPI run for the day is still going, retry {attempt} waits for it"
    requests.append(
        dg.RunRequest(
            job_name=daily_kpis_job.name,
            partition_key=key,
            asset_selection=missing,
            run_key=run_key,
            tags={"daily_index/kpi_retry": str(attempt)},
        )
    )
    day_state["retry"] = attempt
    return f"{waiting} ({_missing_tag(missing, 120)}); re-requesting them, attempt {attempt}"
