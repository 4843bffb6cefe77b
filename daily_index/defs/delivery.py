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
    problems_message,
    problems_summary,
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
    demo: bool,
    edition: str | None = None,
) -> ReportPayload:
    """The day's message; `deliver` adds the PDF or a link to it, channel by channel."""
    prefix = edition_title_prefix(edition) + ("[DEMO DATA] " if demo else "")
    risks = "\n".join(f"- {risk}" for risk in analysis.get("risks", [])[:5])
    body = (
        f"{analysis.get('summary', '')}\n\nRisks:\n{risks}"
        if risks
        else analysis.get("summary", "")
    )
    body += f"\n\n{analysis.get('analyst_label', '')}"
    return ReportPayload(
        title=f"{prefix}Daily Index {day}: {analysis.get('headline', '')}",
        body=body,
        pdf_path=pdf_path,
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
    resend_dead: bool = False,
    log=None,
    edition: str | None = None,
) -> tuple[DeliverySummary, dict]:
    """Deliver the day's report; returns the summary and the subscriber-file problems.

    The problems come as one summary (`problems_summary`: the count, the first 20, every
    line number), logged as one warning: a file with 50,000 bad rows is one event, not
    50,000. A subscriber file that is unusable as a whole, or loads no subscriber, raises
    `SubscriberFileError` (nothing is sent, and never to the outbox instead).

    `edition` (None, or e.g. "amended") picks the ledger and the title prefix; see
    `daily_index.delivery.deliver`.
    """
    problems: dict = problems_summary([])
    if delivery.subscribers_file:
        loaded = load_subscribers(delivery.subscribers_file)
        subscribers = list(loaded.subscribers)
        problems = problems_summary(loaded.problems)
        if loaded.problems and log is not None:
            log.warning(problems_message(loaded.problems, file=delivery.subscribers_file))
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
                demo=demo,
                edition=edition,
            ),
            attach_policy=delivery.attach_policy(),
            link_base=delivery.report_link_base,
            link_expiry_s=delivery.link_expiry_s,
            concurrency=delivery.concurrency,
            max_attempts=delivery.max_attempts,
            resend_failed=resend_failed,
            resend_dead=resend_dead,
            outbox_dir=Path(delivery.outbox_dir),
            on_progress=lambda done, total: progress.emit("deliver", done, total),
            edition=edition,
        )
    return summary, problems


def unserved_text(summary: DeliverySummary) -> str:
    """Where the endpoints not sent the report stand, for a warning or the CLI."""
    ledger = summary.ledger
    uncertain = summary.uncertain
    failed = ledger.get("failed", 0) - uncertain
    parts = [
        f"{failed} failed (retried by a re-run while attempts are left)" if failed else "",
        f"{uncertain} of unknown outcome (a killed run's sends; --resend-failed resends them)"
        if uncertain
        else "",
        f"{ledger.get('dead', 0)} dead (410 Gone or out of attempts; --resend-failed "
        "--include-dead after fixing them)"
        if ledger.get("dead")
        else "",
        f"{ledger.get('pending', 0)} pending" if ledger.get("pending") else "",
    ]
    return f"{summary.unserved} of {summary.total} endpoint(s) not served: " + ", ".join(
        p for p in parts if p
    )


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
    resend_dead: bool = False
    """Also retry dead endpoints (410 Gone, or failed too often), e.g. after fixing a URL."""


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
        when no subscriber file is set. The PDF is attached where the channel takes files
        and it fits the channel's limit; elsewhere the summary carries a link to the
        delivered copy `reports/delivered/<date>.pdf` (a public base URL, or a presigned
        S3/R2 URL that expires). The ledger `delivery/<date>.parquet` has one row per
        endpoint: sent, failed or dead, what it got (file, link, no link, summary), with
        attempts and the last error. A re-run
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
            resend_dead=config.resend_dead,
            edition=edition,
        )
        if summary.unserved:
            context.log.warning(f"{unserved_text(summary)}; see {ledger}")
        if summary.no_link:
            context.log.warning(
                f"{summary.no_link} endpoint(s) got the summary without the PDF or a link: "
                "their channel takes no file of this size and no link is available (set "
                "DAILY_INDEX_REPORT_LINK_BASE, or use S3/R2 storage for presigned links)"
            )
        if summary.report_differs:
            context.log.warning(
                f"reports/{day}.pdf differs from the copy this edition was first delivered "
                f"with ({summary.report_key}): that copy was sent, so every endpoint of the "
                "edition has the same file; deliver the rebuilt report as a new edition"
            )
        return dg.MaterializeResult(
            metadata={
                "sent": summary.sent,
                "failed": summary.failed,
                "dead": summary.dead,
                "already_sent": summary.already_sent,
                "skipped": dg.MetadataValue.json(summary.skipped_by_reason),
                "ledger_status": dg.MetadataValue.json(summary.ledger),
                "uncertain": summary.uncertain,
                "unserved": summary.unserved,
                "endpoints": summary.total,
                "elapsed_s": round(summary.elapsed_s, 2),
                "by_channel": dg.MetadataValue.json(summary.by_channel),
                # What the endpoints sent this run got: file, link, no link, summary.
                "delivered": dg.MetadataValue.json(summary.by_delivery),
                "no_link": summary.no_link,
                "link": summary.link,
                "link_expires_at": (
                    summary.link_expires_at.isoformat() if summary.link_expires_at else None
                ),
                "report_copy": summary.report_key,
                "report_differs": summary.report_differs,
                # The first 20 skipped entries; all of them are counted, with their lines.
                "subscriber_problems": dg.MetadataValue.json(problems["first"]),
                "subscriber_problem_count": problems["count"],
                "subscriber_problem_lines": problems["lines"],
                "partial": partial,
                "edition": edition,
                "ledger": ledger,
            }
        )

    return delivery
