"""Delivery by channel: the PDF attached where it fits, else the summary and a link.

Real receivers on 127.0.0.1 (HTTP for json://, an SMTP server for mailto://), a local
store and a bucket on the moto S3 server; a presigned link is downloaded for real.
"""

from __future__ import annotations

import base64
import email
import json
import re
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from apprise.attachment.file import AttachFile
from click.testing import CliRunner

from daily_index.defs.delivery import run_delivery
from daily_index.defs.resources import (
    ConfigurationError,
    DeliveryResource,
    StorageResource,
    delivery_from_env,
)
from daily_index.delivery import (
    AttachLimitsError,
    AttachPolicy,
    ReportPayload,
    Subscriber,
    deliver,
    delivered_pdf_key,
    ledger_key,
    parse_attach_limits,
    read_ledger,
)
from daily_index.delivery.channels import APPRISE_ATTACH_CAP, decide, parse_size, takes_files
from daily_index.delivery.ledger import Journal, Ledger, Outcome
from daily_index.delivery.subscribers import instantiate
from daily_index.storage.objectstore import ObjectStore, S3ObjectStore
from daily_index_tests.conftest import S3_TEST_CREDENTIALS, create_bucket
from daily_index_tests.delivery.conftest import PDF_BYTES, Receiver

DAY = date(2024, 5, 1)
LINK_BASE = "https://reports.example.org/daily"
LINK = re.compile(r"Full report: (\S+)")


def payload(pdf: Path) -> ReportPayload:
    return ReportPayload(title="Daily Index 2024-05-01", body="BTC up 2%.", pdf_path=pdf)


def mail_url(port: int) -> str:
    return f"mailto://reports:pw@127.0.0.1:{port}?mode=insecure&from=r@example.org&to=a@example.org"


def json_body(receiver: Receiver, path: str, n: int = 0) -> dict:
    with receiver.lock:
        return json.loads(receiver.requests[f"/{path}"][n][1])


def ledger_rows(store: ObjectStore, edition: str | None = None) -> dict[str, dict]:
    return {r["endpoint_id"]: r for r in read_ledger(store, DAY, edition).to_dict("records")}


def mail_parts(raw: bytes) -> tuple[str, list[bytes]]:
    message = email.message_from_bytes(raw)
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    files = [p.get_payload(decode=True) for p in message.walk() if p.get_filename()]
    return text.get_payload(decode=True).decode(), files


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7MB", 7_000_000),
        ("8MiB", 8 * 1024**2),
        ("5120KiB", APPRISE_ATTACH_CAP),
        ("1.5 MB", 1_500_000),
        ("250000", 250_000),
        ("0", 0),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "entry", "why"),
    [
        ("mailto", "entry 1 'mailto'", "expected scheme=size"),
        ("mailto=7MB,discord", "entry 2 'discord'", "expected scheme=size"),
        ("nosuch=1MB", "entry 1 'nosuch=1MB'", "not an apprise URL scheme"),
        ("mailto=7XB", "entry 1 'mailto=7XB'", "not a size"),
        ("mailto=-1", "entry 1 'mailto=-1'", "not a size"),
        ("json=0,json=1MB", "entry 2 'json=1MB'", "given twice"),
        ("=3", "entry 1 '=3'", "expected scheme=size"),
    ],
)
def test_bad_attach_limits_name_the_entry(text: str, entry: str, why: str) -> None:
    with pytest.raises(AttachLimitsError) as info:
        parse_attach_limits(text)
    assert f"DAILY_INDEX_ATTACH_LIMITS {entry}" in str(info.value) and why in str(info.value)
    with pytest.raises(ConfigurationError, match=re.escape(entry)):
        delivery_from_env({"DAILY_INDEX_ATTACH_LIMITS": text})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DAILY_INDEX_REPORT_LINK_EXPIRY_S": "0"}, "must be >= 1"),
        ({"DAILY_INDEX_REPORT_LINK_EXPIRY_S": "604801"}, "at most 604800"),
        ({"DAILY_INDEX_REPORT_LINK_EXPIRY_S": "7d"}, "whole number"),
        ({"DAILY_INDEX_REPORT_LINK_BASE": "reports.example.org"}, "http"),
    ],
)
def test_bad_link_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        delivery_from_env(env)


