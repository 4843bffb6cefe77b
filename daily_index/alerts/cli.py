"""`daily-index alerts ...`: evaluate the KPI alert rules over the stored series, and send.

The same rules, code and ledger as `kpi_alert_sensor`, without a Dagster instance: a day
"landed" when its value is in the KPI's series.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import click
from rich.console import Console
from rich.table import Table

from daily_index.alerts.dispatch import dispatch
from daily_index.alerts.engine import evaluate_stored, notice_for
from daily_index.alerts.ledger import KPI_LEDGER_KEY, AlertLedger, in_cooldown
from daily_index.alerts.recipients import RecipientsError
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
