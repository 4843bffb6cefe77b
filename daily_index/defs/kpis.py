"""The KPI assets: one asset key per active KPI (`kpi/<id>`), all fetched in ONE step.

A step per KPI would cost Dagster's per-step overhead 200 times over (docs/architecture.md); one
multi-asset that fetches concurrently costs about one materialisation event per KPI.
Selecting a subset (re-run one KPI) works because the multi-asset can subset, and a range
of days in one run works because the backfill policy is single-run and the step fetches
every day of its range.
"""

import bisect
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import cast

import dagster as dg
import numpy as np

# Not exported by `dagster` in 1.13, but the only way for a range step's check evaluations to
# name the materialisation they checked (the UI shows them as outdated otherwise).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)

from daily_index import checks, derived, imports, progress
from daily_index.calendars import EXPECTED_GAP_CODES, calendar_gap, expected_gap
from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, partition_timestamp
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import KpiSourcesResource, StorageResource
from daily_index.registry import KpiSpec, derived_order
from daily_index.sources import FetchOutcome, fetch_all
from daily_index.sources.base import FetchRequest
from daily_index.storage.objectstore import ObjectStore
from daily_index.storage.series import (
    KpiSeriesStore,
    SeriesRow,
    read_fetch_status,
    record_fetch_status,
)

KPI_PREFIX = "kpi"


def kpi_key(kpi_id: str) -> dg.AssetKey:
    return dg.AssetKey([KPI_PREFIX, kpi_id])


def _spec_for(kpi: KpiSpec) -> dg.AssetSpec:
    limits = kpi.analysis_config.alert_thresholds
    extra: dict[str, object] = {}
    if kpi.is_derived:
        params = kpi.derived
        extra = {
            "derived_op": params.op,
            "derived_inputs": ", ".join(params.inputs),
            **({"derived_window": params.size} if params.size else {}),
        }
    return dg.AssetSpec(
        key=kpi_key(kpi.id),
        # A derived KPI's lineage: its inputs, upstream in the same step (computed after them).
        deps=[kpi_key(name) for name in kpi.derived.inputs] if kpi.is_derived else (),
        group_name=kpi.group,
        description=f"**{kpi.name}** ({kpi.unit or 'no unit'}). {kpi.description}",
        skippable=True,
        kinds={"parquet"},
        tags={"kpi_type": kpi.type, "source_kind": kpi.source.kind},
        metadata={
            "kpi_id": kpi.id,
            "source": kpi.metadata.source,
            "unit": kpi.unit,
            "chart_type": kpi.analysis_config.chart_type,
            "threshold_high": limits.high,
            "threshold_low": limits.low,
            **extra,
        },
    )


def _metadata(kpi: KpiSpec, outcome: FetchOutcome) -> dict[str, object]:
    update = cast(KPIDataUpdate, outcome.update)
    return {
        "value": dg.MetadataValue.float(update.value),
        "unit": kpi.unit,
        "source": update.source or kpi.metadata.source,
        "fetched_at": dg.MetadataValue.timestamp(time.time()),
        "latency_ms": dg.MetadataValue.float(round(outcome.latency_ms, 1)),
        "trace_id": update.trace_id,
        **{k: v for k, v in update.metadata.items() if k == imports.SHA_METADATA},
    }


class KpiRunConfig(dg.Config):
    """Run config of the `kpis` step; by default it fetches every day from the sources."""

    import_file: str | None = None
    """A CSV or Parquet file to take the values from instead of fetching (`daily-index
    import`): validated, stored to the series, and each of its days in the run recorded."""
    overwrite: bool = False
    """With `import_file`: replace stored days whose value differs from the file's."""


def _import_outcomes(prepared: imports.PreparedRun, kpis: list[KpiSpec]) -> list[FetchOutcome]:
    """The import's days still to record, as the outcomes a fetch of them would have given."""
    today = datetime.now(UTC).date()
    imported = prepared.imported
    return [
        FetchOutcome(
            request=FetchRequest(kpi, day, today, imported.trace_id, partition_timestamp(day)),
            update=KPIDataUpdate(
                traceId=imported.trace_id,
                kpiId=kpi.id,
                timestamp=partition_timestamp(day),
                value=imported.values[kpi.id][day],
                unit=kpi.unit,
                source=imported.source,
                metadata={imports.SHA_METADATA: imported.sha256},
            ),
            latency_ms=0.0,
            attempts=0,
        )
        for kpi in kpis
        for day in prepared.pending.get(kpi.id, [])
    ]


