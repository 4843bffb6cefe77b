"""The `daily-index` command: run a day, list and validate KPIs, check the setup, demo.

Exit codes (scripts may rely on them):
  0  everything asked for succeeded
  1  the run finished but some KPIs failed (the others are stored) or doctor found a problem
  2  bad usage or configuration (the message says which setting)
  3  the run failed as a whole (e.g. storage unreachable); nothing half-written remains
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from daily_index import progress
from daily_index.alerts.cli import alerts
from daily_index.api.cli import serve_api
from daily_index.history_cli import export_command, import_command
from daily_index.ingest.cli import serve_ingest
from daily_index.n8n_control import n8n_group
from daily_index.registry import RegistryError, load_registry, registry_path

if TYPE_CHECKING:
    from daily_index.formatting import Change
    from daily_index.report.model import KpiRow

EXIT_OK, EXIT_PARTIAL, EXIT_CONFIG, EXIT_FAILED = 0, 1, 2, 3
DEFAULT_DAGSTER_HOME = ".dagster_home"

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


TODAY_ENV = "DAILY_INDEX_TODAY"


def _parse_day(value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date as YYYY-MM-DD, got {value!r}") from None


def _default_day(environ: Mapping[str, str]) -> date:
    """Today: $DAILY_INDEX_TODAY when set (the day the sources take as today), else UTC's.

    Raises:
        click.UsageError: DAILY_INDEX_TODAY is set but is not a date (exit code 2).
    """
    value = (environ.get(TODAY_ENV) or "").strip()
    if not value:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.UsageError(f"{TODAY_ENV} must be a date as YYYY-MM-DD, got {value!r}") from None


def _instance(ephemeral: bool):
    import dagster as dg

    if ephemeral:
        return dg.DagsterInstance.ephemeral()
    # Runs must land where `dagster dev` looks: the same DAGSTER_HOME.
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DEFAULT_DAGSTER_HOME).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # SQLite in DAGSTER_HOME is Dagster's default; the file only silences its notice.
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


class _ProgressBars:
    """Rich progress bars fed by daily_index.progress events."""

    LABELS = {
        "fetch": "Fetching KPIs",
        "store": "Storing series",
        "charts": "Rendering charts",
        "deliver": "Delivering",
    }

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def __call__(self, event: progress.Progress) -> None:
        if not self.enabled:
            return
        if event.task not in self.tasks:
            label = self.LABELS.get(event.task, event.task)
            self.tasks[event.task] = self.bar.add_task(label, total=event.total, failed="")
            self.failed[event.task] = 0
        if not event.ok:
            self.failed[event.task] += 1
        failed = self.failed[event.task]
        self.bar.update(
            self.tasks[event.task],
            completed=event.done,
            total=event.total,
            failed=f"[red]{failed} failed[/red]" if failed else "",
        )

    def reset(self) -> None:
        for task_id in self.tasks.values():
            self.bar.remove_task(task_id)
        self.tasks.clear()
        self.failed.clear()

    def __enter__(self):
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()


_CHANGE_COLOURS = {"+": "green", "-": "red"}


def _change_cell(change: Change | None) -> str:
    from daily_index.formatting import format_change

    text = format_change(change)
    colour = _CHANGE_COLOURS.get(text[:1])
    return f"[{colour}]{text}[/{colour}]" if colour else text


def _row_cells(row: KpiRow) -> tuple[str, str, str]:
    """Value, 1-day change and status of one day-table row, as the CLI shows them."""
    from daily_index.formatting import brief, format_value

    value = format_value(row.value, row.spec.unit)
    reason = escape(row.reason or "")
    if row.status == "gap":
        as_of = row.as_of
        value = (
            f"[dim]{format_value(as_of.value, row.spec.unit)} (as of {as_of.day})[/dim]"
            if as_of
            else "[dim]–[/dim]"
        )
        return value, "–", f"[dim]gap[/dim]: {escape(brief(row.reason))}"
    if row.status == "failed":
        if row.earlier_fetch:
            value = f"{value} [dim](earlier fetch)[/dim]"
        return value, _change_cell(row.changes[1]), f"[red]failed[/red]: {reason or 'fetch failed'}"
    if row.status == "missing":
        return value, "–", "[red]missing[/red]: not fetched"
    return value, _change_cell(row.changes[1]), "[green]ok[/green]"


def _kpi_table(
    defs_env: Mapping[str, str], day: date, kpi_ids: list[str] | None, title: str
) -> tuple[Table, int, int]:
    """The day's KPIs as the CLI prints them, the number of failed or missing, and of gaps.

    The status comes from this day's fetch status, so a re-run whose fetch failed shows
    (and counts) the failure even when an earlier fetch had stored a value.
    """
    from daily_index.defs.resources import storage_from_env
    from daily_index.registry import current_registry
    from daily_index.report.model import load_day_table

    kpis = current_registry(defs_env).enabled(dict(defs_env))
    if kpi_ids:
        kpis = [k for k in kpis if k.id in kpi_ids]
    day_table = load_day_table(kpis, storage_from_env(defs_env).get_store(), day, window_days=2)
    table = Table(title=title, title_justify="left")
    for column in ("KPI", "Value", "Δ 1 day", "Status"):
        table.add_column(column, justify="right" if column in ("Value", "Δ 1 day") else "left")
    for row in day_table.rows:
        table.add_row(escape(row.spec.name), *_row_cells(row))
    return table, len(day_table.problems), len(day_table.gaps)


# The CLI prints its own summary of failures; Dagster's console log would repeat them.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def step_error(result) -> str:
    import dagster as dg

    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps our exception; its own message is the useful one.
            while error.cause is not None:
                error = error.cause
            # Drop the exception's class name ("dagster...Failure: ...") for people.
            return re.sub(r"^[\w.]+(Error|Failure|Exception): ", "", error.message.strip())
    return "unknown error (see the run's logs)"


def materialisation_metadata(result, key) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == key:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}


def _history_selection(
    environ: Mapping[str, str], kpi_ids: list[str] | None, first: date, last: date
) -> list | None:
    """The KPIs a history range asks for: those with at least one observation to expect.

    A KPI whose source keeps no history for those days (CoinGecko's keyless `/global`) is
    left out: in a range run that fails for another KPI, Dagster marks every partition it
    planned and did not materialise as failed, and those days can never have a value.
    """
    from daily_index.calendars import expected_gap
    from daily_index.defs.kpis import kpi_key
    from daily_index.registry import current_registry

    today = _default_day(environ)
    specs = current_registry(environ).enabled(dict(environ))
    if kpi_ids:
        specs = [s for s in specs if s.id in kpi_ids]
    span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    due = [s for s in specs if any(not expected_gap(s, d, today) for d in span)]
    if len(due) == len(specs) and not kpi_ids:
        return None
    return [kpi_key(s.id) for s in due]


def run_day(
    *,
    day: date,
    environ: Mapping[str, str],
    kpi_ids: list[str] | None,
    show_progress: bool,
    ephemeral: bool,
    label: str = "",
    report: bool = True,
    history_days: int = 0,
) -> int:
    """Materialise day D in-process (KPIs, then the report); returns an exit code."""
    from daily_index.definitions import build_definitions
    from daily_index.defs.delivery import DELIVERY_KEY
    from daily_index.defs.kpis import kpi_key
    from daily_index.defs.report import PDF_KEY
    from daily_index.defs.resources import ConfigurationError, storage_from_env
    from daily_index.delivery import SubscriberFileError, load_subscribers

    try:
        defs = build_definitions(environ=environ)
        kpi_job = defs.resolve_job_def("daily_kpis_job")
        report_job = defs.resolve_job_def("daily_report_job")
        if report and environ.get("DAILY_INDEX_SUBSCRIBERS_FILE"):
            # Checked before anything runs: a bad file is a configuration error (exit 2),
            # not a report run that fails after the KPIs were fetched.
            load_subscribers(environ["DAILY_INDEX_SUBSCRIBERS_FILE"])
    except SubscriberFileError as exc:
        err_console.print(f"[red]Subscriber file error:[/red] {escape(str(exc))}")
        return EXIT_CONFIG
    except (ConfigurationError, RegistryError) as exc:
        err_console.print(f"[red]Configuration error:[/red] {exc}")
        return EXIT_CONFIG
    selection = [kpi_key(k) for k in kpi_ids] if kpi_ids else None
    instance = _instance(ephemeral)
    started = time.perf_counter()
    with _ProgressBars(show_progress) as bars, progress.listening(bars):
        if history_days:
            first, last = day - timedelta(days=history_days), day - timedelta(days=1)
            history_keys = _history_selection(environ, kpi_ids, first, last)
            if history_keys == []:
                console.print(f"{label}No KPI has history to load for {first} .. {last}.")
            else:
                left_out = (
                    "" if history_keys is None else f" ({len(history_keys)} KPIs with history)"
                )
                console.print(f"{label}Loading history {first} .. {last} in one run{left_out} ...")
                history = kpi_job.execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config=QUIET_RUN,
                    asset_selection=history_keys,
                    tags={
                        "dagster/asset_partition_range_start": first.isoformat(),
                        "dagster/asset_partition_range_end": last.isoformat(),
                        "trigger": "cli",
                        # A long history load must not be taken for a dead run by a daemon
                        # watching the same instance (the job's own limit is 10 minutes).
                        "dagster/max_runtime": str(max(600, history_days * 60)),
                    },
                )
                bars.reset()
                if not history.success:
                    err_console.print(
                        f"[yellow]History incomplete:[/yellow] "
                        f"{step_error(history).splitlines()[0]} "
                        "(reasons per day in status/<date>.json)."
                    )
        console.print(f"{label}Materialising KPIs for [bold]{day}[/bold] ...")
        result = kpi_job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            asset_selection=selection,
            tags={"trigger": "cli"},
            run_config=QUIET_RUN,
        )
    materialised = len(result.get_asset_materialization_events())
    try:
        table, failures, gaps = _kpi_table(environ, day, kpi_ids, f"{label}KPIs for {day}")
        console.print(table)
    except Exception as exc:  # storage unreachable: the run's own error follows
        failures, gaps = -1, 0
        err_console.print(f"[red]Cannot read back the stored KPIs:[/red] {exc}")
    console.print(
        f"{materialised} KPIs stored in {time.perf_counter() - started:.1f} s "
        f"(run {result.run_id[:8]})."
        + (f" {gaps} KPI(s) had no observation expected (not failures)." if gaps else "")
    )
    if not result.success and materialised == 0:
        err_console.print(f"[red]Run failed:[/red] {step_error(result)}")
        return EXIT_FAILED
    code = EXIT_OK if result.success and failures <= 0 else EXIT_PARTIAL
    if failures > 0:
        err_console.print(
            f"[yellow]{failures} KPI(s) failed or missing; the others were stored.[/yellow]"
        )
    elif not result.success:
        err_console.print(f"[yellow]The KPI run failed:[/yellow] {step_error(result)}")
    if not report or kpi_ids:
        return code

    console.print(
        f"{label}Building the report for [bold]{day}[/bold] (charts, analysis, PDF, delivery) ..."
    )
    report_started = time.perf_counter()
    with _ProgressBars(show_progress) as bars, progress.listening(bars):
        outcome = report_job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            tags={"trigger": "cli"},
            run_config=QUIET_RUN,
        )
    if not outcome.success:
        err_console.print(f"[red]Report run failed:[/red] {step_error(outcome)}")
        return EXIT_FAILED
    pdf = materialisation_metadata(outcome, PDF_KEY)
    sent = materialisation_metadata(outcome, DELIVERY_KEY)
    store = storage_from_env(environ).get_store()
    where = store.local_path(f"reports/{day}.pdf") or f"reports/{day}.pdf in {store.description}"
    console.print(
        f"{label}Report: [bold]{where}[/bold] ({pdf.get('pages')} pages"
        f"{', PARTIAL' if pdf.get('partial') else ''}; {pdf.get('analyst')})\n"
        f"{label}Headline: {pdf.get('headline')}\n"
        f"{label}Delivery: {sent.get('sent', 0)} sent, {sent.get('failed', 0)} failed, "
        f"{sent.get('dead', 0)} dead, {sent.get('already_sent', 0)} already sent "
        f"(ledger {sent.get('ledger')}){_sent_as(sent)}; report built in "
        f"{time.perf_counter() - report_started:.1f} s"
    )
    if environ.get("DAILY_INDEX_SUBSCRIBERS_FILE") in (None, ""):
        outbox = environ.get("DAILY_INDEX_OUTBOX_DIR", ".data/outbox")
        console.print(f"{label}No subscriber file set: the report went to the outbox {outbox}/")
    return code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Daily Index Tracker: collect market KPIs, store their history, build the daily report."""


@main.command()
@click.option(
    "--date",
    "day",
    metavar="YYYY-MM-DD",
    help="The day to run (default: today, UTC; $DAILY_INDEX_TODAY when set).",
)
@click.option("--kpi", "kpi_ids", multiple=True, metavar="ID", help="Only these KPIs (repeatable).")
@click.option(
    "--history",
    default=0,
    show_default=True,
    metavar="DAYS",
    help="First load this many earlier days in one backfill run (charts need history).",
)
@click.option("--kpis-only", is_flag=True, help="Only the KPIs, no report.")
@click.option("--no-progress", is_flag=True, help="No progress bars (e.g. in cron logs).")
def run(
    day: str | None, kpi_ids: tuple[str, ...], history: int, kpis_only: bool, no_progress: bool
) -> None:
    """Run one whole day in-process: KPIs, then charts, analysis, PDF and delivery.

    With --kpi, only those KPIs are fetched and no report is built.
    """
    code = run_day(
        day=_parse_day(day) if day else _default_day(os.environ),
        environ=os.environ,
        kpi_ids=list(kpi_ids) or None,
        show_progress=not no_progress,
        ephemeral=False,
        report=not kpis_only,
        history_days=history,
    )
    sys.exit(code)


@main.command()
@click.option(
    "--date",
    "day",
    metavar="YYYY-MM-DD",
    help="The day to replay (default: the last recorded day).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the demo's data here (default: a temporary folder).",
)
@click.option(
    "--history",
    default=89,
    show_default=True,
    help="Days of recorded history to load first (one backfill run) for the charts.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo(day: str | None, out_dir: str | None, history: int, no_progress: bool) -> None:
    """The same run on bundled recorded responses served on 127.0.0.1 (no network, no keys)."""
    from daily_index.replay import DEMO_DAY, ReplayServer

    target = _parse_day(day) if day else DEMO_DAY
    folder = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="daily-index-demo-"))
    banner = "[bold magenta]DEMO DATA[/bold magenta] "
    with ReplayServer() as server:
        # The demo owns its process: clear real settings so nothing leaves 127.0.0.1.
        for key in [k for k in os.environ if k.startswith("DAILY_INDEX_") or k == "FRED_API_KEY"]:
            os.environ.pop(key)
        os.environ.update(demo_environment(server, folder, today=DEMO_DAY))
        os.environ["DAGSTER_HOME"] = str((folder / "dagster_home").resolve())
        env = os.environ
        console.print(
            f"{banner}recorded responses replayed from {server.url}; storing into {folder}"
        )
        code = run_day(
            day=target,
            environ=env,
            kpi_ids=None,
            show_progress=not no_progress,
            ephemeral=False,
            label=banner,
            history_days=history,
        )
    from daily_index.defs.resources import BASE_URL_ENV

    ui_env = folder / "demo.env"
    ui_env.write_text(
        "".join(
            f"{key}={os.environ[key]}\n"
            for key in (
                "DAGSTER_HOME",
                "DAILY_INDEX_DATA_DIR",
                "DAILY_INDEX_OUTBOX_DIR",
                TODAY_ENV,
                "DAILY_INDEX_DEMO",
                "FRED_API_KEY",
            )
        )
        # n8n KPIs stay visible in the UI; the replay server itself is gone, so every source
        # points at a closed port on 127.0.0.1: a run launched from the demo's UI fails
        # clearly instead of reaching a public API.
        + "DAILY_INDEX_N8N_BASE_URL=http://127.0.0.1:9\n"
        + "".join(f"{variable}=http://127.0.0.1:9\n" for variable in BASE_URL_ENV.values())
    )
    console.print(f"{banner}data kept in {folder}")
    dagster = Path(sys.executable).with_name("dagster")
    console.print(
        f"Browse the demo in the Dagster UI: set -a; . {ui_env}; set +a; {dagster} dev",
        soft_wrap=True,
    )
    sys.exit(code)


