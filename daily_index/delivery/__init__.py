"""Delivery of the daily report to every subscriber (apprise, with a per-endpoint ledger)."""

from daily_index.delivery.channels import (
    AttachLimitsError,
    AttachPolicy,
    parse_attach_limits,
)
from daily_index.delivery.ledger import (
    COLUMNS,
    delivered_pdf_key,
    ledger_key,
    read_ledger,
    validate_edition,
)
from daily_index.delivery.send import (
    PARTIAL_DISCLAIMER,
    DeliverySummary,
    ReportPayload,
    deliver,
)
from daily_index.delivery.subscribers import (
    Problem,
    Subscriber,
    SubscriberFileError,
    SubscriberList,
    load_subscribers,
    outbox_subscriber,
    problems_message,
    problems_summary,
    redact_url,
)

__all__ = [
    "COLUMNS",
    "AttachLimitsError",
    "AttachPolicy",
    "PARTIAL_DISCLAIMER",
    "DeliverySummary",
    "Problem",
    "ReportPayload",
    "Subscriber",
    "SubscriberFileError",
    "SubscriberList",
    "deliver",
    "delivered_pdf_key",
    "ledger_key",
    "load_subscribers",
    "outbox_subscriber",
    "parse_attach_limits",
    "problems_message",
    "problems_summary",
    "read_ledger",
    "redact_url",
    "validate_edition",
]