def _materializations(
    kpi: KpiSpec, good: list[FetchOutcome], *, single_day: bool
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
    """One event per stored value.

    A one-day run reports the step's output. A range run reports each day that got a
    value on its own, so a day the source could not give stays unmaterialised (and shows
    as failed) instead of being covered by the range.
    """
    if single_day:
        yield dg.MaterializeResult(asset_key=kpi_key(kpi.id), metadata=_metadata(kpi, good[0]))
        return
    for outcome in sorted(good, key=lambda o: o.request.day):
        yield dg.AssetMaterialization(
            asset_key=kpi_key(kpi.id),
            partition=outcome.request.day.isoformat(),
            metadata=_metadata(kpi, outcome),
        )


def _store_kpi(
    series: KpiSeriesStore, kpi: KpiSpec, good: list[FetchOutcome]
) -> dict[date, SeriesRow]:
    """Archive and upsert the KPI's new values; returns the series as written."""
    fetched_at = datetime.now(UTC)
    rows = []
    for outcome in good:
        update = cast(KPIDataUpdate, outcome.update)
        # Archive first: the series row is what makes the value visible downstream.
        series.archive_raw(kpi.id, outcome.request.day, update.to_wire())
        rows.append(
            SeriesRow(
                day=outcome.request.day,
                value=update.value,
                unit=update.unit or kpi.unit,
                source=update.source or kpi.metadata.source,
                fetched_at=fetched_at,
                trace_id=update.trace_id,
            )
        )
    return series.upsert_rows(kpi.id, rows)


def _days(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(key) for key in context.partition_keys]


@dataclass(frozen=True)
class Gap:
    """A KPI-day for which no observation exists or is expected: not a failure."""

    spec: KpiSpec
    day: date
    reason: str
    trace_id: str | None = None


def _is_gap(outcome: FetchOutcome) -> bool:
    update = outcome.update
    return isinstance(update, KPIErrorUpdate) and update.error_code in EXPECTED_GAP_CODES


def _check_specs(kpi: KpiSpec) -> list[dg.AssetCheckSpec]:
    lower, upper, _ = checks.bounds(kpi)
    rules = ["present or an expected gap", "finite"]
    if lower is not None or upper is not None:
        rules.append("within its bounds")
    if checks.stale_days(kpi) > 1:
        rules.append(f"not the same value {checks.stale_days(kpi)} observations running")
    rules.append(f"jump within {kpi.checks.jump_sigma:g} σ of the last 30 changes (warning)")
    with warnings.catch_warnings():
        # Partitioned checks are a preview in Dagster 1.13; they are what shows a verdict per day.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        spec = dg.AssetCheckSpec(
            checks.CHECK_NAME,
            asset=kpi_key(kpi.id),
            description=f"{kpi.name}: " + "; ".join(rules) + ".",
            partitions_def=daily_partitions,
        )
    return [spec]


def _check_event(
    outcome: checks.CheckOutcome, *, single_day: bool, target: TargetMaterialization | None = None
) -> dg.AssetCheckResult | dg.AssetCheckEvaluation:
    """The check's event: a result for a one-day run, an evaluation per day for a range.

    A one-day run's `AssetCheckResult` is tied to the step's partition and to the
    materialisation it checks; a range step has no single partition, so each day's verdict
    is an `AssetCheckEvaluation` naming its partition.
    """
    metadata: dict[str, object] = {
        v.rule: f"{'pass' if v.passed else 'FAIL'}: {v.detail}" for v in outcome.verdicts
    }
    metadata["failed_rules"] = ", ".join(v.rule for v in outcome.failed) or "none"
    common = {
        "asset_key": kpi_key(outcome.kpi_id),
        "check_name": checks.CHECK_NAME,
        "passed": outcome.passed,
        "severity": dg.AssetCheckSeverity(outcome.severity),
        "description": outcome.summary(),
        "metadata": metadata,
    }
    if single_day:
        return dg.AssetCheckResult(**common)
    return dg.AssetCheckEvaluation(
        **common, partition=outcome.day.isoformat(), target_materialization_data=target
    )


