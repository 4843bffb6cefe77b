from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from daily_index.delivery import (
    PARTIAL_DISCLAIMER,
    ReportPayload,
    Subscriber,
    deliver,
    ledger_key,
    read_ledger,
)
from daily_index.delivery import send as send_module
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.delivery.conftest import PDF_BYTES, Receiver, free_port

DAY = date(2024, 5, 1)
PASSWORD = "pa55-w0rd-never-shown"


def payload(pdf: Path, *, partial: bool = False, link: str | None = None) -> ReportPayload:
    return ReportPayload(
        title="Daily Index 2024-05-01",
        body="BTC up 2%. Fear & Greed 71.",
        pdf_path=pdf,
        link=link,
        partial=partial,
    )


def sub(sid: str, *urls: str, fallback: str | None = None, receives: str = "pdf") -> Subscriber:
    return Subscriber(id=sid, name=sid.title(), urls=urls, fallback=fallback, receives=receives)  # type: ignore[arg-type]


def rows(store: LocalObjectStore) -> dict[str, dict]:
    return {r["endpoint_id"]: r for r in read_ledger(store, DAY).to_dict("records")}


def attachments(message: Message) -> list[tuple[str, bytes]]:
    return [
        (part.get_filename(), part.get_payload(decode=True))
        for part in message.walk()
        if part.get_filename()
    ]


def test_email_with_pdf_attachment_and_partial_disclaimer(smtp, pdf, store) -> None:
    box, port = smtp
    url = (
        f"mailto://reports:{PASSWORD}@127.0.0.1:{port}"
        "?mode=insecure&from=reports@example.org&to=alice@example.org"
    )
    summary = deliver(
        day=DAY, store=store, subscribers=[sub("alice", url)], payload=payload(pdf, partial=True)
    )
    assert (summary.sent, summary.failed, summary.total) == (1, 0, 1)
    assert box.logins == [("reports", PASSWORD)]
    [raw] = box.messages
    message = email.message_from_bytes(raw)
    assert message["Subject"].startswith("[PARTIAL]")
    assert attachments(message) == [(pdf.name, PDF_BYTES)]
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    assert PARTIAL_DISCLAIMER in text.get_payload(decode=True).decode()
    row = rows(store)["alice:primary"]
    assert row["status"] == "sent" and row["kind"] == "mailto" and row["attempts"] == 1
    assert PASSWORD not in row["url"]


