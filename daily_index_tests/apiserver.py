"""A small JSON API imitation on 127.0.0.1 for tests: routes map a path to a handler.

A handler gets the query (one value per name) and returns (status, JSON-ready body). Every
request is recorded, so a test can assert what was (or was not) asked for. `faults` maps a
path prefix to a `Fault` (any status, body, content type, delay) served instead of the route.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from daily_index.replay import Fault

Handler = Callable[[dict[str, str]], tuple[int, Any]]


class ApiServer:
    """Serves `routes` until closed; use as a context manager."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.faults: dict[str, Fault] = {}  # path prefix -> the answer served instead
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                owner.requests.append((parts.path, query))
                faults = owner.faults.items()
                fault = next((f for p, f in faults if parts.path.startswith(p)), None)
                if fault is not None:
                    time.sleep(fault.delay_s)
                    status, payload = fault.status, fault.payload()
                    content_type = fault.content_type
                else:
                    handler = owner.routes.get(parts.path)
                    no_route = (404, {"error": "no route"})
                    status, body = no_route if handler is None else handler(query)
                    payload, content_type = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