def build_kpi_assets(*, kpis: list[KpiSpec]) -> dg.AssetsDefinition:
    """One multi-asset producing `kpi/<id>` for every KPI given (the enabled ones)."""
    by_key = {kpi_key(k.id): k for k in kpis}

    @dg.multi_asset(
        name="kpis",
        specs=[_spec_for(k) for k in kpis],
        check_specs=[spec for k in kpis for spec in _check_specs(k)],
        partitions_def=daily_partitions,
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.single_run(),
        op_tags={"daily_index/concern": "kpis"},
    )
    def kpis_asset(
        context: dg.AssetExecutionContext,
        config: KpiRunConfig,
        sources: KpiSourcesResource,
        storage: StorageResource,
    ) -> Iterator[
        dg.MaterializeResult | dg.AssetObservation | dg.AssetCheckResult | dg.AssetCheckEvaluation
    ]:
        """Fetch every selected KPI for every day of the partition range, concurrently."""
        selected = [by_key[key] for key in sorted(context.selected_asset_keys) if key in by_key]
        # Dagster takes a multi-asset's outputs in topological order: derived KPIs last.
        selected = [k for k in selected if not k.is_derived] + derived_order(selected)
        checked = {key.asset_key for key in context.selected_asset_check_keys}
        days = _days(context)
        today = sources.today_date() or datetime.now(UTC).date()
        gaps: list[Gap] = []
        requests = []
        computed: list[FetchRequest] = []
        for kpi in selected:
            if kpi.is_derived and config.import_file:
                continue  # computed from its inputs, never imported
            for day in days:
                # A day outside the calendar or beyond the source's history is not asked for.
                reason = expected_gap(kpi, day, today) if day <= today else None
                if config.import_file:
                    # A file may hold any past day of the calendar, whatever the source keeps.
                    reason = calendar_gap(kpi, day)
                if reason:
                    gaps.append(Gap(kpi, day, reason))
                    continue
                (computed if kpi.is_derived else requests).append(
                    FetchRequest(
                        spec=kpi,
                        day=day,
                        today=today,
                        trace_id=uuid.uuid4().hex,
                        timestamp=partition_timestamp(day),
                    )
                )
        store = storage.get_store()
        store.check()
        series = KpiSeriesStore(store)
        context.log.info(
            f"Fetching {len(selected)} KPIs x {len(days)} day(s) = {len(requests)} KPI-days "
            + (f"and computing {len(computed)} derived KPI-days " if computed else "")
            + f"(each KPI's days in one range request where its API allows; concurrency "
            f"{sources.concurrency}; {len(gaps)} KPI-day(s) have no observation expected); "
            f"storing to {store.description}"
        )
        good: dict[str, list[FetchOutcome]] = defaultdict(list)
        bad: dict[str, list[FetchOutcome]] = defaultdict(list)
        done = 0

        def on_done(outcome: FetchOutcome) -> None:
            nonlocal done
            done += 1
            ok = isinstance(outcome.update, KPIDataUpdate)
            if ok:
                good[outcome.request.spec.id].append(outcome)
            elif _is_gap(outcome):
                update = outcome.update
                gaps.append(
                    Gap(outcome.request.spec, outcome.request.day, update.error, update.trace_id)
                )
            else:
                bad[outcome.request.spec.id].append(outcome)
            progress.emit("fetch", done, len(requests) + len(computed), outcome.request.spec.id, ok)

        prepared = None
        if config.import_file:
            prepared = imports.prepare_run(
                config.import_file,
                overwrite=config.overwrite,
                kpis=kpis,
                selected=selected,
                days=days,
                series=series,
                instance=context.instance,
                partitions=daily_partitions,
            )
            outcomes = _import_outcomes(prepared, selected)
            for outcome in outcomes:
                on_done(outcome)
        else:
            calls: Counter[str] = Counter()
            outcomes = fetch_all(requests, sources.settings(), on_done=on_done, calls=calls)
            context.log.info(
                f"Fetched {len(requests)} KPI-days with {sum(calls.values())} HTTP requests ("
                + (", ".join(f"{family} {n}" for family, n in sorted(calls.items())) or "none")
                + ")"
            )

        # Stored after the fetches, not while they run: writer threads competing with the
        # fetch loop for the GIL made both slower (measured: 1.75 s against 1.0 s for 200).
        to_store = [kpi for kpi in selected if good[kpi.id] and prepared is None]
        written: dict[str, dict[date, SeriesRow]] = dict(prepared.rows) if prepared else {}
        _store_all(series, store.write_parallelism, to_store, good, written)
        if computed:
            # Derived KPIs read their inputs as stored now, this run's values included.
            outcomes = [*outcomes, *_derive(computed, kpis, series, store, written, bad, gaps)]
            for outcome in outcomes[-len(computed) :]:
                on_done(outcome)
            derived_kpis = [k for k in selected if k.is_derived and good[k.id]]
            _store_all(series, store.write_parallelism, derived_kpis, good, written)
            to_store += derived_kpis

        statuses: dict[date, dict[str, dict]] = defaultdict(dict)
        for outcome in outcomes:
            update = outcome.update
            entry: dict[str, object] = {"trace_id": update.trace_id, "at": time.time()}
            if _is_gap(outcome):
                entry |= {"status": "gap", "reason": update.error, "code": update.error_code}
            elif isinstance(update, KPIErrorUpdate):
                entry |= {"status": "failed", "reason": update.error, "code": update.error_code}
            else:
                entry |= {"status": "ok", "value": update.value}
            statuses[outcome.request.day][outcome.request.spec.id] = entry
        for gap in gaps:
            if gap.trace_id is None:
                statuses[gap.day][gap.spec.id] = {
                    "status": "gap",
                    "reason": gap.reason,
                    "code": "not_in_calendar",
                    "at": time.time(),
                }
        for day, entries in statuses.items():
            record_fetch_status(store, day, entries)

        for kpi in selected:
            if prepared and len(days) > 1 and len(good[kpi.id]) == len(days):
                # Every day of the range has a value from the same file: one output, whose
                # per-day events Dagster records itself (batched with DAGSTER_EVENT_BATCH_SIZE).
                yield imports.range_result(kpi_key(kpi.id), prepared, kpi)
            elif good[kpi.id]:
                yield from _materializations(kpi, good[kpi.id], single_day=len(days) == 1)
        for kpi in selected:
            for outcome in bad[kpi.id]:
                update = cast(KPIErrorUpdate, outcome.update)
                yield dg.AssetObservation(
                    asset_key=kpi_key(kpi.id),
                    partition=outcome.request.day.isoformat(),
                    metadata={
                        "fetch_status": "failed",
                        "error": update.error,
                        "error_code": update.error_code or "",
                        "trace_id": update.trace_id,
                        "attempts": outcome.attempts,
                    },
                )
        for gap in sorted(gaps, key=lambda g: (g.spec.id, g.day)):
            yield dg.AssetObservation(
                asset_key=kpi_key(gap.spec.id),
                partition=gap.day.isoformat(),
                metadata={"fetch_status": "expected_gap", "reason": gap.reason},
            )
        check_kpis = [k for k in selected if kpi_key(k.id) in checked]
        # A range's evaluations name the materialisations just written (one query per KPI).
        targets = _targets(context, check_kpis, good) if len(days) > 1 else {}
        yield from _evaluate_checks(check_kpis, days, good, bad, gaps, written, series, targets)

        failed = {kpi_id: items for kpi_id, items in bad.items() if items}
        if failed:
            lines = [
                f"kpi/{kpi_id} {o.request.day}: {o.update.error}"  # type: ignore[union-attr]
                for kpi_id, items in sorted(failed.items())
                for o in items
            ]
            raise dg.Failure(
                description=(
                    f"{len(failed)} of {len(selected)} KPIs failed; the others were stored.\n"
                    + "\n".join(lines[:50])
                    + (f"\n... and {len(lines) - 50} more" if len(lines) > 50 else "")
                ),
                metadata={"failed_kpis": sorted(failed), "stored_kpis": len(to_store)},
                allow_retries=False,
            )

    return kpis_asset