def test_bad_attach_limits_exit_2_from_the_cli(monkeypatch, tmp_path: Path) -> None:
    from daily_index.cli import main

    monkeypatch.setenv("DAILY_INDEX_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("DAILY_INDEX_ATTACH_LIMITS", "mailto=7MB,discord=lots")
    result = CliRunner().invoke(main, ["deliver", "--date", DAY.isoformat(), "--no-progress"])
    assert result.exit_code == 2
    assert "DAILY_INDEX_ATTACH_LIMITS entry 2 'discord=lots'" in result.output


def test_default_limits_and_overrides() -> None:
    defaults = AttachPolicy()
    assert defaults.limit("mailto", True) == defaults.limit("mailtos", True) == 7_500_000
    assert defaults.limit("discord", True) == 10_000_000
    assert defaults.limit("tgram", True) == 50_000_000
    assert {defaults.limit(s, True) for s in ("json", "jsons", "form", "xml")} == {0}
    assert defaults.limit("outbox", True) is None
    assert defaults.limit("ntfy", True) == APPRISE_ATTACH_CAP
    assert defaults.limit("ntfy", False) == 0  # a plugin that takes no files
    custom = AttachPolicy(parse_attach_limits("mailto=1MB, mailtos=2MB, default=0"))
    assert (custom.limit("mailto", True), custom.limit("mailtos", True)) == (1e6, 2e6)
    assert custom.limit("discord", True) == custom.limit("outbox", True) == 0
    assert AttachPolicy(parse_attach_limits("json=1MB")).limit("json", False) == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mailto://u:p@example.org?to=a@example.org", True),
        ("discord://1111/2222", True),
        ("tgram://123456789:abcdefghijklmnopqrstuvwxyz0123456789/98765", True),
        ("json://hooks.example.org/x", True),  # the plugin can; the policy says never
        ("slack://xoxb-1234-1234-abc124/#general", True),  # a bot uploads files
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", False),  # a webhook drops them
        ("pover://" + "u" * 30 + "@" + "a" * 30, True),
        ("gotify://hostname/" + "t" * 15, False),
    ],
)
def test_which_plugins_take_files(url: str, expected: bool) -> None:
    plugin = instantiate(url)
    assert plugin is not None and takes_files(plugin) is expected


@pytest.mark.parametrize(
    ("receives", "scheme", "size", "has_link", "expected"),
    [
        ("pdf", "mailto", 500_000, True, "file"),
        ("pdf", "mailto", 8_000_000, True, "link"),
        ("pdf", "mailto", 8_000_000, False, "no link"),
        ("pdf", "json", 1_000, True, "link"),
        ("pdf", "json", 1_000, False, "no link"),
        ("link", "mailto", 500_000, True, "link"),
        ("link", "mailto", 500_000, False, "file"),
        ("link", "json", 500_000, False, "no link"),
        ("summary", "mailto", 500_000, True, "summary"),
    ],
)
def test_decide(receives, scheme, size, has_link, expected) -> None:
    got = decide(
        receives=receives,
        scheme=scheme,
        takes_files=True,
        pdf_size=size,
        has_link=has_link,
        policy=AttachPolicy(),
    )
    assert got == expected


# --- real receivers ---------------------------------------------------------------------------


def test_webhook_gets_a_link_email_the_file(receiver, smtp, pdf, store) -> None:
    box, port = smtp
    subscribers = [
        Subscriber(id="hook", name="Hook", urls=(receiver.url("ok/hook"),)),
        Subscriber(id="mail", name="Mail", urls=(mail_url(port),)),
    ]
    summary = deliver(
        day=DAY, store=store, subscribers=subscribers, payload=payload(pdf), link_base=LINK_BASE
    )
    assert (summary.sent, summary.by_delivery) == (2, {"file": 1, "link": 1})
    expected_link = f"{LINK_BASE}/reports/delivered/{DAY}.pdf"
    assert (summary.link, summary.report_key) == ("base url", delivered_pdf_key(DAY))
    hook = json_body(receiver, "ok/hook")
    assert not hook.get("attachments") and LINK.search(hook["message"])[1] == expected_link
    assert base64.b64encode(PDF_BYTES)[:64].decode() not in json.dumps(hook)
    [raw] = box.messages
    text, files = mail_parts(raw)
    assert files == [PDF_BYTES] and expected_link in text
    rows = ledger_rows(store)
    assert (rows["hook:primary"]["delivered"], rows["mail:primary"]["delivered"]) == (
        "link",
        "file",
    )
    assert pd.isna(rows["hook:primary"]["link_expires_at"])  # a base URL does not expire
    assert store.read_bytes(delivered_pdf_key(DAY)) == PDF_BYTES


