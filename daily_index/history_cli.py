"""`daily-index import` and `daily-index export`: history in and out of the KPI series.

An import validates the whole file first (every problem with file, line and column; exit 2
and nothing stored), stores its values into the per-KPI series, then records the covered
partitions in ONE run of the `kpis` asset (a single-run backfill with the file in run
config), so the Dagster UI shows each imported day as materialised with its source.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

EXIT_OK, EXIT_CONFIG, EXIT_FAILED = 0, 2, 3


# Dagster's own switches for recording a range run cheaply, set for the import's run (an
# operator's own value wins). One "planned" event for the range instead of one per partition
# (measured: 21 s of 100 s for 1,065 days on SQLite; the price, planned partitions not marked
# failed when the run fails, is what an import wants anyway). Batched writes of the per-day
# events Dagster derives from a range output (PostgreSQL: 300 days in 0.7 s instead of about
# 15 s; SQLite writes a batch event by event); events still buffered when the process is
# killed are recorded by the next import of the file.
RANGE_RUN_ENV = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}


@contextmanager
def _range_run_settings() -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in RANGE_RUN_ENV}
    for name, value in RANGE_RUN_ENV.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)


@contextmanager
def _watch_run(instance, run_id: str, bars: _Bars) -> Iterator[None]:
    """Move the recording bar from the run's own count of materialisations.

    Dagster records a range output's per-day events itself, after the step yields it, so
    only the event log knows how far it got. The bar counts materialisations and check
    evaluations: the checks cost as much again.
    """
    import dagster as dg

    stop = threading.Event()
    kinds = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}

    def poll() -> None:
        cursor, seen = None, 0
        while not stop.wait(0.5):
            try:
                # Only the events since the last poll: one small query per tick.
                page = instance.get_records_for_run(run_id, cursor=cursor, of_type=kinds)
            except Exception:  # noqa: S112 - the run is not created yet, or a busy database
                continue
            cursor, seen = page.cursor, seen + len(page.records)
            bars.set("record", seen)

    watcher = threading.Thread(target=poll, daemon=True)
    if bars.enabled:
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()


def import_run_config(file: str | Path, *, overwrite: bool) -> dict:
    """The run config that makes the `kpis` step take its values from a file."""
    return {"ops": {"kpis": {"config": {"import_file": str(file), "overwrite": overwrite}}}}


class _Bars:
    """Progress bars with the time left, fed by daily_index.progress events."""

    LABELS = {"store": "Storing series", "record": "Recording in Dagster"}

    def __init__(self, enabled: bool, console):
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def start(self, task: str, total: int) -> None:
        if self.enabled:
            self.tasks[task] = self.bar.add_task(self.LABELS.get(task, task), total=total)
            self.done[task] = 0

    def advance(self, task: str) -> None:
        if self.enabled and task in self.tasks:
            self.done[task] += 1
            self.bar.update(self.tasks[task], completed=self.done[task])

    def set(self, task: str, done: int) -> None:
        if self.enabled and task in self.tasks:
            self.bar.update(self.tasks[task], completed=done)

    def __enter__(self):
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()


def run_import(
    file: str,
    *,
    kpi_id: str | None,
    dry_run: bool,
    overwrite: bool,
    environ: Mapping[str, str],
    show_progress: bool,
) -> int:
    """Validate, store and record an import file; returns the exit code."""
    from daily_index import imports
    from daily_index.cli import QUIET_RUN, _instance, console, err_console, step_error
    from daily_index.definitions import build_definitions
    from daily_index.defs.kpis import kpi_key
    from daily_index.defs.partitions import daily_partitions
    from daily_index.defs.resources import ConfigurationError, storage_from_env
    from daily_index.registry import RegistryError, current_registry
    from daily_index.storage.series import KpiSeriesStore

    started = time.perf_counter()
    try:
        registry = current_registry(environ)
        kpis = registry.enabled(dict(environ))
        store = storage_from_env(environ).get_store()
    except (ConfigurationError, RegistryError) as exc:
        err_console.print(f"[red]Configuration error:[/red] {exc}")
        return EXIT_CONFIG
    first, last = imports.partition_bounds(daily_partitions)
    try:
        imported = imports.read_import(
            file,
            kpis=kpis,
            known_ids=[k.id for k in registry.kpis],
            kpi_id=kpi_id,
            first=first,
            last=last,
        )
    except imports.ImportValidationError as exc:
        for problem in exc.problems:
            err_console.print(str(problem), markup=False, highlight=False)
        err_console.print(f"[red]{exc.file}: {len(exc.problems)} problem(s); nothing stored.[/red]")
        return EXIT_CONFIG
    span = imported.span()
    ids = sorted(imported.values)
    console.print(
        f"{imported.name}: {imported.shape}, {imported.count} value(s) of {len(ids)} KPI(s) "
        f"({', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}) from {span[0]} to {span[1]}; "
        f"sha256 {imported.sha256[:16]}…"
        if span
        else f"{imported.name}: no values"
    )
    for note in imported.notes:
        console.print(f"Note: {note}.")
    series = KpiSeriesStore(store)
    plan = imports.plan_store(series, imported)
    if plan.changed and not overwrite:
        err_console.print(
            f"[red]{plan.changed_count} day(s) are already stored with other values; nothing "
            "stored.[/red] Use --overwrite to replace those days (only those):"
        )
        for line in plan.conflicts():
            err_console.print(f"  {line}", markup=False)
        return EXIT_CONFIG
    console.print(
        f"Series: {plan.new_count} new, {plan.changed_count} to replace, "
        f"{plan.unchanged_count} already stored with the same value."
    )
    if dry_run:
        console.print("Dry run: nothing stored, nothing recorded.")
        return EXIT_OK

    specs = {k.id: k for k in kpis}
    instance = _instance(ephemeral=False)
    with _Bars(show_progress, err_console) as bars:
        rows = {}
        if plan.new_count or plan.changed_count:
            bars.start("store", len(ids))
            for kpi_id_ in ids:
                one = imports.ImportFile(
                    imported.path,
                    imported.sha256,
                    imported.shape,
                    {kpi_id_: imported.values[kpi_id_]},
                )
                rows |= imports.store_import(series, one, plan, specs, overwrite=overwrite)
                bars.advance("store")
        else:
            rows = {kpi: series.rows(kpi) for kpi in ids}
        pending: dict[str, list[date]] = {}
        for kpi in ids:
            mine = imports.from_this_file(rows[kpi], imported, kpi)
            done = imports.recorded_days(instance, kpi_key(kpi), mine, imported.sha256)
            if left := [d for d in mine if d not in done]:
                pending[kpi] = left
        todo = sum(len(v) for v in pending.values())
        if not todo:
            console.print(
                f"Nothing to do: {imported.name} is already imported (its {imported.count} "
                "value(s) are in the series and recorded in Dagster)."
                if not (plan.new_count or plan.changed_count)
                else "Stored; every day was already recorded in Dagster."
            )
            return EXIT_OK
        all_days = sorted(d for days in pending.values() for d in days)
        window = (all_days[0], all_days[-1])
        if not (plan.new_count or plan.changed_count):
            console.print(
                f"The series already hold this file's values; recording the {todo} day(s) "
                "not yet recorded (an earlier import stopped half-way)."
            )
        console.print(f"Recording {todo} KPI-day(s) from {window[0]} to {window[1]} in one run ...")
        defs = build_definitions(environ=environ)
        job = defs.resolve_job_def("daily_kpis_job")
        bars.start("record", todo * 2)  # each KPI-day's materialisation and its check
        range_tags = (
            {}
            if window[0] == window[1]
            else {
                "dagster/asset_partition_range_start": window[0].isoformat(),
                "dagster/asset_partition_range_end": window[1].isoformat(),
            }
        )
        run_id = str(uuid.uuid4())
        with _range_run_settings(), _watch_run(instance, run_id, bars):
            result = job.execute_in_process(
                run_id=run_id,
                instance=instance,
                raise_on_error=False,
                run_config=QUIET_RUN | import_run_config(imported.path, overwrite=overwrite),
                asset_selection=[kpi_key(k) for k in sorted(pending)],
                partition_key=window[0].isoformat() if window[0] == window[1] else None,
                tags={**range_tags, "trigger": "cli", "daily_index/import": imported.name},
            )
    recorded = len(result.get_asset_materialization_events())
    if not result.success:
        err_console.print(
            f"[red]The import run failed[/red] after recording {recorded} day(s): "
            f"{step_error(result)}\nRun the same command again to finish: what landed is kept."
        )
        return EXIT_FAILED
    console.print(
        f"Imported {imported.name}: {recorded} KPI-day(s) recorded in run {result.run_id[:8]} "
        f"in {time.perf_counter() - started:.1f} s."
    )
    return EXIT_OK


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--kpi", "kpi_id", metavar="ID", help="The KPI of a 'date,value' file.")
@click.option("--dry-run", is_flag=True, help="Validate and compare only; store nothing.")
@click.option(
    "--overwrite", is_flag=True, help="Replace stored days whose value differs (only those)."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def import_command(
    file: str, kpi_id: str | None, dry_run: bool, overwrite: bool, no_progress: bool
) -> None:
    """Import KPI history from a CSV or Parquet file and record it in Dagster.

    FILE is a 'date,value' CSV of one KPI (with --kpi), a wide CSV ('date' then one column
    per KPI id) or Parquet with the same columns. Every problem is listed with its line and
    column, and nothing is stored from a file with a problem (exit 2).
    """
    sys.exit(
        run_import(
            file,
            kpi_id=kpi_id,
            dry_run=dry_run,
            overwrite=overwrite,
            environ=os.environ,
            show_progress=not no_progress,
        )
    )


@click.command("export")
@click.option("--kpi", "kpi_ids", multiple=True, metavar="ID", help="Only these KPIs.")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day (default: the first).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day (default: the last).")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json"]), required=True)
@click.option("--layout", type=click.Choice(["wide", "long"]), default="wide", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File (default: stdout).")
def export_command(
    kpi_ids: tuple[str, ...],
    start: str | None,
    end: str | None,
    fmt: str,
    layout: str,
    output: str | None,
) -> None:
    """Export KPI series: values exactly as stored, a missing day empty (never 0)."""
    from daily_index import exports
    from daily_index.cli import _parse_day, err_console
    from daily_index.defs.resources import ConfigurationError, storage_from_env
    from daily_index.registry import RegistryError, current_registry
    from daily_index.storage.series import KpiSeriesStore

    try:
        registry = current_registry(os.environ)
        store = storage_from_env(os.environ).get_store()
    except (ConfigurationError, RegistryError) as exc:
        err_console.print(f"[red]Configuration error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    # Any KPI of the registry has a series to export, also one disabled here since.
    kpis = registry.enabled(dict(os.environ))
    if kpi_ids:
        known = {k.id for k in registry.kpis}
        unknown = [k for k in kpi_ids if k not in known]
        if unknown:
            err_console.print(f"[red]Unknown KPI id(s):[/red] {', '.join(unknown)}")
            sys.exit(EXIT_CONFIG)
        kpis = [k for k in registry.kpis if k.id in kpi_ids]
    first = _parse_day(start) if start else None
    last = _parse_day(end) if end else None
    if first and last and first > last:
        raise click.BadParameter(f"--from {first} is after --to {last}")
    if fmt == "parquet" and output is None:
        raise click.UsageError("Parquet is binary: give a file with -o")
    data = exports.collect(KpiSeriesStore(store), kpis, start=first, end=last)
    body = exports.render(data, fmt, layout)  # type: ignore[arg-type]
    if output is None:
        sys.stdout.write(body.decode("utf-8"))
        return
    Path(output).write_bytes(body)
    err_console.print(
        f"Exported {len(kpis)} KPI(s), {len(data.days())} day(s) to {output} ({fmt}, {layout})."
    )
