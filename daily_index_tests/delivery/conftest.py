"""Real receivers on 127.0.0.1 for the delivery tests: HTTP (json://, form://) and SMTP."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from daily_index.storage.objectstore import LocalObjectStore

PDF_BYTES = b"%PDF-1.4\n% daily index test report\n" + bytes(range(256)) * 8


class Receiver:
    """Records every request by path, then answers by the path's first segment.

    `/fail/...` 500, `/gone/...` 410, `/slow/...` after 0.3 s, `/stall/...` after 2.5 s
    (past a client's `rto=1`), `/hang/...` only once `release` is set (or after 60 s);
    anything else 200. `hanging` counts requests held at `/hang/` right now.
    """

    def __init__(self) -> None:
        self.requests: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.hanging = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?", 1)[0]
                with receiver.lock:
                    receiver.requests[path].append((self.headers.get("Content-Type", ""), body))
                if path.startswith("/slow/"):
                    time.sleep(0.3)
                elif path.startswith("/stall/"):
                    time.sleep(2.5)
                elif path.startswith("/hang/"):
                    with receiver.lock:
                        receiver.hanging += 1
                    receiver.release.wait(60)
                    with receiver.lock:
                        receiver.hanging -= 1
                status = {"/fail/": 500, "/gone/": 410}.get(path[: path.find("/", 1) + 1], 200)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (a killed sender, a read timeout)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.requests.get("/" + path.lstrip("/"), []))

    def total(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.requests.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        self.messages.append(envelope.content)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "report-2024-05-01.pdf"
    path.write_bytes(PDF_BYTES)
    return path


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")
