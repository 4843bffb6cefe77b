"""`report/delivery`: the report sent to every subscriber, one ledger row per endpoint.

A run tagged `daily_index/report=amended` (the fan-in sensor's amended report after a
partial one) delivers the "amended" edition: its own ledger, `delivery/<date>.amended.parquet`,
and "[AMENDED] " in front of the title, so endpoints served the partial report get it too.
"""

import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import dagster as dg

from daily_index import progress
from daily_index.defs.analysis import ANALYSIS_KEY
from daily_index.defs.automation import REPORT_TAG
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.report import PDF_KEY
from daily_index.defs.resources import DeliveryResource, ReportSettingsResource, StorageResource
from daily_index.delivery import (
    DeliverySummary,
    ReportPayload,
    deliver,
    ledger_key,
    load_subscribers,
    validate_edition,
)

DELIVERY_KEY = dg.AssetKey(["report", "delivery"])
AMENDED = "amended"
"""The value of the run tag `daily_index/report` on an amended report, and its edition."""


def edition_for_run(tags: Mapping[str, str] | None) -> str | None:
    """The delivery edition of a run: "amended" for an amended report run, else None."""
    return AMENDED if (tags or {}).get(REPORT_TAG) == AMENDED else None


def edition_title_prefix(edition: str | None) -> str:
    """The title prefix of an edition: `[AMENDED] ` for "amended" (`[NAME] `), "" for None."""
    edition = validate_edition(edition)
    return f"[{edition.upper()}] " if edition else ""


def report_payload(
    day: date,
    analysis: dict,
    pdf_path: Path,
    *,
    partial: bool,
    link_base: str | None,
    demo: bool,
    edition: str | None = None,
) -> ReportPayload:
    prefix = edition_title_prefix(edition) + ("[DEMO DATA] " if demo else "")
    risks = "\n".join(f"- {risk}" for risk in analysis.get("risks", [])[:5])
    body = (
        f"{analysis.get('summary', '')}\n\nRisks:\n{risks}"
        if risks
        else analysis.get("summary", "")
    )
    body += f"\n\n{analysis.get('analyst_label', '')}"
    link = f"{link_base.rstrip('/')}/reports/{day}.pdf" if link_base else None
    return ReportPayload(
        title=f"{prefix}Daily Index {day}: {analysis.get('headline', '')}",
        body=body,
        pdf_path=pdf_path,
        link=link,
        partial=partial,
    )


def run_delivery(
    *,
    day: date,
    analysis: dict,
    pdf_bytes: bytes,
    partial: bool,
    storage: StorageResource,
    delivery: DeliveryResource,
    demo: bool,
    resend_failed: bool = False,
    log=None,
    edition: str | None = None,
) -> tuple[DeliverySummary, list[str]]:
    """Deliver the day's report; returns the summary and the subscriber-file problems.

    `edition` (None, or e.g. "amended") picks the ledger and the title prefix; see
    `daily_index.delivery.deliver`.
    """
    problems: list[str] = []
    if delivery.subscribers_file:
        loaded = load_subscribers(delivery.subscribers_file)
        subscribers = list(loaded.subscribers)
        problems = [str(p) for p in loaded.problems]
        for problem in problems:
            if log is not None:
                log.warning(f"subscriber skipped: {problem}")
    else:
        # No subscriber file: `deliver` writes to the outbox, one folder per day.
        subscribers = []
    with tempfile.TemporaryDirectory(prefix="delivery-") as tmp:
        pdf_path = Path(tmp) / f"daily-index-{day}.pdf"
        pdf_path.write_bytes(pdf_bytes)
        summary = deliver(
            day=day,
            store=storage.get_store(),
            subscribers=subscribers,
            payload=report_payload(
                day,
                analysis,
                pdf_path,
                partial=partial,
                link_base=delivery.report_link_base,
                demo=demo,
                edition=edition,
            ),
            concurrency=delivery.concurrency,
            max_attempts=delivery.max_attempts,
            resend_failed=resend_failed,
            outbox_dir=Path(delivery.outbox_dir),
            on_progress=lambda done, total: progress.emit("deliver", done, total),
            edition=edition,
        )
    return summary, problems


def pdf_is_partial(instance: dg.DagsterInstance, partition_key: str) -> bool:
    """Whether the day's PDF was built partial (its materialisation metadata says so)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PDF_KEY, asset_partitions=[partition_key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return False
    value = records[0].asset_materialization.metadata.get("partial")
    return bool(getattr(value, "value", False))


class DeliveryRunConfig(dg.Config):
    resend_failed: bool = False
    """Also retry endpoints that failed too often, and sends whose outcome is unknown."""


def build_delivery_asset() -> dg.AssetsDefinition:
    @dg.asset(
        key=DELIVERY_KEY,
        group_name="report",
        partitions_def=daily_partitions,
        ins={
            "analysis": dg.AssetIn(key=ANALYSIS_KEY),
            "pdf": dg.AssetIn(key=PDF_KEY),
        },
        kinds={"apprise"},
    )
    def delivery(
        context: dg.AssetExecutionContext,
        config: DeliveryRunConfig,
        analysis: dict,
        pdf: bytes,
        storage: StorageResource,
        delivery: DeliveryResource,
        report_settings: ReportSettingsResource,
    ) -> dg.MaterializeResult:
        """The day's report, delivered to every subscriber endpoint.

        Channels: e-mail, Telegram, Slack, Discord, webhooks, ...; a local outbox folder
        when no subscriber file is set. The ledger `delivery/<date>.parquet` has one row
        per endpoint: sent, failed or dead, with attempts and the last error. A re-run
        sends only what is not yet sent. An amended report run (run tag
        `daily_index/report=amended`) sends the "[AMENDED]" edition, with its own ledger
        `delivery/<date>.amended.parquet`.
        """
        day = date.fromisoformat(context.partition_key)
        edition = edition_for_run(context.run.tags)
        ledger = ledger_key(day, edition)
        partial = pdf_is_partial(context.instance, context.partition_key)
        summary, problems = run_delivery(
            day=day,
            analysis=analysis,
            pdf_bytes=pdf,
            partial=partial,
            storage=storage,
            delivery=delivery,
            demo=report_settings.demo,
            log=context.log,
            resend_failed=config.resend_failed,
            edition=edition,
        )
        if summary.failed or summary.dead:
            context.log.warning(
                f"{summary.failed} endpoint(s) failed and {summary.dead} are dead; "
                f"see {ledger}; a re-run retries the failed ones"
            )
        return dg.MaterializeResult(
            metadata={
                "sent": summary.sent,
                "failed": summary.failed,
                "dead": summary.dead,
                "already_sent": summary.skipped,
                "endpoints": summary.total,
                "elapsed_s": round(summary.elapsed_s, 2),
                "by_channel": dg.MetadataValue.json(summary.by_channel),
                "subscriber_problems": dg.MetadataValue.json(problems),
                "partial": partial,
                "edition": edition,
                "ledger": ledger,
            }
        )

    return delivery