def demo_environment(server, folder: Path, *, today: date) -> dict[str, str]:
    """Settings that point every source at the replay server and storage at `folder`."""
    from daily_index.defs.resources import BASE_URL_ENV

    env = {BASE_URL_ENV[family]: url for family, url in server.base_urls().items()}
    env.update(
        {
            "DAILY_INDEX_STORAGE": "local",
            "DAILY_INDEX_DATA_DIR": str(folder / "store"),
            "DAILY_INDEX_OUTBOX_DIR": str(folder / "outbox"),
            "DAILY_INDEX_N8N_BASE_URL": server.n8n_base_url,
            "DAILY_INDEX_NEWS_FEEDS": ",".join(server.news_feed_urls()),
            "FRED_API_KEY": "demo-key-not-secret",
            TODAY_ENV: today.isoformat(),
            "DAILY_INDEX_DEMO": "1",
        }
    )
    return env


@main.group()
def kpis() -> None:
    """Inspect the KPI registry."""


@kpis.command("list")
def kpis_list() -> None:
    """List the registry's KPIs and whether each is enabled here."""
    try:
        registry = load_registry()
    except RegistryError as exc:
        err_console.print(f"[red]{exc}[/red]")
        sys.exit(EXIT_CONFIG)
    table = Table(title=f"{registry_path()} (version {registry.version})", title_justify="left")
    for column in ("id", "name", "type", "unit", "source", "group", "enabled"):
        table.add_column(column)
    for kpi in registry.kpis:
        if kpi.is_enabled():
            enabled = "[green]yes[/green]"
        elif not kpi.active:
            enabled = "no (inactive)"
        else:
            enabled = f"no (needs {kpi.requires_env})"
        table.add_row(kpi.id, kpi.name, kpi.type, kpi.unit, kpi.source.kind, kpi.group, enabled)
    console.print(table)


