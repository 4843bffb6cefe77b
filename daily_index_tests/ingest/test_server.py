"""The ingestion server on 127.0.0.1: what each kind of push gets, and what the inbox keeps."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from daily_index.defs.partitions import FIRST_DAY
from daily_index.ingest.inbox import Inbox
from daily_index.ingest.server import IngestConfigError, IngestSettings, RateLimiter
from daily_index_tests.ingest.conftest import (
    OLD_SECRET,
    SECRET,
    Sender,
    ThreadedServer,
    data_update,
    encode,
    error_update,
    filed,
    make_app,
    today,
)


def _inbox(store_dir: Path) -> Inbox:
    return filed(store_dir)


def test_a_signed_push_is_accepted_and_in_the_inbox(sender: Sender, store_dir: Path) -> None:
    body = data_update(value=97001.5)
    answer = sender.post(body, msg_id="msg_first")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "status": "accepted",
        "kpiId": "btc_price_push",
        "day": today().isoformat(),
        "webhookId": "msg_first",
    }
    inbox = _inbox(store_dir)
    [marker] = inbox.pending()
    push = inbox.load(marker)
    assert push is not None and push.update["value"] == 97001.5
    assert push.webhook_id == "msg_first" and push.day == today()
    stored = json.dumps(json.loads(inbox.store.read_bytes(push.key)))
    assert SECRET[6:] not in stored and "webhook-signature" not in stored


def test_the_same_webhook_id_and_the_same_kpi_day_are_idempotent(
    sender: Sender, store_dir: Path
) -> None:
    body = data_update()
    assert sender.post(body, msg_id="msg_a").status_code == 202
    again = sender.post(body, msg_id="msg_a")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # Another id carrying the same value for the KPI-day is the same push re-sent.
    same = sender.post(data_update(traceId="trace-other"), msg_id="msg_b")
    assert same.status_code == 200 and same.json()["webhookId"] == "msg_a"
    # Another value for a KPI-day that has one is refused, naming the push that is kept.
    other = sender.post(data_update(value=1.0), msg_id="msg_c")
    assert other.status_code == 409 and "msg_a" in other.json()["error"]
    # The same webhook-id reused for another KPI-day is still the first message.
    reused = sender.post(data_update(day=today() - timedelta(days=1)), msg_id="msg_a")
    assert reused.status_code == 200 and reused.json()["day"] == today().isoformat()
    assert len(_inbox(store_dir).pending()) == 1


def test_an_error_push_is_accepted_on_its_own_endpoint(sender: Sender, store_dir: Path) -> None:
    assert sender.post(error_update(), "/api/kpi-error").status_code == 202
    wrong = sender.post(error_update(), "/api/kpi-data")
    assert wrong.status_code == 422 and "/api/kpi-error" in wrong.json()["error"]
    wrong = sender.post(data_update(), "/api/kpi-error")
    assert wrong.status_code == 422 and "/api/kpi-data" in wrong.json()["error"]
    assert [m.split("/")[2] for m in _inbox(store_dir).pending()] == ["error"]


def test_the_rotated_out_secret_still_verifies(server: ThreadedServer) -> None:
    assert Sender(server.url, secret=OLD_SECRET).post(data_update()).status_code == 202


BEFORE_FIRST = date.fromisoformat(FIRST_DAY) - timedelta(days=1)

INVALID = [
    ({"value": "97123.45"}, "field 'value'"),
    ({"value": -5.0}, "negative"),
    ({"value": None}, "field 'value'"),
    ({"kpiId": "eth_price_pulled"}, "source kind is 'n8n'"),
    ({"kpiId": "no_such_kpi"}, "'no_such_kpi' is not an active KPI"),
    ({"kpiId": 7}, "field 'kpiId'"),
    ({"traceId": ""}, "field 'traceId'"),
    ({"timestamp": "yesterday"}, "field 'timestamp'"),
    ({"timestamp": "2026-01-01T12:00:00"}, "in UTC such as"),
    ({"timestamp": f"{BEFORE_FIRST}T12:00:00Z"}, f"outside {FIRST_DAY}"),
    ({"schemaVersion": 9}, "schemaVersion"),
]


@pytest.mark.parametrize(("change", "reason"), INVALID, ids=lambda v: str(v)[:40])
def test_a_push_that_breaks_the_contract_gets_422_with_the_reason(
    sender: Sender, store_dir: Path, change: dict, reason: str
) -> None:
    answer = sender.post(data_update(**change))
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["error"]
    assert _inbox(store_dir).pending() == []


def test_a_future_day_and_a_body_that_is_not_an_object_get_422(sender: Sender) -> None:
    future = data_update(day=today() + timedelta(days=2))
    assert sender.post(future).status_code == 422
    for raw in (b"[1, 2]", b'"text"', b"{not json", b"[" * 5000 + b"]" * 5000):
        answer = sender.post(raw)
        assert answer.status_code == 422, (raw[:20], answer.text)


def test_a_push_carrying_a_secret_is_refused(sender: Sender, store_dir: Path) -> None:
    answer = sender.post(data_update(metadata={"echo": SECRET[6:]}))
    assert answer.status_code == 422 and "secret" in answer.json()["error"]
    assert SECRET[6:] not in answer.text
    assert _inbox(store_dir).pending() == []


def test_content_type_and_body_limit(store_dir: Path) -> None:
    with ThreadedServer(make_app(store_dir, max_body_bytes=2048)) as running:
        sender = Sender(running.url)
        raw = encode(data_update())
        headers = sender.headers(raw) | {"content-type": "text/plain"}
        assert sender.post(raw, headers=headers).status_code == 415
        big = encode(data_update(metadata={"pad": "x" * 4000}))
        assert sender.post(big).status_code == 413
        # A body without a Content-Length (chunked) is cut off at the limit too.
        chunks = (big[i : i + 512] for i in range(0, len(big), 512))
        answer = httpx.post(
            running.url + "/api/kpi-data", content=chunks, headers=sender.headers(big)
        )
        assert answer.status_code == 413
        # Too big is refused before the signature is even looked at.
        assert httpx.post(running.url + "/api/kpi-data", content=big).status_code == 413


def test_rate_limit_answers_429_with_retry_after(store_dir: Path) -> None:
    with ThreadedServer(make_app(store_dir, rate_per_s=0.01, burst=3)) as running:
        codes = [
            httpx.post(running.url + "/api/kpi-data", content=b"{}").status_code for _ in range(6)
        ]
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429, 429]
        limited = httpx.post(running.url + "/api/kpi-data", content=b"{}")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_rate_limiter_refills_per_client() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2)
    assert [limiter.wait_for("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert limiter.wait_for("b", now=0.0) == 0.0  # another client has its own bucket
    assert limiter.wait_for("a", now=0.5) == 0.0  # half a second later: one token back


def _headers(good: dict[str, str], **changes: str | None) -> dict[str, str]:
    headers = dict(good)
    for name, value in changes.items():
        header = name.replace("_", "-")
        if value is None:
            headers.pop(header, None)
        else:
            headers[header] = value
    return headers


def test_missing_or_malformed_headers_are_4xx_never_5xx(sender: Sender, store_dir: Path) -> None:
    raw = encode(data_update())
    good = sender.headers(raw, msg_id="msg_matrix")
    now = int(time.time())
    signature_values = [
        "",
        "v1",
        "v1,",
        "v1,@@@@",
        "v1,a,b",
        "v2," + good["webhook-signature"][3:],
        good["webhook-signature"][3:],
        "v1," + "A" * 10_000,
        " ".join(["v1,bm9wZQ=="] * 200),
        good["webhook-signature"].lower(),
    ]
    timestamp_values = [
        "",
        "abc",
        "nan",
        "inf",
        "1e400",
        "-1",
        str(now - 600),
        str(now + 600),
        str(now) + "0",
        "0x" + format(now, "x"),
    ]
    cases = [_headers(good, **{name: None}) for name in ("webhook_id", "webhook_timestamp")]
    cases += [_headers(good, webhook_signature=None), _headers(good, webhook_id="")]
    cases += [_headers(good, webhook_signature=v) for v in signature_values]
    cases += [_headers(good, webhook_timestamp=v) for v in timestamp_values]
    cases += [_headers(good, webhook_id="msg_other")]
    with httpx.Client(timeout=10) as client:
        for headers in cases:
            answer = client.post(sender.url + "/api/kpi-data", content=raw, headers=headers)
            assert answer.status_code == 401, (headers, answer.status_code, answer.text)
            assert answer.json() == {"error": "missing or invalid webhook signature"}
        # Non-ASCII header bytes and a non-UTF-8 body are refused the same way.
        answer = client.post(
            sender.url + "/api/kpi-data",
            content=b"\xff\xfe{}",
            headers=[
                (b"webhook-id", b"msg_\xe9"),
                (b"webhook-timestamp", str(now).encode()),
                (b"webhook-signature", good["webhook-signature"].encode()),
            ],
        )
        assert answer.status_code == 401
        assert client.get(sender.url + "/api/kpi-data").status_code == 405
        assert client.post(sender.url + "/api/other", content=raw).status_code == 404
    assert _inbox(store_dir).pending() == []


def test_an_old_timestamp_is_rejected_even_when_correctly_signed(sender: Sender) -> None:
    raw = encode(data_update())
    headers = sender.headers(raw, at=int(time.time()) - 301)
    assert sender.post(raw, headers=headers).status_code == 401


def test_health(server: ThreadedServer) -> None:
    answer = httpx.get(server.url + "/api/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "kpis": 2}


@pytest.mark.parametrize(
    ("environ", "mentions"),
    [
        ({}, "DAILY_INDEX_INGEST_SECRETS is not set"),
        ({"DAILY_INDEX_INGEST_SECRETS": "hunter2hunter2"}, "secret #1"),
        ({"DAILY_INDEX_INGEST_SECRETS": f"{SECRET},whsec_%%%"}, "secret #2"),
        (
            {"DAILY_INDEX_INGEST_SECRETS": SECRET, "DAILY_INDEX_INGEST_RATE_LIMIT": "fast"},
            "DAILY_INDEX_INGEST_RATE_LIMIT",
        ),
        (
            {"DAILY_INDEX_INGEST_SECRETS": SECRET, "DAILY_INDEX_INGEST_MAX_BODY_BYTES": "10"},
            "at least 256",
        ),
    ],
)
def test_bad_configuration_names_the_variable_not_the_secret(environ, mentions) -> None:
    with pytest.raises(IngestConfigError) as caught:
        IngestSettings.from_env(environ)
    assert mentions in str(caught.value)
    assert "hunter2" not in str(caught.value) and SECRET[6:] not in str(caught.value)


def test_settings_from_env() -> None:
    settings = IngestSettings.from_env(
        {
            "DAILY_INDEX_INGEST_SECRETS": f" {SECRET} , {OLD_SECRET} ",
            "DAILY_INDEX_INGEST_MAX_BODY_BYTES": "4096",
            "DAILY_INDEX_INGEST_RATE_LIMIT": "0",
        }
    )
    assert settings.secrets == (SECRET, OLD_SECRET)
    assert settings.max_body_bytes == 4096 and settings.rate_per_s == 0
    assert SECRET[6:] not in repr(settings)
