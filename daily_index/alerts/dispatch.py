"""One digest per channel per tick: claim in the ledger, send concurrently, settle.

A channel is one apprise URL of one recipient. Its digest lists every notice it wants this
tick plus the ones its last digest failed to deliver. Channels are sent in parallel, each
bounded by its plugin's socket timeouts, so a dead webhook delays nobody else; a failure is
recorded and retried on the next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

import apprise

from daily_index.alerts.ledger import FAILED, AlertLedger, Claim, Notice
from daily_index.alerts.recipients import Recipient
from daily_index.delivery.send import error_text
from daily_index.delivery.subscribers import ASSET, instantiate, redact_url, scrub

MAX_PARALLEL_SENDS = 8
SEND_BUDGET_S = 30.0
"""Seconds a tick starts sends for; a send's own socket timeouts bound the rest."""


@dataclass(frozen=True)
class DispatchResult:
    """What one dispatch did."""

    claim: Claim
    sent: list[str] = field(default_factory=list)
    """Channel ids whose digest went out."""
    failed: dict[str, str] = field(default_factory=dict)
    """Channel id -> scrubbed error."""


def send_message(url: str, title: str, body: str) -> str | None:
    """Send one message through one apprise URL; None on success, else a secret-free reason."""
    plugin = instantiate(url)
    if plugin is None:
        return f"{redact_url(url)} is not a usable apprise URL"
    notifier = apprise.Apprise(asset=ASSET)
    notifier.add(plugin)
    try:
        result = notifier.notify(body=body, title=title)
    except Exception as exc:  # a plugin bug must not stop the other channels
        return scrub(f"{type(exc).__name__}: {exc}", [url])[:500]
    return None if result else scrub(error_text(result), [url])


def digest(texts: Sequence[tuple[str, str]], *, label: str) -> tuple[str, str]:
    """(title, body) of one digest of notices: the one title when alone, else a count."""
    if len(texts) == 1:
        return texts[0][0], texts[0][1]
    title = f"{label}: {len(texts)} alerts"
    body = "\n\n".join(f"{n}. {text}" for n, (_, text) in enumerate(texts, start=1))
    return title, body


def dispatch(
    notices: Sequence[Notice],
    *,
    ledger: AlertLedger,
    recipients: Sequence[Recipient],
    now: datetime,
    max_attempts: int = 5,
    label: str = "Daily Index",
    send_budget_s: float = SEND_BUDGET_S,
) -> DispatchResult:
    """Record the notices in the ledger and send each channel its digest.

    Args:
        notices: What fired this tick (already-recorded ones are ignored).
        ledger: Where notices and channel outcomes are kept.
        recipients: Who may receive; each URL is a channel with the recipient's watchlist.
        now: The time recorded in the ledger.
        max_attempts: Sends per channel and notice before the channel is `dead` for it.
        label: The digest title's prefix.
        send_budget_s: Seconds to start sends for; channels not begun by then are recorded
            as failed and retried on the next tick.

    Returns:
        The claim and each channel's outcome.
    """
    entries = ledger.read()
    if all(n.key in entries for n in notices) and not any(
        state["status"] == FAILED for e in entries.values() for state in e["channels"].values()
    ):
        # Nothing new and nothing to retry: the ledger is not written at all.
        return DispatchResult(claim=Claim(fresh=[], cooled=[]))
    urls = {cid: url for r in recipients for cid, url in r.channels()}
    shown = {cid: redact_url(url) for cid, url in urls.items()}

    def channels(kpi_id: str | None, rule: str | None, kind: str | None) -> dict[str, str]:
        return {
            cid: shown[cid]
            for r in recipients
            if r.wants(kpi_id, rule, kind)
            for cid, _ in r.channels()
        }

    claim = ledger.claim(notices, channels, now=now)
    jobs = {
        cid: digest([claim.texts[k] for k in keys], label=label)
        for cid, keys in claim.by_channel.items()
        if keys
    }
    results: dict[str, str | None] = {}
    if jobs:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SENDS, len(jobs))) as pool:
            futures = {
                cid: pool.submit(send_message, urls[cid], title, body)
                for cid, (title, body) in jobs.items()
            }
            wait(futures.values(), timeout=send_budget_s)
            # Sends not begun within the budget wait for the next tick (a sensor tick that
            # overran Dagster's 60 s evaluation timeout would record nothing at all).
            late = {cid for cid, future in futures.items() if future.cancel()}
            for cid, future in futures.items():
                results[cid] = (
                    "not sent: the tick's time budget ran out; retried next tick"
                    if cid in late
                    else future.result()
                )
        ledger.settle(results, claim.by_channel, now=now, max_attempts=max_attempts)
    return DispatchResult(
        claim=claim,
        sent=sorted(c for c, e in results.items() if e is None),
        failed={c: e for c, e in sorted(results.items()) if e is not None},
    )