def test_http_channels_fallback_and_failures(receiver: Receiver, pdf, store) -> None:
    subscribers = [
        sub("ok", receiver.url("ok/1")),
        sub("form", receiver.url("ok/form", scheme="form"), receives="summary"),
        sub("slow", receiver.url("slow/1"), receives="link"),
        sub("rescued", receiver.url("fail/2"), fallback=receiver.url("ok/fallback")),
        sub("lost", receiver.url("fail/3"), fallback=f"json://127.0.0.1:{free_port()}/x"),
        sub("multi", receiver.url("ok/m1"), receiver.url("fail/m2")),
    ]
    progress: list[tuple[int, int]] = []
    summary = deliver(
        day=DAY,
        store=store,
        subscribers=subscribers,
        payload=payload(pdf, link="https://example.org/r.pdf"),
        concurrency=4,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    assert (summary.sent, summary.failed, summary.dead, summary.total) == (5, 2, 0, 7)
    assert summary.by_channel == {"form": {"sent": 1}, "json": {"sent": 4, "failed": 2}}
    assert progress[-1] == (7, 7)
    ledger = rows(store)
    rescued = ledger["rescued:primary"]
    assert rescued["via_fallback"] and rescued["status"] == "sent"
    assert not ledger["ok:primary"]["via_fallback"]
    lost = ledger["lost:primary"]
    assert lost["status"] == "failed" and "error=500" in lost["last_error"]
    assert "fallback" in lost["last_error"] and "Connection error" in lost["last_error"]
    assert ledger["multi:primary"]["status"] == "sent"
    assert ledger["multi:primary-2"]["status"] == "failed"

    [(ctype, body)] = receiver.requests["/ok/1"]
    sent = json.loads(body)
    # A generic webhook never carries the PDF as base64: a pdf subscriber gets the link.
    assert not sent.get("attachments")
    assert "Full report: https://example.org/r.pdf" in sent["message"]
    assert ledger["ok:primary"]["delivered"] == "link"
    assert ledger["form:primary"]["delivered"] == "summary"
    link = json.loads(receiver.requests["/slow/1"][0][1])
    assert "https://example.org/r.pdf" in link["message"] and not link.get("attachments")
    form_ctype, form_body = receiver.requests["/ok/form"][0]
    assert form_ctype == "application/x-www-form-urlencoded"  # no attachment: summary only
    assert "Fear & Greed 71" in parse_qs(form_body.decode())["message"][0]


def test_rerun_sends_only_what_is_not_sent_and_retry_rules(receiver, pdf, store) -> None:
    subscribers = [sub("good", receiver.url("ok/g")), sub("bad", receiver.url("fail/b"))]

    def run(**kw):
        return deliver(day=DAY, store=store, subscribers=subscribers, payload=payload(pdf), **kw)

    first = run(max_attempts=5)
    assert (first.sent, first.failed) == (1, 1)
    second = run(max_attempts=5)
    assert (second.sent, second.failed, second.skipped) == (0, 1, 1)
    assert receiver.count("ok/g") == 1 and receiver.count("fail/b") == 2
    # With fewer attempts allowed than already made, a failed row waits for resend_failed.
    assert run(max_attempts=2).skipped == 2 and receiver.count("fail/b") == 2
    forced = run(max_attempts=2, resend_failed=True)
    assert forced.dead == 1 and rows(store)["bad:primary"]["attempts"] == 3
    # Dead is final, even with resend_failed.
    assert run(max_attempts=9, resend_failed=True).skipped == 2
    assert receiver.count("fail/b") == 3 and receiver.count("ok/g") == 1
    assert rows(store)["bad:primary"]["status"] == "dead"


def test_stop_after_then_rerun_delivers_each_endpoint_exactly_once(receiver, pdf, store) -> None:
    subscribers = [sub(f"s{i:02d}", receiver.url(f"ok/{i}")) for i in range(30)]
    first = deliver(
        day=DAY,
        store=store,
        subscribers=subscribers,
        payload=payload(pdf),
        concurrency=2,
        stop_after=10,
    )
    assert first.sent >= 10 and first.not_attempted == 30 - first.sent
    assert sorted(r["status"] for r in rows(store).values()).count("pending") == 30 - first.sent
    second = deliver(day=DAY, store=store, subscribers=subscribers, payload=payload(pdf))
    assert second.sent == 30 - first.sent and second.skipped == first.sent
    assert all(receiver.count(f"ok/{i}") == 1 for i in range(30))
    assert {r["status"] for r in rows(store).values()} == {"sent"}


CHILD = textwrap.dedent("""
    import sys
    from datetime import date
    from pathlib import Path
    from daily_index.delivery import ReportPayload, Subscriber, deliver
    from daily_index.storage.objectstore import LocalObjectStore

    root, pdf, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    subs = [Subscriber(id=f"s{i:02d}", name="S", urls=(f"json://127.0.0.1:{port}/slow/{i}",))
            for i in range(n)]
    deliver(day=date(2024, 5, 1), store=LocalObjectStore(root), subscribers=subs,
            payload=ReportPayload(title="T", body="B", pdf_path=Path(pdf)),
            concurrency=3, flush_every=1000)
""")


def test_killed_run_then_rerun_never_sends_twice(receiver, pdf, tmp_path) -> None:
    n = 24
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, str(script), str(root), str(pdf), str(receiver.port), str(n)]
    )
    deadline = time.monotonic() + 30
    while receiver.total() < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert 8 <= receiver.total() < n

    store = LocalObjectStore(root)
    again = deliver(
        day=DAY,
        store=store,
        subscribers=[sub(f"s{i:02d}", receiver.url(f"slow/{i}")) for i in range(n)],
        payload=payload(pdf),
        concurrency=8,
    )
    counts = {f"s{i:02d}:primary": receiver.count(f"slow/{i}") for i in range(n)}
    ledger = rows(store)
    assert set(ledger) == set(counts)
    assert max(counts.values()) == 1
    for eid, row in ledger.items():
        if row["status"] == "sent":
            assert counts[eid] == 1
        else:  # killed mid-send: outcome unknown, so not resent automatically
            assert row["status"] == "failed" and row["uncertain"], row
            assert "outcome unknown" in row["last_error"]
    uncertain = [e for e, r in ledger.items() if r["uncertain"]]
    assert again.skipped == n - again.sent and 0 < len(uncertain) <= 3

    # An operator can choose to resend those, accepting a possible duplicate.
    forced = deliver(
        day=DAY,
        store=store,
        subscribers=[sub(f"s{i:02d}", receiver.url(f"slow/{i}")) for i in range(n)],
        payload=payload(pdf),
        resend_failed=True,
    )
    assert forced.sent == len(uncertain)
    assert {r["status"] for r in rows(store).values()} == {"sent"}