@kpis.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def kpis_validate(file: str | None) -> None:
    """Validate a registry file (default: the one in use)."""
    path = Path(file) if file else registry_path()
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        err_console.print(f"[red]Invalid registry[/red]\n{exc}")
        sys.exit(EXIT_CONFIG)
    enabled = len(registry.enabled())
    console.print(
        f"[green]OK[/green] {path}: version {registry.version}, {len(registry.kpis)} KPIs "
        f"({enabled} enabled here)"
    )


@main.command()
@click.option(
    "--offline",
    is_flag=True,
    help="Skip the requests to the sources and n8n (the store is checked).",
)
def doctor(offline: bool) -> None:
    """Check the configuration and what is reachable, as a run would; never prints a secret.

    The store gets a probe object written, read back and deleted; each source an enabled
    KPI uses, and n8n, one request. Exit 1 when a check found a problem.
    """
    from daily_index.doctor import run_checks

    checks = run_checks(os.environ, offline=offline)
    table = Table(title="daily-index doctor", title_justify="left", show_header=False)
    table.add_column("check")
    table.add_column("result")
    for check in checks:
        mark = {True: "[green]ok[/green]", None: "[yellow]off[/yellow]"}.get(
            check.ok, "[red]problem[/red]"
        )
        table.add_row(check.name, f"{mark}  {escape(check.detail)}")
    console.print(table)
    sys.exit(EXIT_PARTIAL if any(c.ok is False for c in checks) else EXIT_OK)


