"""The ingestion server on 127.0.0.1 (uvicorn in a thread), a push registry, signed senders."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from daily_index.contract import partition_timestamp
from daily_index.ingest.inbox import Inbox
from daily_index.ingest.journal import spool_segments
from daily_index.ingest.server import IngestApp, IngestSettings
from daily_index.ingest.signing import signed_headers
from daily_index.registry import KpiSpec, parse_registry
from daily_index.storage.objectstore import LocalObjectStore

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + "QmVmb3JlIHRoZSByb3RhdGlvbiwgdGhpcyB3YXMgaXQ="

REGISTRY = """
version: 1
kpis:
  - id: btc_price_push
    name: Bitcoin price (n8n push)
    description: Spot price of one bitcoin, pushed by an n8n workflow.
    type: price
    unit: USD
    source: {kind: n8n, params: {webhook: kpi/btc-price-push}}
    metadata: {source: n8n, updateFrequency: daily, category: crypto_market}
  - id: usdt_share_push
    name: USDT dominance (n8n push)
    description: Tether's share of the crypto market cap, pushed by an n8n workflow.
    type: dominance
    unit: "%"
    source: {kind: n8n, params: {webhook: kpi/usdt-share-push}}
    metadata: {source: n8n, updateFrequency: daily, category: crypto_market}
  - id: eth_price_pulled
    name: Ether price (pulled)
    description: Spot price of one ether from CoinGecko; not a push KPI.
    type: price
    unit: USD
    source: {kind: coingecko_price, params: {coin: ethereum}}
    metadata: {source: CoinGecko, updateFrequency: daily, category: crypto_market}
"""


def push_kpis() -> list[KpiSpec]:
    return list(parse_registry(REGISTRY, source="test registry").kpis)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def today() -> date:
    return datetime.now(UTC).date()


def data_update(kpi_id: str = "btc_price_push", day: date | None = None, **changes: Any) -> dict:
    day = day or today()
    body = {
        "schemaVersion": 2,
        "traceId": f"trace-{uuid.uuid4().hex[:12]}",
        "kpiId": kpi_id,
        "timestamp": partition_timestamp(day),
        "value": 97123.45,
        "unit": "USD",
        "source": "coingecko via n8n",
        "metadata": {"workflow": "kpi-push-btc-price"},
    }
    body.update(changes)
    return body


def error_update(kpi_id: str = "btc_price_push", day: date | None = None) -> dict:
    day = day or today()
    return {
        "schemaVersion": 2,
        "traceId": f"trace-{uuid.uuid4().hex[:12]}",
        "kpiId": kpi_id,
        "timestamp": partition_timestamp(day),
        "error": "upstream answered 503: Service Unavailable",
        "errorCode": "upstream_error",
        "retryable": True,
    }


def encode(body: Any) -> bytes:
    return json.dumps(body).encode() if not isinstance(body, bytes) else body


@dataclass
class Sender:
    """Signs and POSTs pushes to a running server."""

    url: str
    secret: str = SECRET

    def headers(self, body: bytes, msg_id: str | None = None, at: int | None = None) -> dict:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        return signed_headers(self.secret, msg_id, int(time.time()) if at is None else at, body)

    def post(
        self,
        body: Any,
        path: str = "/api/kpi-data",
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        raw = encode(body)
        sent = headers if headers is not None else self.headers(raw, msg_id)
        if client is not None:
            return client.post(self.url + path, content=raw, headers=sent)
        return httpx.post(self.url + path, content=raw, headers=sent, timeout=10)


class ThreadedServer:
    """uvicorn serving an app on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: IngestApp):
        self.app = app
        self.port = free_port()
        config = uvicorn.Config(
            app.asgi(), host="127.0.0.1", port=self.port, log_level="error", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the ingestion server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def filed(store_dir: Path) -> Inbox:
    """The inbox as the sensor sees it: the journal filed first (the server's spooler may lag)."""
    inbox = Inbox(LocalObjectStore(store_dir))
    spool_segments(inbox, delete=False)
    return inbox


def make_app(store_dir: Path, **settings: Any) -> IngestApp:
    chosen = {"secrets": (SECRET, OLD_SECRET), "rate_per_s": 0.0, **settings}
    return IngestApp(IngestSettings(**chosen), kpis=push_kpis(), store=LocalObjectStore(store_dir))


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def server(store_dir: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(make_app(store_dir)) as running:
        yield running


@pytest.fixture
def sender(server: ThreadedServer) -> Sender:
    return Sender(server.url)
