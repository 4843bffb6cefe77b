"""Send the day's report to every subscriber endpoint through apprise, with a ledger.

Each primary channel URL of each subscriber is an endpoint (`<subscriber>:primary`,
`<subscriber>:primary-2`, ...) and one ledger row. A run tries each eligible endpoint
once: the primary URL, then the subscriber's fallback URL if the primary failed.
Concurrency is a bounded thread pool; channels with published rate limits are paced.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import apprise
from apprise.attachment.file import AttachFile

from daily_index.delivery.ledger import Journal, Ledger, Outcome, now_utc, validate_edition
from daily_index.delivery.subscribers import (
    ASSET,
    Subscriber,
    channel_kind,
    instantiate,
    outbox_subscriber,
    redact_url,
    scrub,
)
from daily_index.storage.objectstore import ObjectStore

PARTIAL_DISCLAIMER = (
    "PARTIAL REPORT: some KPIs were not available when this report was produced; "
    "they are listed as missing in the report."
)

# Minimum seconds between two sends, and whether the pace is per webhook or per service.
# Telegram allows about 30 messages/s per bot; Slack 1/s per incoming webhook; Discord
# webhooks are paced at 1/s (apprise also waits out X-RateLimit-Reset within one call).
PACING: dict[str, tuple[float, bool]] = {
    "tgram": (1 / 30, False),
    "slack": (1.0, True),
    "discord": (1.0, True),
}


@dataclass(frozen=True)
class ReportPayload:
    """What is sent: the title, the summary text, the PDF and/or a link to it."""

    title: str
    body: str
    pdf_path: Path | None = None
    link: str | None = None
    partial: bool = False
    disclaimer: str = PARTIAL_DISCLAIMER


@dataclass(frozen=True)
class DeliverySummary:
    """What one `deliver` call did, and where every endpoint stands after it.

    `sent`, `failed` and `dead` count this run's attempts; `skipped` the endpoints this
    run did not send to, by reason in `skipped_by_reason`. `ledger` counts every endpoint
    of the subscriber list by status after the run, and `uncertain` the failed ones whose
    outcome is unknown (a killed run's send in flight).
    """

    sent: int
    failed: int
    dead: int
    skipped: int
    total: int
    elapsed_s: float
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per channel kind (mailto, json, ...): counts of sent / failed / dead this run."""
    not_attempted: int = 0
    """Eligible endpoints left pending because the run stopped early (`stop_after`)."""
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    """Why endpoints were not sent to: "already sent", "dead", "outcome unknown", ..."""
    ledger: dict[str, int] = field(default_factory=dict)
    """Every endpoint by status after the run: pending, sent, failed, dead."""
    uncertain: int = 0
    """Endpoints whose last send has an unknown outcome (counted as failed in `ledger`)."""

    @property
    def already_sent(self) -> int:
        return self.skipped_by_reason.get("already sent", 0)

    @property
    def unserved(self) -> int:
        """Endpoints not (known to be) sent the report: pending, failed, uncertain or dead."""
        return self.total - self.ledger.get("sent", 0)


@dataclass(frozen=True)
class _Endpoint:
    endpoint_id: str
    subscriber: Subscriber
    channel: str
    url: str
    kind: str


@dataclass(frozen=True)
class _Message:
    title: str
    body: str
    pdf: Path | None
    attachment: _SharedPdf | None = field(default=None, compare=False)


class _Pacer:
    """Spaces sends that share a key by a minimum interval (slots are reserved in order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, url: str) -> None:
        kind = channel_kind(url)
        if kind not in PACING:
            return
        interval, per_url = PACING[kind]
        key = f"{kind}|{url}" if per_url else kind
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + interval
        if slot > now:
            time.sleep(slot - now)


def _messages(payload: ReportPayload) -> dict[str, _Message]:
    title = f"[PARTIAL] {payload.title}" if payload.partial else payload.title
    body = f"{payload.disclaimer}\n\n{payload.body}" if payload.partial else payload.body
    link_line = f"\n\nFull report: {payload.link}" if payload.link else ""
    shared = _SharedPdf(str(payload.pdf_path)) if payload.pdf_path is not None else None
    pdf = _Message(title, body + link_line, payload.pdf_path, shared)
    return {
        "pdf": pdf,
        # Without a link, a link subscriber still gets the report: as the PDF.
        "link": _Message(title, body + link_line, None) if payload.link else pdf,
        "summary": _Message(title, body, None),
    }


def _endpoints(subscribers: list[Subscriber]) -> list[_Endpoint]:
    endpoints = []
    for sub in subscribers:
        for n, url in enumerate(sub.urls, start=1):
            channel = "primary" if n == 1 else f"primary-{n}"
            endpoints.append(_Endpoint(f"{sub.id}:{channel}", sub, channel, url, channel_kind(url)))
    return endpoints


def error_text(result: apprise.AppriseResult) -> str:
    """Apprise's warnings and errors for one notify call, deduplicated, at most 500 chars."""
    messages = [
        entry.message
        for service in result
        for entry in service.logs()
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    messages += [
        entry.message
        for entry in result.call_logs()
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    text = "; ".join(dict.fromkeys(messages)) or f"apprise reported {result.status.name}"
    return text[:500]


class _SharedPdf(AttachFile):
    """The report PDF, shared by every send of a run, base64-encoded once.

    Webhook channels (json://, form://, ...) embed the attachment as base64; encoding a
    multi-megabyte PDF again for each of thousands of endpoints was most of their cost.
    """

    def __init__(self, path: str, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self._encoded: dict[str | None, str | bytes] = {}
        self._encoding_lock = threading.Lock()

    def base64(self, encoding: str | None = "ascii") -> str | bytes:
        with self._encoding_lock:
            if encoding not in self._encoded:
                self._encoded[encoding] = super().base64(encoding)
            return self._encoded[encoding]


# Apprise's HTTP plugins log the status as "error=<code>"; 410 Gone means the webhook was
# deleted and will never come back, so retrying it is pointless.
_GONE = re.compile(r"\berror=410\b")


def is_gone(error: str | None) -> bool:
    """Whether a send's error says the endpoint answered 410 Gone."""
    return bool(error and _GONE.search(error))


def _send_one(url: str, message: _Message, pacer: _Pacer) -> str | None:
    """Send through one apprise URL; None on success, else a secret-free reason."""
    plugin = instantiate(url)
    if plugin is None:
        return f"{redact_url(url)} is not a usable apprise URL"
    pacer.wait(url)
    notifier = apprise.Apprise(asset=ASSET)
    notifier.add(plugin)
    attach = apprise.AppriseAttachment(message.attachment) if message.attachment else None
    try:
        result = notifier.notify(body=message.body, title=message.title, attach=attach)
    except Exception as exc:  # a plugin bug must not stop the other 4,999 endpoints
        return scrub(f"{type(exc).__name__}: {exc}", [url])[:500]
    return None if result else scrub(error_text(result), [url])


def deliver(
    *,
    day: date,
    store: ObjectStore,
    subscribers: list[Subscriber],
    payload: ReportPayload,
    concurrency: int = 64,
    max_attempts: int = 3,
    resend_failed: bool = False,
    resend_dead: bool = False,
    outbox_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    flush_every: int = 250,
    edition: str | None = None,
) -> DeliverySummary:
    """Send the report to every endpoint not yet served today, recording each in the ledger.

    Args:
        day: The report's day; the ledger is `delivery/<day>.parquet` (or
            `delivery/<day>.<edition>.parquet`, see `edition`).
        store: Where the ledger lives.
        subscribers: Who to send to. Empty means the local outbox (needs `outbox_dir`).
        payload: The report to send.
        concurrency: Sends in flight at once.
        max_attempts: Attempts (one per run) before an endpoint is `dead`; an endpoint
            answering 410 Gone is dead at once.
        resend_failed: Also retry failed rows past `max_attempts`, and sends whose outcome
            is unknown because a run was killed mid-send (these may then arrive twice).
        resend_dead: Also retry dead rows (after the subscriber's URL was fixed).
        outbox_dir: Folder for the built-in outbox subscriber; messages go to
            `<outbox_dir>/<day>/`.
        on_progress: Called as `on_progress(done, to_do)` after each endpoint.
        stop_after: Stop starting new sends after this many endpoints finished (the rest
            stay pending for the next run), as if the run were interrupted.
        flush_every: Write the ledger to the store after this many results.
        edition: None for the day's report; a short slug (`[a-z0-9-]{1,32}`, e.g.
            "amended") for a further edition of it, with its own ledger and journal, so
            endpoints already served the day's report receive this edition once too.
            The payload's title is sent as given: say which edition it is there.

    Returns:
        Counts for this run.

    Raises:
        ValueError: Nothing to deliver to, a PDF is needed and missing, or `edition` is
            not a short slug.
    """
    started = time.monotonic()
    validate_edition(edition)
    if not subscribers:
        if outbox_dir is None:
            raise ValueError("no subscribers and no outbox_dir: nowhere to deliver the report")
        subscribers = [outbox_subscriber(Path(outbox_dir) / day.isoformat())]
    messages = _messages(payload)
    needs_pdf = any(messages[s.receives].pdf is not None for s in subscribers)
    if needs_pdf and (payload.pdf_path is None or not Path(payload.pdf_path).is_file()):
        raise ValueError(f"the report PDF {payload.pdf_path} does not exist")

    endpoints = _endpoints(subscribers)
    ledger = Ledger(store, day, edition)
    redacted_fallback = {s.id: redact_url(s.fallback) if s.fallback else None for s in subscribers}
    for ep in endpoints:
        ledger.ensure(
            endpoint_id=ep.endpoint_id,
            subscriber_id=ep.subscriber.id,
            channel=ep.channel,
            kind=ep.kind,
            url=redact_url(ep.url),
            fallback_url=redacted_fallback[ep.subscriber.id],
        )
    journal = Journal.for_store(store, day, edition)
    for outcome in journal.replay():
        ledger.apply(outcome, max_attempts=max_attempts, replayed=True)
    todo: list[_Endpoint] = []
    skipped: Counter[str] = Counter()
    for ep in endpoints:
        reason = ledger.skip_reason(
            ep.endpoint_id,
            max_attempts=max_attempts,
            resend_failed=resend_failed,
            resend_dead=resend_dead,
        )
        if reason is None:
            todo.append(ep)
        else:
            skipped[reason] += 1
    ledger.flush()
    journal.open()
    applied: set[str] = set()

    def flush() -> None:
        ledger.flush()
        journal.checkpoint(applied)
        applied.clear()

    pacer = _Pacer()
    stop = threading.Event()
    counts: Counter[str] = Counter()
    by_channel: dict[str, Counter[str]] = defaultdict(Counter)

    def attempt(ep: _Endpoint) -> Outcome | None:
        if stop.is_set():
            return None
        message = messages[ep.subscriber.receives]
        begun = now_utc()
        journal.start(ep.endpoint_id, begun)
        error = _send_one(ep.url, message, pacer)
        primary_gone = is_gone(error)
        via_fallback = False
        fallback = ep.subscriber.fallback
        if error is not None and fallback:
            fallback_error = _send_one(fallback, message, pacer)
            if fallback_error is None:
                error, via_fallback = None, True
            else:
                error = f"{error} | fallback: {fallback_error}"[:1000]
        outcome = Outcome(
            endpoint_id=ep.endpoint_id,
            ok=error is None,
            started_at=begun,
            finished_at=now_utc(),
            error=error,
            via_fallback=via_fallback,
            gone=primary_gone and error is not None,
        )
        journal.finish(outcome)
        return outcome

    done = 0
    clean_exit = False
    try:
        with ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="deliver"
        ) as pool:
            pending: set[Future[Outcome | None]] = set()
            queue = iter(todo)
            since_flush = 0
            exhausted = False
            while pending or not exhausted:
                # Keep at most 2x concurrency queued so a stop leaves the rest untouched.
                while not exhausted and not stop.is_set() and len(pending) < 2 * concurrency:
                    ep = next(queue, None)
                    if ep is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(attempt, ep))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    if outcome is None:
                        continue
                    status = ledger.apply(outcome, max_attempts=max_attempts)
                    applied.add(outcome.endpoint_id)
                    if status is None:
                        continue
                    kind = ledger.rows[outcome.endpoint_id]["kind"]
                    counts[status] += 1
                    by_channel[kind][status] += 1
                    done += 1
                    since_flush += 1
                    if on_progress is not None:
                        on_progress(done, len(todo))
                    if stop_after is not None and done >= stop_after:
                        stop.set()
                if since_flush >= flush_every:
                    flush()
                    since_flush = 0
        clean_exit = True
    finally:
        stop.set()
        flush()
        journal.close(remove=clean_exit)

    rows = [ledger.rows[ep.endpoint_id] for ep in endpoints]
    return DeliverySummary(
        sent=counts["sent"],
        failed=counts["failed"],
        dead=counts["dead"],
        skipped=len(endpoints) - len(todo),
        total=len(endpoints),
        elapsed_s=round(time.monotonic() - started, 3),
        by_channel={k: dict(v) for k, v in sorted(by_channel.items())},
        not_attempted=len(todo) - done,
        skipped_by_reason=dict(skipped),
        ledger=dict(Counter(row["status"] for row in rows)),
        uncertain=sum(1 for row in rows if row["status"] == "failed" and row["uncertain"]),
    )
