"""A feed server on 127.0.0.1 (RSS, Atom, broken, too large, slow) and the shared model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DAY = date(2025, 6, 30)


@dataclass(frozen=True)
class Route:
    body: bytes
    content_type: str = "application/rss+xml"
    status: int = 200
    delay_s: float = 0.0
    """Before the headers."""
    trickle_s: float = 0.0
    """Between 64-byte chunks of the body (a server that answers but never finishes)."""
    declare_length: bool = True
    """False: no Content-Length, the body ends when the connection closes."""


def rss(*items: str, title: str = "Coin Wire") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://coinwire.test/</link>"
        f"<description>Crypto news</description>{''.join(items)}</channel></rss>"
    ).encode()


def rss_item(title: str, link: str, published: str | None, summary: str = "") -> str:
    when = f"<pubDate>{published}</pubDate>" if published else ""
    return (
        f"<item><title>{title}</title><link>{link}</link>{when}"
        f"<description>{summary}</description></item>"
    )


def atom(*entries: str, title: str = "Macro Desk") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{title}</title><id>urn:macro-desk</id><updated>2025-06-30T12:00:00Z</updated>"
        f"{''.join(entries)}</feed>"
    ).encode()


def atom_entry(title: str, link: str, updated: str, summary: str = "") -> str:
    return (
        f'<entry><title>{title}</title><link href="{link}"/><id>{link}</id>'
        f"<updated>{updated}</updated><summary>{summary}</summary></entry>"
    )


class FeedServer:
    """Serves `routes` by path; records the paths asked for."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.hits: list[str] = []
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_GET(self) -> None:  # noqa: N802
                owner.hits.append(self.path)
                route = owner.routes.get(self.path.split("?")[0])
                if route is None:
                    route = Route(b"not found", "text/plain", 404)
                time.sleep(route.delay_s)
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    if route.declare_length and not route.trickle_s:
                        self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    if not route.trickle_s:
                        self.wfile.write(route.body)
                        return
                    # Bounded: at most 40 chunks, then the connection closes.
                    for start in range(0, min(len(route.body), 64 * 40), 64):
                        self.wfile.write(route.body[start : start + 64])
                        self.wfile.flush()
                        time.sleep(route.trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer({}) as server:
        yield server


@pytest.fixture(scope="session")
def model() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per test session (seconds)."""
    pytest.importorskip("sentence_transformers")
    from daily_index.news.embed import load_model

    return load_model()
