r"""An imitation of n8n on 127.0.0.1: its webhooks as they behave while starting, its public API.

Webhooks (`POST /webhook/<path>`): the start-up phases are counted from the first request
(so a slow test set-up cannot skip them). While `migrating_s` runs, `/healthz/readiness`
answers 503 and webhooks answer 200 "n8n is starting up. Please wait", as n8n does before
its database is ready. Then for `not_registered_s` every path answers n8n's own 404
`{"code": 404, "message": "The requested webhook \"POST <path>\" is not registered.",
"hint": ...}`, then for `unavailable_s` a 503, then each path of an active workflow answers
a valid `KPIDataUpdate` for the trigger it got (other paths keep the 404). `/healthz`
answers `{"status": "ok"}` as soon as the server listens.

A GET on a webhook path runs nothing: n8n answers 404 "This webhook is not registered for GET
requests. Did you mean to make a POST request?" when a POST webhook serves the path.

Public API (`/api/v1/workflows`, documented shapes: `{"data": [...], "nextCursor": ...}`,
`POST /api/v1/workflows/{id}/activate|deactivate`), with `X-N8N-API-KEY` checked (401
otherwise). Activating a workflow registers its webhooks at once; deactivating removes them.

Everything is counted: webhook POSTs per path and per status, executions (answered
triggers), requests in flight and their peak, health checks, API calls.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

NOT_REGISTERED_HINT = (
    "The workflow must be active for a production URL to run successfully. You can activate "
    "the workflow using the toggle in the top-right of the editor."
)
Answer = Callable[[dict[str, Any], dict[str, str]], tuple[int, Any]]


def webhook_node(path: str, method: str = "POST") -> dict[str, Any]:
    return {
        "id": f"node-{path}",
        "name": "Webhook",
        "type": "n8n-nodes-base.webhook",
        "typeVersion": 2,
        "parameters": {"path": path, "httpMethod": method, "responseMode": "responseNode"},
    }


def workflow(wf_id: str, name: str, paths: list[str], active: bool = True) -> dict[str, Any]:
    """A workflow as the public API lists it, one webhook node per path."""
    nodes = [webhook_node(p) for p in paths]
    nodes.append({"id": f"respond-{wf_id}", "name": "Respond", "type": "n8n-nodes-base.set"})
    return {
        "id": wf_id,
        "name": name,
        "active": active,
        "createdAt": "2026-11-01T00:00:00.000Z",
        "updatedAt": "2026-11-01T00:00:00.000Z",
        "nodes": nodes,
        "connections": {},
        "settings": {},
        "tags": [],
    }


def kpi_answer(trigger: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """A valid KPIDataUpdate for the trigger: its day, trace and KPI, a value of 1.5."""
    return 200, {
        "schemaVersion": 2,
        "traceId": trigger["traceId"],
        "kpiId": trigger["kpiId"],
        "timestamp": trigger["timestamp"],
        "value": 1.5,
        "metadata": {"workflow": "imitation"},
    }


class N8nImitation:
    """Serves until closed; use as a context manager.

    Attributes:
        workflows: the workflows, as the public API lists them (mutable by the API).
        answer: builds a registered webhook's answer from (trigger, lower-cased headers).
        latency_s: added before every webhook answer.
        api_key: the key the public API accepts (None: the API answers 401 to all).
        page_size: the API's page length when none is asked for (n8n: 100).
        max_page: the longest page served whatever is asked (n8n: 250), to exercise
            `nextCursor`.
    """

    def __init__(
        self,
        workflows: list[dict[str, Any]] | None = None,
        *,
        not_registered_s: float = 0.0,
        unavailable_s: float = 0.0,
        migrating_s: float = 0.0,
        latency_s: float = 0.0,
        api_key: str | None = None,
        page_size: int = 100,
        max_page: int = 250,
        answer: Answer = kpi_answer,
    ) -> None:
        self.workflows = workflows if workflows is not None else []
        self.not_registered_s = not_registered_s
        self.unavailable_s = unavailable_s
        self.migrating_s = migrating_s
        self.latency_s = latency_s
        self.api_key = api_key
        self.page_size = page_size
        self.max_page = max_page
        self.answer = answer
        self.posts: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.executions: Counter[str] = Counter()
        self.health_checks = 0
        self.api_calls: list[tuple[str, str, dict[str, str]]] = []
        self.api_keys_seen: list[str | None] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._started: float | None = None
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_GET(self) -> None:  # noqa: N802
                owner._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                owner._serve(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def restart(self) -> None:
        """Begin the start-up phases again at the next request."""
        self._started = None

    def __enter__(self) -> N8nImitation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # what n8n holds

    def registered(self) -> set[str]:
        """Webhook paths of the active workflows."""
        with self._lock:
            return {
                node["parameters"]["path"]
                for wf in self.workflows
                if wf["active"]
                for node in wf["nodes"]
                if node.get("type") == "n8n-nodes-base.webhook"
            }

    def _phase(self) -> str:
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()
            age = time.monotonic() - self._started
        if age < self.migrating_s:
            return "migrating"
        age -= self.migrating_s
        if age < self.not_registered_s:
            return "not_registered"
        if age < self.not_registered_s + self.unavailable_s:
            return "unavailable"
        return "running"

    # serving

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if parts.path.startswith("/webhook/") and method == "POST":
            path = parts.path.removeprefix("/webhook/")
            status, payload, content_type = self._webhook(path, body, headers)
        elif parts.path.startswith("/webhook/"):
            # n8n's answer to a GET on a path only a POST webhook serves, or on no webhook.
            path = parts.path.removeprefix("/webhook/")
            with self._lock:
                self.gets[path] += 1
            if path in self.registered() and self._phase() == "running":
                message = (
                    "This webhook is not registered for GET requests. "
                    "Did you mean to make a POST request?"
                )
                payload = {"code": 404, "message": message}
            else:
                message = f'The requested webhook "GET {path}" is not registered.'
                payload = {"code": 404, "message": message, "hint": NOT_REGISTERED_HINT}
            status, content_type = 404, "application/json"
        elif parts.path in ("/healthz", "/healthz/readiness"):
            with self._lock:
                self.health_checks += 1
            ready = parts.path == "/healthz" or self._phase() != "migrating"
            status, payload = (200, {"status": "ok"}) if ready else (503, {"status": "error"})
            content_type = "application/json"
        elif parts.path.startswith("/api/v1/"):
            query = dict(parse_qsl(parts.query))
            status, payload = self._api(method, parts.path, query, headers)
            content_type = "application/json"
        else:
            status, payload = 404, {"code": 404, "message": f"Cannot {method} {parts.path}"}
            content_type = "application/json"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _webhook(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
        with self._lock:
            self.posts[path] += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            phase = self._phase()
            if phase == "migrating":
                status, payload = 200, b"n8n is starting up. Please wait"
                content_type = "text/html; charset=utf-8"
            elif phase == "unavailable":
                status, payload = 503, {"code": 503, "message": "Service Unavailable"}
                content_type = "application/json"
            elif phase == "not_registered" or path not in self.registered():
                message = f'The requested webhook "POST {path}" is not registered.'
                status, content_type = 404, "application/json"
                payload = {"code": 404, "message": message, "hint": NOT_REGISTERED_HINT}
            else:
                status, payload = self.answer(json.loads(body), headers)
                content_type = "application/json"
                with self._lock:
                    self.executions[path] += 1
            with self._lock:
                self.statuses[status] += 1
            return status, payload, content_type
        finally:
            with self._lock:
                self._in_flight -= 1

    def _api(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any]:
        with self._lock:
            self.api_calls.append((method, path, query))
            self.api_keys_seen.append(headers.get("x-n8n-api-key"))
        if self.api_key is None or headers.get("x-n8n-api-key") != self.api_key:
            return 401, {"message": "unauthorized"}
        if method == "GET" and path == "/api/v1/workflows":
            limit = min(int(query.get("limit") or self.page_size), self.max_page)
            start = int(query.get("cursor") or 0)
            with self._lock:
                page = [json.loads(json.dumps(wf)) for wf in self.workflows[start : start + limit]]
                more = start + limit < len(self.workflows)
            return 200, {"data": page, "nextCursor": str(start + limit) if more else None}
        for action, active in (("activate", True), ("deactivate", False)):
            prefix, suffix = "/api/v1/workflows/", f"/{action}"
            if method == "POST" and path.startswith(prefix) and path.endswith(suffix):
                wf_id = path.removeprefix(prefix).removesuffix(suffix)
                with self._lock:
                    found = next((wf for wf in self.workflows if wf["id"] == wf_id), None)
                    if found is None:
                        return 404, {"message": "Not Found"}
                    found["active"] = active
                    found["updatedAt"] = datetime.now(UTC).isoformat()
                    return 200, json.loads(json.dumps(found))
        return 404, {"message": "Not Found"}