def test_email_gets_a_link_when_its_limit_is_below_the_pdf(smtp, pdf, store) -> None:
    box, port = smtp
    policy = AttachPolicy(parse_attach_limits(f"mailto={len(PDF_BYTES) - 1}"))
    summary = deliver(
        day=DAY,
        store=store,
        subscribers=[Subscriber(id="mail", name="Mail", urls=(mail_url(port),))],
        payload=payload(pdf),
        attach_policy=policy,
        link_base=LINK_BASE,
    )
    assert summary.by_delivery == {"link": 1}
    text, files = mail_parts(box.messages[0])
    assert files == [] and f"{LINK_BASE}/reports/delivered/{DAY}.pdf" in text
    assert ledger_rows(store)["mail:primary"]["delivered"] == "link"

    # The same limit at the PDF's size attaches it (the next day: a fresh ledger).
    at_size = AttachPolicy(parse_attach_limits(f"mailto={len(PDF_BYTES)}"))
    again = deliver(
        day=DAY + timedelta(days=1),
        store=store,
        subscribers=[Subscriber(id="mail", name="Mail", urls=(mail_url(port),))],
        payload=payload(pdf),
        attach_policy=at_size,
    )
    assert again.by_delivery == {"file": 1}
    assert mail_parts(box.messages[1])[1] == [PDF_BYTES]


def test_local_store_without_a_base_says_no_link(receiver, pdf, store) -> None:
    summary = deliver(
        day=DAY,
        store=store,
        subscribers=[
            Subscriber(id="hook", name="Hook", urls=(receiver.url("ok/h"),)),
            Subscriber(id="asks", name="Asks", urls=(receiver.url("ok/a"),), receives="link"),
            Subscriber(id="text", name="Text", urls=(receiver.url("ok/t"),), receives="summary"),
        ],
        payload=payload(pdf),
    )
    assert summary.link == "none" and summary.link_expires_at is None
    assert summary.by_delivery == {"no link": 2, "summary": 1} and summary.no_link == 2
    for path in ("ok/h", "ok/a"):
        message = json_body(receiver, path)["message"]
        assert "no link to it is available" in message and "Full report" not in message
    assert "no link" not in json_body(receiver, "ok/t")["message"]
    assert {r["delivered"] for r in ledger_rows(store).values()} == {"no link", "summary"}


def test_each_attachment_is_encoded_once_per_run(receiver, pdf, store, monkeypatch) -> None:
    # Observe apprise's encoder (calls go through to it unchanged).
    calls: list[str | None] = []
    encode = AttachFile.base64

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(AttachFile, "base64", counting)
    n = 12
    summary = deliver(
        day=DAY,
        store=store,
        subscribers=[
            Subscriber(id=f"s{i}", name="S", urls=(receiver.url(f"ok/{i}"),)) for i in range(n)
        ],
        payload=payload(pdf),
        attach_policy=AttachPolicy(parse_attach_limits("json=1MB")),
        concurrency=4,
    )
    assert summary.by_delivery == {"file": n}
    assert calls == [pdf.name]
    encoded = {json_body(receiver, f"ok/{i}")["attachments"][0]["base64"] for i in range(n)}
    assert encoded == {base64.b64encode(PDF_BYTES).decode()}


# --- presigned links on S3 (moto) -------------------------------------------------------------


@pytest.fixture
def s3_storage(moto_endpoint: str, s3_client) -> StorageResource:
    return StorageResource(
        backend="s3",
        bucket=create_bucket(s3_client),
        endpoint_url=moto_endpoint,
        region_name="auto",
        access_key_id=S3_TEST_CREDENTIALS["aws_access_key_id"],
        secret_access_key=S3_TEST_CREDENTIALS["aws_secret_access_key"],
    )


def _subscribers_file(tmp_path: Path, receiver: Receiver, ids: list[str]) -> str:
    path = tmp_path / "subscribers.csv"
    path.write_text("id,name,urls\n" + "".join(f"{i},{i},{receiver.url('ok/' + i)}\n" for i in ids))
    return str(path)


ANALYSIS = {"headline": "BTC up", "summary": "BTC rose.", "analyst_label": "Rule-based."}


def _run(storage, delivery, pdf_bytes: bytes, edition: str | None = None):
    return run_delivery(
        day=DAY,
        analysis=ANALYSIS,
        pdf_bytes=pdf_bytes,
        partial=False,
        storage=storage,
        delivery=delivery,
        demo=False,
        edition=edition,
    )[0]