def _store_all(
    series: KpiSeriesStore,
    parallelism: int,
    kpis: list[KpiSpec],
    good: dict[str, list[FetchOutcome]],
    written: dict[str, dict[date, SeriesRow]],
) -> None:
    """Store each KPI's new values in parallel; `written` gets each series as written."""
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        futures = [pool.submit(_store_kpi, series, kpi, good[kpi.id]) for kpi in kpis]
        for stored, (kpi, future) in enumerate(zip(kpis, futures, strict=True), start=1):
            written[kpi.id] = future.result()  # a storage failure fails the run
            progress.emit("store", stored, len(futures), kpi.id)


def _derive(
    requests: list[FetchRequest],
    kpis: list[KpiSpec],
    series: KpiSeriesStore,
    store: ObjectStore,
    written: dict[str, dict[date, SeriesRow]],
    bad: dict[str, list[FetchOutcome]],
    gaps: list[Gap],
) -> list[FetchOutcome]:
    """The derived KPI-days of the run, from the stored series of their inputs."""
    known: dict[tuple[str, date], tuple[str, str]] = {
        (o.request.spec.id, o.request.day): ("failed", o.update.error)  # type: ignore[union-attr]
        for items in bad.values()
        for o in items
    }
    known |= {(g.spec.id, g.day): ("gap", g.reason) for g in gaps}
    recorded: dict[date, dict[str, dict]] = {}

    def status_of(kpi_id: str, day: date) -> tuple[str, str] | None:
        if (kpi_id, day) in known:
            return known[(kpi_id, day)]
        if day not in recorded:
            recorded[day] = read_fetch_status(store, day)
        entry = recorded[day].get(kpi_id) or {}
        if entry.get("status") in ("gap", "failed"):
            return entry["status"], str(entry.get("reason") or "no reason recorded")
        return None

    def read(kpi_id: str) -> dict[date, float]:
        rows = written.get(kpi_id)
        if rows is None:
            rows = written[kpi_id] = series.rows(kpi_id)
        return {day: row.value for day, row in rows.items()}

    return derived.compute_outcomes(
        requests, specs={k.id: k for k in kpis}, read=read, status_of=status_of
    )