def test_secrets_never_in_ledger_problems_or_errors(pdf, store, tmp_path) -> None:
    dead = f"mailto://reports:{PASSWORD}@127.0.0.1:{free_port()}?mode=insecure&to=a@example.org"
    fallback = f"json://user:{PASSWORD}@127.0.0.1:{free_port()}/hook"
    summary = deliver(
        day=DAY, store=store, subscribers=[sub("a", dead, fallback=fallback)], payload=payload(pdf)
    )
    assert summary.failed == 1
    raw = store.read_bytes(ledger_key(DAY))
    assert raw is not None and PASSWORD.encode() not in raw
    row = rows(store)["a:primary"]
    assert row["last_error"] and PASSWORD not in json.dumps(row, default=str)
    assert all(
        PASSWORD.encode() not in p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix != ".pdf"
    )


def test_outbox_default_goes_through_the_ledger(pdf, store, tmp_path) -> None:
    outbox = tmp_path / "outbox"
    first = deliver(
        day=DAY, store=store, subscribers=[], payload=payload(pdf, partial=True), outbox_dir=outbox
    )
    assert first.sent == 1
    folder = outbox / DAY.isoformat()
    [message] = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert message["title"].startswith("[PARTIAL]") and PARTIAL_DISCLAIMER in message["body"]
    [copy] = folder.glob("*.pdf")
    assert copy.read_bytes() == PDF_BYTES and message["attachments"] == [copy.name]
    assert rows(store)["outbox:primary"]["status"] == "sent"
    assert (
        deliver(
            day=DAY, store=store, subscribers=[], payload=payload(pdf), outbox_dir=outbox
        ).skipped
        == 1
    )
    assert len(list(folder.glob("*.json"))) == 1


def test_nowhere_to_deliver_or_missing_pdf(store, tmp_path) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        deliver(day=DAY, store=store, subscribers=[], payload=payload(tmp_path / "x.pdf"))
    with pytest.raises(ValueError, match="does not exist"):
        deliver(
            day=DAY,
            store=store,
            subscribers=[sub("a", "json://127.0.0.1:1/x")],
            payload=payload(tmp_path / "missing.pdf"),
        )


def test_pacer_spaces_sends_per_slack_webhook(monkeypatch) -> None:
    monkeypatch.setitem(send_module.PACING, "slack", (0.2, True))
    # The waits the pacer asks for, recorded instead of slept: no wall clock in the assertion.
    slept: list[float] = []
    monkeypatch.setattr(send_module.time, "sleep", slept.append)
    pacer = send_module._Pacer()
    for _ in range(3):
        pacer.wait("slack://T1/B1/hook-a")
    pacer.wait("slack://T1/B1/hook-b")  # another webhook is not held back
    pacer.wait("json://127.0.0.1/x")  # unpaced channel
    assert len(slept) == 2  # the second and third send to hook-a only
    assert 0.15 < slept[0] <= 0.2 and 0.35 < slept[1] <= 0.4
