"""Delivery of the daily report to every subscriber (apprise, with a per-endpoint ledger)."""

from daily_index.delivery.ledger import COLUMNS, ledger_key, read_ledger, validate_edition
from daily_index.delivery.send import (
    PARTIAL_DISCLAIMER,
    DeliverySummary,
    ReportPayload,
    deliver,
)
from daily_index.delivery.subscribers import (
    Problem,
    Subscriber,
    SubscriberList,
    load_subscribers,
    outbox_subscriber,
    redact_url,
)

__all__ = [
    "COLUMNS",
    "PARTIAL_DISCLAIMER",
    "DeliverySummary",
    "Problem",
    "ReportPayload",
    "Subscriber",
    "SubscriberList",
    "deliver",
    "ledger_key",
    "load_subscribers",
    "outbox_subscriber",
    "read_ledger",
    "redact_url",
    "validate_edition",
]