def _targets(
    context: dg.AssetExecutionContext, kpis: list[KpiSpec], good: dict[str, list[FetchOutcome]]
) -> dict[tuple[str, str], TargetMaterialization]:
    """This run's materialisation of each stored KPI-day, for a range's check evaluations.

    The UI counts a partition's check as current only when its evaluation names the
    partition's latest materialisation; a one-day `AssetCheckResult` gets that from Dagster,
    a range's evaluations get it here (one event-log query per KPI, after its events).
    """
    targets: dict[tuple[str, str], TargetMaterialization] = {}
    for kpi in kpis:
        days = sorted(o.request.day.isoformat() for o in good[kpi.id])
        if not days:
            continue
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=kpi_key(kpi.id), asset_partitions=days),
            limit=len(days) * 2,
        ).records
        for record in records:
            key = (kpi.id, record.partition_key or "")
            if record.run_id == context.run.run_id and key not in targets:
                targets[key] = TargetMaterialization(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                )
    return targets


def _evaluate_checks(
    kpis: list[KpiSpec],
    days: list[date],
    good: dict[str, list[FetchOutcome]],
    bad: dict[str, list[FetchOutcome]],
    gaps: list[Gap],
    written: dict[str, dict[date, SeriesRow]],
    series: KpiSeriesStore,
    targets: dict[tuple[str, str], TargetMaterialization],
) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """The quality check of every KPI-day of the run, against the series as stored now."""
    gap_reasons = {(g.spec.id, g.day): g.reason for g in gaps}
    single_day = len(days) == 1
    for kpi in kpis:
        failures = {o.request.day: o.update.error for o in bad[kpi.id]}  # type: ignore[union-attr]
        # A KPI that stored nothing this run is read once, for earlier values of its days.
        rows = written.get(kpi.id)
        if rows is None:
            rows = series.rows(kpi.id) if failures else {}
        stored_days = sorted(rows)
        values = np.array([rows[d].value for d in stored_days], dtype=float)
        fetched = {o.request.day for o in good[kpi.id]}
        for day in days:
            stored = rows.get(day)
            value = stored.value if stored is not None else None
            earlier = values[: bisect.bisect_left(stored_days, day)]
            if day in fetched:
                outcome = checks.evaluate_after(kpi, day, value, earlier, status="ok")
            elif (kpi.id, day) in gap_reasons:
                reason = gap_reasons[(kpi.id, day)]
                outcome = checks.evaluate_after(
                    kpi, day, None, earlier, status="gap", reason=reason
                )
            elif day in failures:
                outcome = checks.evaluate_after(
                    kpi, day, value, earlier, status="failed", reason=failures[day]
                )
            else:
                continue
            target = targets.get((kpi.id, day.isoformat()))
            yield _check_event(outcome, single_day=single_day, target=target)
