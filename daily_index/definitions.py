"""The one entry point: builds the Definitions from the registry and the environment.

Cross-cutting policy (owners) is applied here once. The environment
is read when the code location loads (`@dg.definitions`), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from daily_index.defs.alerts import (
    build_check_failure_alert_sensor,
    build_kpi_alert_sensor,
    build_run_failure_alert_sensor,
)
from daily_index.defs.analysis import build_analysis_asset
from daily_index.defs.automation import (
    build_daily_kpis_schedule,
    build_report_fanin_sensor,
    daily_kpis_job,
    daily_report_job,
    fanin_settings_from_env,
    schedule_settings,
)
from daily_index.defs.charts import build_charts_asset
from daily_index.defs.delivery import build_delivery_asset
from daily_index.defs.ingest import build_ingest_sensor
from daily_index.defs.kpis import build_kpi_assets, kpi_key
from daily_index.defs.news import build_news_assets, news_from_env
from daily_index.defs.report import build_pdf_asset
from daily_index.defs.resources import build_resources
from daily_index.registry import Registry, current_registry

OWNERS = ["team:daily-index"]


def build_definitions(
    *, registry: Registry | None = None, environ: Mapping[str, str] | None = None
) -> dg.Definitions:
    env = os.environ if environ is None else environ
    registry = registry or current_registry(env)
    kpis = registry.enabled(dict(env))
    assets = [
        build_kpi_assets(kpis=kpis),
        build_charts_asset(kpis=kpis),
        build_analysis_asset(kpis=kpis),
        build_pdf_asset(kpis=kpis, registry_version=registry.version),
        build_delivery_asset(),
        *build_news_assets(kpis=kpis),
    ]
    assets = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(owners=OWNERS)) for a in assets
    ]
    fanin = fanin_settings_from_env(env)
    return dg.Definitions(
        assets=assets,
        jobs=[daily_kpis_job, daily_report_job],
        schedules=[build_daily_kpis_schedule(**schedule_settings(env), specs=kpis)],
        sensors=[
            build_report_fanin_sensor(
                kpi_keys=[kpi_key(k.id) for k in kpis], settings=fanin, specs=kpis
            ),
            build_kpi_alert_sensor(kpis=kpis, deadline=fanin.deadline),
            build_run_failure_alert_sensor(),
            build_ingest_sensor(kpis=kpis),
            build_check_failure_alert_sensor(
                check_keys=sorted(
                    {key for a in assets for key in a.check_keys}, key=lambda k: k.to_user_string()
                )
            ),
        ],
        resources={**build_resources(env), "news": news_from_env(env, registry.news.feeds)},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