def _delivery_line(target: date, meta: Mapping[str, object]) -> str:
    """The `deliver` summary: this run's sends, why the rest were skipped, the ledger."""
    skipped = meta.get("skipped") or {}
    ledger = meta.get("ledger_status") or {}
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"
    uncertain = int(meta.get("uncertain") or 0)
    return (
        f"Delivery for {target}: this run {meta.get('sent', 0)} sent, "
        f"{meta.get('failed', 0)} failed, {meta.get('dead', 0)} dead; skipped: {reasons}. "
        f"Ledger ({meta.get('ledger')}): {ledger.get('sent', 0)} sent, "
        f"{ledger.get('failed', 0) - uncertain} failed, {uncertain} outcome unknown, "
        f"{ledger.get('dead', 0)} dead, {ledger.get('pending', 0)} pending "
        f"of {meta.get('endpoints', 0)} endpoints" + _sent_as(meta)
    )


def _sent_as(meta: Mapping[str, object]) -> str:
    """What this run's sends carried: `; sent as: 2 file, 3 link (presigned)`."""
    delivered = meta.get("delivered") or {}
    if not isinstance(delivered, Mapping) or not delivered:
        return ""
    parts = ", ".join(f"{n} {what}" for what, n in sorted(delivered.items()))
    return f"; sent as: {parts} (links: {meta.get('link', 'none')})"


