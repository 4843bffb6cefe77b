"""Send the day's report to every subscriber endpoint through apprise, with a ledger.

Each primary channel URL of each subscriber is an endpoint (`<subscriber>:primary`,
`<subscriber>:primary-2`, ...) and one ledger row. A run tries each eligible endpoint
once: the primary URL, then the subscriber's fallback URL if the primary failed.
Concurrency is a bounded thread pool; channels with published rate limits are paced.

Each endpoint gets what its channel takes (`daily_index.delivery.channels`): the PDF
attached where the channel takes files and the PDF fits its limit, otherwise the summary
and a link. The link points at the edition's delivered copy,
`reports/delivered/<date>[.<edition>].pdf`, written once when the edition is first
delivered and never replaced: a public base URL when one is set, else a presigned URL
of the S3/R2 store with an expiry; on the local store without a base URL there is none,
and the message says so. The ledger records what each endpoint got (`delivered`) and a
presigned link's expiry, never the link itself (its signature is a credential).
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import apprise
from apprise.attachment.file import AttachFile

from daily_index.delivery.channels import AttachPolicy, Delivered, decide, takes_files
from daily_index.delivery.ledger import (
    Journal,
    Ledger,
    Outcome,
    delivered_pdf_key,
    now_utc,
    validate_edition,
)
from daily_index.delivery.subscribers import (
    ASSET,
    Subscriber,
    channel_kind,
    instantiate,
    outbox_subscriber,
    redact_url,
    scrub,
)
from daily_index.storage.objectstore import ObjectStore, PreconditionFailed

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

DEFAULT_LINK_EXPIRY_S = 7 * 86_400
"""A presigned link lives 7 days by default (the longest S3 and R2 sign for)."""

NO_LINK_NOTE = (
    "The full report (PDF, {size}) cannot be sent over this channel and no link to it is "
    "available; ask the sender for a copy."
)


@dataclass(frozen=True)
class ReportPayload:
    """What is sent: the title, the summary text and the PDF.

    `link` is a link to the PDF known in advance; without it, `deliver` makes one to the
    edition's delivered copy (a base URL, or a presigned URL of the store).
    """

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
    by_delivery: dict[str, int] = field(default_factory=dict)
    """This run's sent endpoints by what they got: file, link, no link, summary."""
    link: str = "none"
    """How links were made: "presigned", "base url", "given", or "none" (no link)."""
    link_expires_at: datetime | None = None
    """When this run's presigned link stops working (None: no expiry, or no link)."""
    report_key: str | None = None
    """The edition's delivered copy on the store, which links point at."""
    report_differs: bool = False
    """The PDF handed to this run differs from the edition's delivered copy (the report
    was rebuilt after the edition was first delivered): the delivered copy was sent, so
    every endpoint of an edition gets the same file. Deliver the rebuilt report as a new
    edition."""

    @property
    def no_link(self) -> int:
        """Endpoints sent the summary without the PDF or a link (none could go)."""
        return self.by_delivery.get("no link", 0)

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


def _size_text(size: int | None) -> str:
    return "unknown size" if size is None else f"{size / 1e6:.2f} MB"


