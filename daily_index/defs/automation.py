"""Jobs, schedules and sensors: when things run.

The daily schedule materialises the day's KPI partition at 12:00 UTC (cron and timezone
configurable). The report side (fan-in sensor, alerting) hangs off the same jobs.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from daily_index.defs.partitions import daily_partitions

DEFAULT_CRON = "0 12 * * *"
DEFAULT_TIMEZONE = "UTC"

daily_kpis_job = dg.define_asset_job(
    name="daily_kpis_job",
    selection=dg.AssetSelection.key_prefixes(["kpi"]),
    partitions_def=daily_partitions,
    description="Fetch and store every active KPI for one day (one step, concurrent fetches).",
)


def build_daily_kpis_schedule(
    *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_kpis_schedule",
        cron_schedule=cron,
        execution_timezone=timezone,
        job=daily_kpis_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Materialise the day's KPI partition ({cron}, {timezone}).",
    )
    def daily_kpis_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(run_key=f"kpis-{day}", partition_key=day, tags={"trigger": "schedule"})

    return daily_kpis_schedule


def schedule_settings(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        "cron": environ.get("DAILY_INDEX_SCHEDULE_CRON", DEFAULT_CRON),
        "timezone": environ.get("DAILY_INDEX_SCHEDULE_TZ", DEFAULT_TIMEZONE),
    }