@main.command()
@click.option("--date", "day", metavar="YYYY-MM-DD", required=True, help="The report's day.")
@click.option(
    "--resend-failed",
    is_flag=True,
    help="Also retry endpoints that failed too often and sends of unknown outcome "
    "(these may arrive twice).",
)
@click.option(
    "--include-dead",
    is_flag=True,
    help="With --resend-failed: also retry dead endpoints (410 Gone or out of attempts), "
    "e.g. after fixing their URL.",
)
@click.option(
    "--amended",
    is_flag=True,
    help="The amended edition (sent after a partial report was completed), with its own ledger.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def deliver(
    day: str, resend_failed: bool, include_dead: bool, amended: bool, no_progress: bool
) -> None:
    """(Re)deliver day D's report; endpoints already served are skipped.

    Exit 0 when every endpoint has been sent the report; 1 while any is failed, dead,
    of unknown outcome or pending; 2 for a bad subscriber file or setting; 3 when the
    delivery run itself failed.
    """
    from daily_index.definitions import build_definitions
    from daily_index.defs.automation import REPORT_TAG
    from daily_index.defs.delivery import DELIVERY_KEY
    from daily_index.defs.resources import ConfigurationError
    from daily_index.delivery import SubscriberFileError, load_subscribers

    if include_dead and not resend_failed:
        raise click.UsageError("--include-dead goes with --resend-failed")
    target = _parse_day(day)
    try:
        job = build_definitions(environ=os.environ).resolve_job_def("daily_report_job")
        if os.environ.get("DAILY_INDEX_SUBSCRIBERS_FILE"):
            # The whole file is checked before any send: a bad one is a configuration error.
            load_subscribers(os.environ["DAILY_INDEX_SUBSCRIBERS_FILE"])
    except SubscriberFileError as exc:
        err_console.print(f"[red]Subscriber file error:[/red] {escape(str(exc))}")
        sys.exit(EXIT_CONFIG)
    except (ConfigurationError, RegistryError) as exc:
        err_console.print(f"[red]Configuration error:[/red] {escape(str(exc))}")
        sys.exit(EXIT_CONFIG)
    run_config = {
        **QUIET_RUN,
        "ops": {
            "report__delivery": {
                "config": {"resend_failed": resend_failed, "resend_dead": include_dead}
            }
        },
    }
    with _ProgressBars(not no_progress) as bars, progress.listening(bars):
        outcome = job.execute_in_process(
            partition_key=target.isoformat(),
            instance=_instance(False),
            raise_on_error=False,
            asset_selection=[DELIVERY_KEY],
            run_config=run_config,
            tags={"trigger": "cli", **({REPORT_TAG: "amended"} if amended else {})},
        )
    if not outcome.success:
        err_console.print(f"[red]Delivery failed:[/red] {step_error(outcome)}")
        sys.exit(EXIT_FAILED)
    meta = materialisation_metadata(outcome, DELIVERY_KEY)
    console.print(_delivery_line(target, meta))
    if meta.get("subscriber_problem_count"):
        err_console.print(
            f"[yellow]{meta['subscriber_problem_count']} subscriber entries skipped[/yellow] "
            f"(lines {escape(str(meta.get('subscriber_problem_lines', ''))[:300])}); "
            "`daily-index doctor` shows the first"
        )
    sys.exit(EXIT_PARTIAL if meta.get("unserved") else EXIT_OK)


main.add_command(alerts)
main.add_command(import_command)
main.add_command(export_command)
main.add_command(n8n_group)
main.add_command(serve_ingest)
main.add_command(serve_api)


if __name__ == "__main__":
    main()
