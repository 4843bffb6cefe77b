"""The push sensor: every accepted push (daily_index/ingest) becomes its KPI-day's event.

A data push is stored exactly as a pulled value (raw payload archived, the row upserted into
`kpi/<id>.parquet`, the day's status file set to ok) and reported as the materialisation of
`kpi/<id>` for its day, with the metadata a pulled one carries plus `delivery: push` and the
push's `webhook_id`. An error push becomes a failed-fetch observation, as a pulled failure does.

Pushes a killed server journaled but did not file yet (daily_index/ingest/journal.py) are
filed first. Never twice: a queue marker leaves the inbox only once the event log holds the
event naming that push (`webhook_id`); until then each tick looks the push up in the event
log first and reports it only when it is not there. The daemon records a tick's events
before its cursor, so a tick cut short is either fully recorded (the next tick finds it) or
not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.defs.kpis import kpi_key
from daily_index.defs.resources import StorageResource
from daily_index.ingest.inbox import Inbox, Push
from daily_index.ingest.journal import spool_segments
from daily_index.registry import KpiSpec
from daily_index.storage.series import KpiSeriesStore, SeriesRow, record_fetch_status

SENSOR_NAME = "ingest_push_sensor"
MINIMUM_INTERVAL_SECONDS = 30
MAX_PER_TICK = 500
"""Pushes reported per tick: a day of 200 KPIs in one tick, a bounded tick otherwise."""


def _recorded(instance: dg.DagsterInstance, push: Push) -> bool:
    """Whether the event log already holds this push's materialisation or observation."""
    records_filter = dg.AssetRecordsFilter(
        asset_key=kpi_key(push.kpi_id), asset_partitions=[push.day.isoformat()]
    )
    fetch = instance.fetch_materializations if push.kind == "data" else instance.fetch_observations
    for record in fetch(records_filter, limit=50).records:
        event = record.asset_materialization or record.asset_observation
        entry = event.metadata.get("webhook_id") if event is not None else None
        if entry is not None and getattr(entry, "value", entry) == push.webhook_id:
            return True
    return False


def _metadata(spec: KpiSpec, push: Push, update: KPIDataUpdate) -> dict[str, object]:
    return {
        "value": dg.MetadataValue.float(update.value),
        "unit": spec.unit,
        "source": update.source or spec.metadata.source,
        "fetched_at": dg.MetadataValue.timestamp(push.received_at),
        "trace_id": update.trace_id,
        "delivery": "push",
        "webhook_id": push.webhook_id,
    }


def materialise(
    pushes: list[Push], *, kpis: dict[str, KpiSpec], series: KpiSeriesStore
) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    """Store each push like a pulled value and yield its event (the caller reports them)."""
    statuses: dict = {}
    for push in pushes:
        spec = kpis[push.kpi_id]
        entry: dict[str, object] = {
            "trace_id": push.update["traceId"],
            "at": time.time(),
            "delivery": "push",
        }
        if push.kind == "data":
            update = KPIDataUpdate.model_validate(push.update)
            series.archive_raw(spec.id, push.day, update.to_wire())
            series.upsert_rows(
                spec.id,
                [
                    SeriesRow(
                        day=push.day,
                        value=update.value,
                        unit=update.unit or spec.unit,
                        source=update.source or spec.metadata.source,
                        fetched_at=datetime.fromtimestamp(push.received_at, UTC),
                        trace_id=update.trace_id,
                    )
                ],
            )
            statuses.setdefault(push.day, {})[spec.id] = entry | {
                "status": "ok",
                "value": update.value,
            }
            yield dg.AssetMaterialization(
                asset_key=kpi_key(spec.id),
                partition=push.day.isoformat(),
                metadata=_metadata(spec, push, update),
            )
        else:
            failure = KPIErrorUpdate.model_validate(push.update)
            if series.value_on(spec.id, push.day) is None:
                # A stored value of the day stays the day's status; the failure is still logged.
                statuses.setdefault(push.day, {})[spec.id] = entry | {
                    "status": "failed",
                    "reason": failure.error,
                    "code": failure.error_code,
                }
            yield dg.AssetObservation(
                asset_key=kpi_key(spec.id),
                partition=push.day.isoformat(),
                metadata={
                    "fetch_status": "failed",
                    "error": failure.error,
                    "error_code": failure.error_code or "",
                    "trace_id": failure.trace_id,
                    "delivery": "push",
                    "webhook_id": push.webhook_id,
                },
            )
    for day, entries in statuses.items():
        record_fetch_status(series.store, day, entries)


def build_ingest_sensor(*, kpis: list[KpiSpec]) -> dg.SensorDefinition:
    """The sensor turning accepted pushes into KPI materialisations (see the module doc)."""
    by_id = {k.id: k for k in kpis}

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turns pushes accepted by `daily-index serve-ingest` into KPI "
        "materialisations for their day (docs/ingest.md).",
    )
    def ingest_push_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource
    ) -> dg.SensorResult | dg.SkipReason:
        inbox = Inbox(storage.get_store())
        # What a killed server journaled but never filed (a no-op for what it filed).
        spool_segments(inbox, delete=False)
        queued = inbox.pending(limit=MAX_PER_TICK)
        if not queued:
            return dg.SkipReason("no pushes waiting in the inbox")
        todo: list[Push] = []
        finished = unknown = 0
        for marker in queued:
            push = inbox.load(marker)
            if push is None:
                continue  # being filed right now: its record follows its marker

            if push.kpi_id not in by_id:
                unknown += 1  # kept until the KPI is active again in this code location
                continue
            if _recorded(context.instance, push):
                inbox.done(marker)
                finished += 1
                continue
            todo.append(push)
        series = KpiSeriesStore(inbox.store)
        events = list(materialise(todo, kpis=by_id, series=series))
        context.log.info(
            f"{len(events)} push(es) reported, {finished} confirmed and cleared, "
            f"{unknown} waiting for a KPI that is not active here"
        )
        if not events:
            return dg.SkipReason(f"{finished} push(es) confirmed; nothing new")
        return dg.SensorResult(asset_events=events)

    return ingest_push_sensor
