"""Local HTTP stubs shared by the benchmark scripts (kpis.py, delivery.py, report.py).

- `n8n_handler(value_fn, latency_ms)`: an n8n webhook stub answering any POST with a valid
  KPIDataUpdate (value `value_fn(kpi_id)`) after the given latency.
- `Receiver`: a json:// delivery endpoint; reads the body and answers 200, or 500 when its
  server was started with `serve(Receiver, failing=True)`.
- `serve(handler)`: a ThreadingHTTPServer on a free 127.0.0.1 port, served in a daemon thread.
- `n8n_child` / `receivers_child`: multiprocessing targets running those stubs in a child
  process until it is terminated; they put the port(s) on the given queue.
- `free_port()` / `dead_port()` / `wait_port()`: port helpers.
- `write_registry(path, ids)`: a registry of synthetic USD price KPIs with the given ids.

The scripts run as `python bench/<name>.py`, so bench/ is sys.path[0] and `import stubs`
works; multiprocessing passes sys.path on to spawned children, and the child targets live
here so that a spawn or forkserver child can import them as well as a forked one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class N8nStub(BaseHTTPRequestHandler):
    """Answers any n8n webhook POST with a valid KPIDataUpdate after `latency_s`."""

    latency_s = 0.05
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (about 40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    @staticmethod
    def value_fn(kpi_id: str) -> float:
        return 100.0

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        time.sleep(self.latency_s)
        answer = json.dumps(
            {
                "schemaVersion": 2,
                "traceId": body["traceId"],
                "kpiId": body["kpiId"],
                "timestamp": body["timestamp"],
                "value": self.value_fn(body["kpiId"]),
                "unit": "USD",
                "source": "bench-stub",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def n8n_handler(
    value_fn: Callable[[str], float], latency_ms: float
) -> type[BaseHTTPRequestHandler]:
    """An `N8nStub` subclass answering `value_fn(kpi_id)` after `latency_ms`."""
    return type(
        "N8nStub",
        (N8nStub,),
        {"latency_s": latency_ms / 1000, "value_fn": staticmethod(value_fn)},
    )


class Receiver(BaseHTTPRequestHandler):
    """A json:// delivery endpoint: reads the body, answers 200 (or 500 on a failing server)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        code = 500 if getattr(self.server, "failing", False) else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # The listen backlog is fixed when the socket starts listening, in __init__: it must be
    # a class attribute. With the default of 5, a burst of 200 connections loses SYNs and
    # waits a second for each retransmission, which is the stub's cost, not the client's.
    request_queue_size = 1024
    daemon_threads = True


def serve(handler: type[BaseHTTPRequestHandler], failing: bool = False) -> ThreadingHTTPServer:
    """Serve `handler` on a free 127.0.0.1 port in a daemon thread; returns the server."""
    server = _Server(("127.0.0.1", 0), handler)
    server.failing = failing  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def n8n_child(latency_ms: float, value_fn: Callable[[str], float], ports) -> None:
    """Child process: one n8n stub; puts its port on `ports`, then serves until terminated."""
    ports.put(serve(n8n_handler(value_fn, latency_ms)).server_address[1])
    threading.Event().wait()


def receivers_child(count: int, ports) -> None:
    """Child process: `count` receivers answering 200, then one answering 500.

    Puts the list of ports (the failing one last) on `ports`, then serves until terminated.
    """
    servers = [serve(Receiver) for _ in range(count)] + [serve(Receiver, failing=True)]
    ports.put([s.server_address[1] for s in servers])
    threading.Event().wait()


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_port() -> int:
    """A 127.0.0.1 port nothing listens on: connections to it are refused."""
    return free_port()


def wait_port(port: int, timeout_s: float = 20) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def write_registry(path, ids) -> None:
    """A registry file of synthetic price KPIs (n8n source; nothing is fetched from it)."""
    lines = ["version: 1", "kpis:"]
    for kpi_id in ids:
        lines += [
            f"  - id: {kpi_id}",
            f"    name: Bench KPI {kpi_id}",
            "    description: Synthetic KPI for the benchmark.",
            "    type: price",
            "    unit: USD",
            f"    source: {{kind: n8n, params: {{webhook: kpi/{kpi_id}}}}}",
            "    metadata: {source: bench, category: bench}",
        ]
    path.write_text("\n".join(lines) + "\n")
