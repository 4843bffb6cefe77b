"""`daily-index alerts ...`: evaluate the KPI alert rules over the stored series, send, backtest.

The same rules, code and ledger as `kpi_alert_sensor`, without a Dagster instance: a day
"landed" when its value is in the KPI's series.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime

import click
from rich.console import Console
from rich.table import Table

from daily_index.alerts.dispatch import dispatch
from daily_index.alerts.engine import evaluate_stored, notice_for
from daily_index.alerts.ledger import KPI_LEDGER_KEY, AlertLedger, in_cooldown
from daily_index.alerts.recipients import RecipientsError
from daily_index.formatting import Change, format_change
from daily_index.registry import RegistryError, current_registry

EXIT_OK, EXIT_CONFIG = 0, 2

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _day(ctx: click.Context, param: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date as YYYY-MM-DD, got {value!r}") from None


@click.group(name="alerts")
def alerts() -> None:
    """KPI alerts: evaluate the registry's alert rules over the stored series."""


@alerts.command(name="check")
@click.option("--date", "day", required=True, callback=_day, help="The day (YYYY-MM-DD).")
@click.option("--send", is_flag=True, help="Send the digests (once per KPI, day and rule).")
def check(day: date, send: bool) -> None:
    """Show which alert rules fire for a day; with --send, send them like the sensor does.

    Exits 0 whether or not anything fired; 2 on a bad registry, recipients file or setting.
    """
    # Imported here: the definitions' modules cost a second to import, --help should not.
    from daily_index.defs.automation import fanin_settings_from_env
    from daily_index.defs.resources import ConfigurationError, alerts_from_env, storage_from_env

    env = os.environ
    try:
        registry = current_registry(env)
        kpis = [k for k in registry.enabled(dict(env)) if k.alerts]
        settings = alerts_from_env(env)
        recipients = settings.recipients(
            known_kpis={k.id for k in kpis},
            known_rules={r.name for k in kpis for r in k.alerts}
            | {r.kind for k in kpis for r in k.alerts},
        )
        deadline = fanin_settings_from_env(env).deadline(day)
        storage = storage_from_env(env)
    except (RegistryError, RecipientsError, ConfigurationError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(EXIT_CONFIG) from None

    now = datetime.now(UTC)
    fired = evaluate_stored(kpis, storage.get_series(), day=day, deadline_passed=deadline <= now)
    notices = [notice_for(a, ui_base_url=settings.ui_base_url) for a in fired]
    ledger = AlertLedger(storage.get_store(), KPI_LEDGER_KEY)
    status: dict[str, str] = {}
    if send:
        result = dispatch(
            notices,
            ledger=ledger,
            recipients=recipients,
            now=now,
            max_attempts=settings.max_attempts,
            label="Daily Index KPI alerts",
        )
        failed = ", ".join(result.failed)
        for notice in result.claim.fresh:
            channels = result.claim.by_channel
            sent_to = [c for c, keys in channels.items() if notice.key in keys]
            bad = [c for c in sent_to if c in result.failed]
            status[notice.key] = (
                f"failed: {', '.join(bad)}" if bad else "sent" if sent_to else "no recipient"
            )
        for notice in result.claim.cooled:
            status[notice.key] = "held back (cooldown)"
        if failed:
            err_console.print(f"[yellow]some channels failed (retried next time): {failed}")
    entries = ledger.read() if not send else {}
    for notice in notices:
        if notice.key in status:
            continue
        if send or notice.key in entries:
            status[notice.key] = "already alerted"
        elif in_cooldown(entries, notice):
            status[notice.key] = "would be held back (cooldown)"
        else:
            status[notice.key] = "new (not sent: use --send)"

    if not fired:
        rules = sum(len(k.alerts) for k in kpis)
        click.echo(f"No alert fires for {day.isoformat()} ({len(kpis)} KPIs, {rules} rules).")
        return
    # Built per call: the width follows $COLUMNS of this run (80 when not a terminal).
    console = Console(highlight=False)
    table = Table(title=f"Alerts for {day.isoformat()}", title_justify="left")
    for column in ("KPI", "Rule", "Value", "Previous", "Change", "What", "Status"):
        table.add_column(column, overflow="fold")
    for alert in fired:
        previous = alert.previous_text if alert.previous is not None else "–"
        table.add_row(
            f"{alert.kpi_name} ({alert.kpi_id})",
            alert.rule,
            alert.value_text,
            previous,
            alert.change_text,
            alert.detail,
            status[alert.key],
        )
    console.print(table)


def _optional_day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    return None if value is None else _day(ctx, param, value)


def _move_text(value: float | None, unit: str) -> str:
    if value is None:
        return "not known yet"
    return format_change(Change(value, unit))  # type: ignore[arg-type]


@alerts.command(name="backtest")
@click.option(
    "--from", "start", callback=_optional_day, help="First day (default: the first stored)."
)
@click.option("--to", "end", callback=_optional_day, help="Last day (default: the last stored).")
@click.option("--kpi", "kpi_id", help="Only this KPI's rules.")
@click.option("--rule", "rule_name", help="Only rules with this name (or of this kind).")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table per rule, or JSON for programs.",
)
@click.option(
    "--max-rows",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Firings listed per rule in the table (the latest; JSON lists all).",
)
def backtest_command(
    start: date | None,
    end: date | None,
    kpi_id: str | None,
    rule_name: str | None,
    output: str,
    max_rows: int,
) -> None:
    """Replay the registry's alert rules over the stored history: when each would have fired.

    The same rule evaluation as the sensor (hysteresis, cooldown), over each KPI's stored
    series; after each firing, the KPI's move over the next 7 days. Sends nothing. Exits 2 on
    a bad registry, an unknown KPI or rule, or a period that ends before it starts.
    """
    from daily_index.alerts.backtest import MOVE_DAYS, backtest, to_json
    from daily_index.alerts.engine import read_points
    from daily_index.defs.resources import ConfigurationError, storage_from_env

    env = os.environ
    try:
        registry = current_registry(env)
        storage = storage_from_env(env)
    except (RegistryError, ConfigurationError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(EXIT_CONFIG) from None
    if start and end and start > end:
        err_console.print(f"[red]error:[/red] --from {start} is after --to {end}")
        raise SystemExit(EXIT_CONFIG)
    # Stored history needs no source key: every active KPI with rules, enabled here or not.
    kpis = [k for k in registry.kpis if k.active and k.alerts]
    if kpi_id is not None:
        known = {k.id for k in registry.kpis}
        if kpi_id not in known:
            err_console.print(f"[red]error:[/red] --kpi {kpi_id!r}: no such KPI in the registry")
            raise SystemExit(EXIT_CONFIG)
        kpis = [k for k in kpis if k.id == kpi_id]
        if not kpis:
            err_console.print(
                f"[red]error:[/red] --kpi {kpi_id!r} has no alert rules (or is inactive)"
            )
            raise SystemExit(EXIT_CONFIG)
    if rule_name is not None and not any(
        rule_name in (r.name, r.kind) for k in kpis for r in k.alerts
    ):
        names = sorted({r.name for k in kpis for r in k.alerts})
        err_console.print(
            f"[red]error:[/red] --rule {rule_name!r}: no such rule"
            + (f" of {kpi_id}" if kpi_id else "")
            + f" (rules: {', '.join(names) or 'none'})"
        )
        raise SystemExit(EXIT_CONFIG)
    series = storage.get_series()
    results = backtest(
        kpis,
        lambda kpi: read_points(series, kpi),
        start=start,
        end=end,
        rule_name=rule_name,
    )
    if output == "json":
        click.echo(json.dumps({"move_days": MOVE_DAYS, "rules": to_json(results)}, indent=1))
        return
    console = Console(highlight=False)
    overview = Table(title="Alert rules replayed over the stored history", title_justify="left")
    for column in (
        "KPI",
        "Rule",
        "Period",
        "Days",
        "Fired",
        "Held back",
        f"Median {MOVE_DAYS}-day move after",
    ):
        overview.add_column(column, overflow="fold")
    for result in results:
        summary = result.summary()
        period = (
            f"{result.start} to {result.end}" if result.start and result.end else "no stored data"
        )
        overview.add_row(
            result.kpi.id,
            result.rule.name,
            period,
            str(result.observations),
            str(summary["fired"]),
            str(summary["held_back"])
            + (f" ({result.rule.cooldown_days}-day cooldown)" if result.rule.cooldown_days else ""),
            _move_text(summary["median_move"], result.kpi.change_unit)  # type: ignore[arg-type]
            if summary["with_move"]
            else "–",
        )
    console.print(overview)
    for result in results:
        if not result.fired:
            continue
        shown = result.fired[-max_rows:] if max_rows else []
        table = Table(
            title=f"{result.kpi.name} ({result.kpi.id}), rule {result.rule.name}: "
            f"{len(result.fired)} firing(s)"
            + (f", the latest {len(shown)}" if len(shown) < len(result.fired) else ""),
            title_justify="left",
        )
        for column in ("Day", "Value", "What", f"Move over {MOVE_DAYS} days"):
            table.add_column(column, overflow="fold")
        for firing in shown:
            move = _move_text(firing.move, result.kpi.change_unit)
            if firing.move_day is not None:
                move += f" (to {firing.move_day})"
            table.add_row(
                firing.day.isoformat(), firing.alert.value_text, firing.alert.detail, move
            )
        if shown:
            console.print(table)