def _download(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")  # moto on loopback, never the network
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL)
        return response.read()


def test_presigned_link_downloads_the_delivered_edition(
    s3_storage, receiver, tmp_path: Path
) -> None:
    store = s3_storage.get_store()
    assert isinstance(store, S3ObjectStore)
    delivery = DeliveryResource(
        subscribers_file=_subscribers_file(tmp_path, receiver, ["alice"]),
        link_expiry_s=3600,
    )
    before = datetime.now(UTC)
    first = _run(s3_storage, delivery, PDF_BYTES)
    assert first.link == "presigned" and first.by_delivery == {"link": 1}
    assert before + timedelta(seconds=3590) < first.link_expires_at
    assert first.link_expires_at < datetime.now(UTC) + timedelta(seconds=3610)
    url = LINK.search(json_body(receiver, "ok/alice")["message"])[1]
    assert "X-Amz-Expires=3600" in url and "X-Amz-Signature=" in url
    assert _download(url) == PDF_BYTES

    row = ledger_rows(store)["alice:primary"]
    assert row["delivered"] == "link" and row["status"] == "sent"
    assert abs(row["link_expires_at"].to_pydatetime() - first.link_expires_at) < timedelta(
        seconds=1
    )
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", url)[1]
    assert signature.encode() not in store.read_bytes(ledger_key(DAY))

    # The report is rebuilt, and bob subscribes: bob gets the edition alice got, and the
    # link still downloads the delivered bytes, not the rebuilt ones.
    rebuilt = PDF_BYTES + b"% rebuilt\n"
    store.put(f"reports/{DAY}.pdf", rebuilt)
    delivery = delivery.model_copy(
        update={"subscribers_file": _subscribers_file(tmp_path, receiver, ["alice", "bob"])}
    )
    second = _run(s3_storage, delivery, rebuilt)
    assert (second.sent, second.already_sent, second.report_differs) == (1, 1, True)
    bob_url = LINK.search(json_body(receiver, "ok/bob")["message"])[1]
    assert _download(bob_url) == PDF_BYTES
    assert receiver.count("ok/alice") == 1

    # The amended edition is its own delivered copy, with the rebuilt bytes.
    amended = _run(s3_storage, delivery, rebuilt, edition="amended")
    assert amended.sent == 2 and amended.report_key == delivered_pdf_key(DAY, "amended")
    amended_url = LINK.search(json_body(receiver, "ok/alice", 1)["message"])[1]
    assert _download(amended_url) == rebuilt
    assert store.read_bytes(delivered_pdf_key(DAY)) == PDF_BYTES


def test_a_link_base_wins_over_presigning(s3_storage, receiver, tmp_path: Path) -> None:
    delivery = DeliveryResource(
        subscribers_file=_subscribers_file(tmp_path, receiver, ["carol"]),
        report_link_base=LINK_BASE + "/",
    )
    summary = _run(s3_storage, delivery, PDF_BYTES)
    assert summary.link == "base url" and summary.link_expires_at is None
    message = json_body(receiver, "ok/carol")["message"]
    assert LINK.search(message)[1] == f"{LINK_BASE}/reports/delivered/{DAY}.pdf"


def test_a_killed_runs_journal_keeps_what_each_endpoint_got(store) -> None:
    journal = Journal.for_store(store, DAY)
    journal.open()
    at = datetime.now(UTC)
    expires = at + timedelta(days=7)
    journal.start("a:primary", at)
    journal.finish(
        Outcome(
            "a:primary",
            ok=True,
            started_at=at,
            finished_at=at,
            delivered="link",
            link_expires_at=expires,
        )
    )
    journal.close(remove=False)  # as a kill leaves it
    [outcome] = Journal.for_store(store, DAY).replay()
    assert (outcome.delivered, outcome.link_expires_at) == ("link", expires)
    ledger = Ledger(store, DAY)
    ledger.ensure(
        endpoint_id="a:primary",
        subscriber_id="a",
        channel="primary",
        kind="json",
        url="json://h/a",
        fallback_url=None,
    )
    assert ledger.apply(outcome, max_attempts=3, replayed=True) == "sent"
    ledger.flush()
    row = ledger_rows(store)["a:primary"]
    assert row["delivered"] == "link" and row["link_expires_at"].to_pydatetime() == expires