def _messages(
    payload: ReportPayload, pdf: Path | None, link: str | None
) -> dict[Delivered, _Message]:
    """One message per kind of delivery, built once per run (the PDF encoded once)."""
    title = f"[PARTIAL] {payload.title}" if payload.partial else payload.title
    body = f"{payload.disclaimer}\n\n{payload.body}" if payload.partial else payload.body
    link_line = f"\n\nFull report: {link}" if link else ""
    size = pdf.stat().st_size if pdf is not None else None
    return {
        "file": _Message(title, body + link_line, _SharedPdf(str(pdf)) if pdf else None),
        "link": _Message(title, body + link_line),
        "no link": _Message(title, f"{body}\n\n{NO_LINK_NOTE.format(size=_size_text(size))}"),
        "summary": _Message(title, body),
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


@dataclass(frozen=True)
class _Plan:
    """What a run sends: a message per kind of delivery, and how each endpoint is chosen."""

    messages: dict[Delivered, _Message]
    policy: AttachPolicy
    pdf_size: int | None
    has_link: bool
    link: str | None = field(default=None, repr=False)

    def choose(self, receives: str, url: str, plugin) -> Delivered:
        if self.pdf_size is None and not self.has_link:
            return "summary"  # a text-only payload
        return decide(
            receives=receives,
            scheme=channel_kind(url),
            takes_files=takes_files(plugin),
            pdf_size=self.pdf_size,
            has_link=self.has_link,
            policy=self.policy,
        )

    def clean(self, text: str, url: str) -> str:
        """`text` without the URL's secrets and without the (signed) report link."""
        if self.link:
            text = text.replace(self.link, "(report link)")
        return scrub(text, [url])


def _send_one(
    url: str, receives: str, plan: _Plan, pacer: _Pacer
) -> tuple[str | None, Delivered | None]:
    """Send through one apprise URL: (None or a secret-free reason, what it was sent)."""
    plugin = instantiate(url)
    if plugin is None:
        return f"{redact_url(url)} is not a usable apprise URL", None
    delivered = plan.choose(receives, url, plugin)
    message = plan.messages[delivered]
    pacer.wait(url)
    notifier = apprise.Apprise(asset=ASSET)
    notifier.add(plugin)
    attach = apprise.AppriseAttachment(message.attachment) if message.attachment else None
    try:
        result = notifier.notify(body=message.body, title=message.title, attach=attach)
    except Exception as exc:  # a plugin bug must not stop the other 4,999 endpoints
        return plan.clean(f"{type(exc).__name__}: {exc}", url)[:500], delivered
    return (None if result else plan.clean(error_text(result), url)), delivered


@contextmanager
def _edition_copy(store: ObjectStore, key: str, pdf_path: Path) -> Iterator[tuple[Path, bool]]:
    """The edition's delivered PDF as a local file, and whether `pdf_path` differs from it.

    The first delivery of an edition stores `pdf_path` at `key` (only if absent, so two
    runs racing agree on one copy); later runs send that copy, whatever `pdf_path` holds
    now, so the file behind a link is always the one delivered.
    """
    data = pdf_path.read_bytes()
    stored = store.read_bytes(key)
    if stored is None:
        try:
            store.put(key, data, if_none_match=True, content_type="application/pdf")
            stored = data
        except PreconditionFailed:
            stored = store.read_bytes(key)
    if stored is None or stored == data:
        yield pdf_path, False
        return
    with tempfile.TemporaryDirectory(prefix="delivered-") as tmp:
        copy = Path(tmp) / pdf_path.name
        copy.write_bytes(stored)
        yield copy, True


def _link(
    store: ObjectStore,
    payload: ReportPayload,
    key: str | None,
    link_base: str | None,
    expiry_s: int,
) -> tuple[str | None, str, datetime | None]:
    """(the link or None, how it was made, when it expires)."""
    if payload.link:
        return payload.link, "given", None
    if key is None:
        return None, "none", None
    if link_base:
        return f"{link_base.rstrip('/')}/{key}", "base url", None
    expires_at = now_utc() + timedelta(seconds=expiry_s)
    url = store.presign(key, expiry_s)
    return (url, "presigned", expires_at) if url else (None, "none", None)


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
    attach_policy: AttachPolicy | None = None,
    link_base: str | None = None,
    link_expiry_s: int = DEFAULT_LINK_EXPIRY_S,
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
        attach_policy: Which channels get the PDF attached, up to what size (default:
            the built-in limits of `daily_index.delivery.channels`).
        link_base: A public URL under which the store's keys are served; links are
            `<link_base>/reports/delivered/<date>[.<edition>].pdf`. It takes precedence over a
            presigned URL.
        link_expiry_s: How long a presigned link works (1 s to 7 days).

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
    # A link given in advance serves link subscribers without the PDF; a payload without
    # a PDF is text only.
    needs_pdf = payload.pdf_path is not None and any(
        s.receives == "pdf" or (s.receives == "link" and not payload.link) for s in subscribers
    )
    if needs_pdf and not Path(payload.pdf_path).is_file():
        raise ValueError(f"the report PDF {payload.pdf_path} does not exist")
    key = delivered_pdf_key(day, edition) if needs_pdf else None
    with ExitStack() as stack:
        pdf, differs = (
            stack.enter_context(_edition_copy(store, key, Path(payload.pdf_path)))
            if key is not None and payload.pdf_path is not None
            else (None, False)
        )
        link, link_kind, expires_at = _link(store, payload, key, link_base, link_expiry_s)
        plan = _Plan(
            messages=_messages(payload, pdf, link),
            policy=attach_policy or AttachPolicy(),
            pdf_size=pdf.stat().st_size if pdf is not None else None,
            has_link=link is not None,
            link=link,
        )
        summary = _deliver(
            day=day,
            store=store,
            subscribers=subscribers,
            plan=plan,
            concurrency=concurrency,
            max_attempts=max_attempts,
            resend_failed=resend_failed,
            resend_dead=resend_dead,
            on_progress=on_progress,
            stop_after=stop_after,
            flush_every=flush_every,
            edition=edition,
            link_expires_at=expires_at,
        )
    return replace(
        summary,
        elapsed_s=round(time.monotonic() - started, 3),
        link=link_kind,
        link_expires_at=expires_at,
        report_key=key,
        report_differs=differs,
    )


def _deliver(
    *,
    day: date,
    store: ObjectStore,
    subscribers: list[Subscriber],
    plan: _Plan,
    concurrency: int,
    max_attempts: int,
    resend_failed: bool,
    resend_dead: bool,
    on_progress: Callable[[int, int], None] | None,
    stop_after: int | None,
    flush_every: int,
    edition: str | None,
    link_expires_at: datetime | None,
) -> DeliverySummary:
    started = time.monotonic()
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
    by_delivery: Counter[str] = Counter()

    def attempt(ep: _Endpoint) -> Outcome | None:
        if stop.is_set():
            return None
        receives = ep.subscriber.receives
        begun = now_utc()
        journal.start(ep.endpoint_id, begun)
        error, delivered = _send_one(ep.url, receives, plan, pacer)
        primary_gone = is_gone(error)
        via_fallback = False
        fallback = ep.subscriber.fallback
        if error is not None and fallback:
            fallback_error, fallback_delivered = _send_one(fallback, receives, plan, pacer)
            if fallback_error is None:
                error, via_fallback, delivered = None, True, fallback_delivered
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
            delivered=delivered,
            link_expires_at=link_expires_at if delivered == "link" else None,
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
                    if outcome.ok and outcome.delivered:
                        by_delivery[outcome.delivered] += 1
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
        by_delivery=dict(sorted(by_delivery.items())),
    )
