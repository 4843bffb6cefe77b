"""Benchmark: deliver one report to 5,000 json:// endpoints, killed half-way and resumed.

Receivers on 127.0.0.1 (in their own process) answer 200, except 5% of the endpoints
answering 500, 1% hanging (past the client's 4 s read timeout) and 1% answering 410 Gone.
The sender runs in a subprocess that is killed with SIGKILL four times at growing
progress, resumed each time; then a run completes and two more use up the failing
endpoints' attempts (3). Prints each run's figures, and whether the ledger's attempts
equal the requests the receivers got, endpoint by endpoint.

Half the subscribers receive the summary, half the PDF; json:// webhooks never get the PDF
attached (they get the link) unless `--attach-json` sets their limit above the PDF's size,
as every webhook was sent before per-channel limits (base64 in the JSON body).

    python bench/delivery.py [--endpoints 5000] [--concurrency 64] [--kills 4] [--attach-json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Process, Queue
from pathlib import Path

from daily_index.delivery import (
    AttachPolicy,
    ReportPayload,
    Subscriber,
    deliver,
    parse_attach_limits,
    read_ledger,
)
from daily_index.storage.objectstore import LocalObjectStore

DAY = date(2024, 5, 1)
RECEIVERS = 4
MAX_ATTEMPTS = 3


def kind_of(i: int) -> str:
    """The fault mix: 5% answer 500, 1% hang, 1% answer 410, the rest 200."""
    slot = i % 100
    if slot < 5:
        return "fail"
    if slot == 5:
        return "hang"
    if slot == 6:
        return "gone"
    return "ok"


def subscribers(ports: list[int], n: int) -> list[Subscriber]:
    return [
        Subscriber(
            id=f"s{i:05d}",
            name=f"Subscriber {i}",
            urls=(f"json://127.0.0.1:{ports[i % len(ports)]}/{kind_of(i)}/{i}",),
            receives="summary" if i % 2 else "pdf",
        )
        for i in range(n)
    ]


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: Counter[str] = Counter()


def _handler(counts: _Counts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            with counts.lock:
                body = json.dumps(
                    {"total": sum(counts.by_path.values())}
                    if self.path == "/_total"
                    else dict(counts.by_path)
                ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?", 1)[0]
            with counts.lock:
                counts.by_path[path] += 1
            kind = path.split("/")[1]
            if kind == "hang":
                time.sleep(30)
            status = {"fail": 500, "gone": 410}.get(kind, 200)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up or was killed

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        pass  # a killed sender resets its connections: expected here, not worth a traceback


def receivers_child(ports: Queue) -> None:
    """Child process: RECEIVERS servers sharing one request count; puts their ports."""
    counts = _Counts()
    servers = []
    for _ in range(RECEIVERS):
        server = _QuietServer(("127.0.0.1", 0), _handler(counts))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    ports.put([s.server_address[1] for s in servers])
    threading.Event().wait()


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:  # noqa: S310 (our own 127.0.0.1 receiver)
        return json.loads(answer.read())


def _deliver(
    root: Path, pdf: Path, ports: list[int], n: int, concurrency: int, attach_json: bool = False
):
    return deliver(
        day=DAY,
        store=LocalObjectStore(root),
        subscribers=subscribers(ports, n),
        payload=ReportPayload(
            title="Daily Index 2024-05-01",
            body="Summary " * 50,
            pdf_path=pdf,
            link="https://example.org/r/2024-05-01.pdf",
        ),
        concurrency=concurrency,
        max_attempts=MAX_ATTEMPTS,
        attach_policy=AttachPolicy(parse_attach_limits("json=10MB" if attach_json else "")),
    )


def _ledger_line(root: Path) -> str:
    ledger = read_ledger(LocalObjectStore(root), DAY)
    statuses = ledger.status.value_counts().to_dict()
    delivered = ledger.delivered.value_counts().to_dict()
    return (
        f"ledger {dict(sorted(statuses.items()))}, uncertain {int(ledger.uncertain.sum())}, "
        f"delivered {dict(sorted(delivered.items()))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument(
        "--attach-json", action="store_true", help="attach the PDF on json:// (base64) too"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("ROOT", "PDF", "PORTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        root, pdf, ports = args.child
        _deliver(
            Path(root),
            Path(pdf),
            [int(p) for p in ports.split(",")],
            args.endpoints,
            args.concurrency,
            args.attach_json,
        )
        return

    queue: Queue = Queue()
    child = Process(target=receivers_child, args=(queue,), daemon=True)
    child.start()
    ports = queue.get(timeout=30)
    n = args.endpoints
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        pdf = Path(tmp) / "report.pdf"
        pdf.write_bytes(b"%PDF-1.7\n" + b"0" * 200_000)
        print(
            f"endpoints {n}: {dict(Counter(kind_of(i) for i in range(n)))}, "
            f"concurrency {args.concurrency}, json:// "
            + ("PDF attached (base64)" if args.attach_json else "gets the link")
            + f", load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
        )

        for kill in range(1, args.kills + 1):
            # Each run is killed once the receivers got another 1/(kills + 2) of the endpoints.
            target = _get(ports[0], "/_total")["total"] + n // (args.kills + 2)
            begun = time.perf_counter()
            sender = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--endpoints",
                    str(n),
                    "--concurrency",
                    str(args.concurrency),
                    *(["--attach-json"] if args.attach_json else []),
                    "--child",
                    str(root),
                    str(pdf),
                    ",".join(map(str, ports)),
                ],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            while _get(ports[0], "/_total")["total"] < target and sender.poll() is None:
                time.sleep(0.05)
            sender.send_signal(signal.SIGKILL)
            sender.wait()
            print(
                f"run {kill}: killed after {time.perf_counter() - begun:.1f} s at "
                f"{_get(ports[0], '/_total')['total']} requests; {_ledger_line(root)}"
            )

        runs = []
        for label in ("resumed to the end", "retry of the failed", "last attempt of the failed"):
            begun = time.perf_counter()
            summary = _deliver(root, pdf, ports, n, args.concurrency, args.attach_json)
            wall = time.perf_counter() - begun
            runs.append(summary)
            print(
                f"{label}: {wall:.1f} s, this run {summary.sent} sent / {summary.failed} failed / "
                f"{summary.dead} dead (sent as {summary.by_delivery}), skipped "
                f"{summary.skipped_by_reason}; {_ledger_line(root)}"
            )

        counts = _get(ports[0], "/_counts")
        ledger = read_ledger(LocalObjectStore(root), DAY)
    child.terminate()

    requests = {f"s{int(p.rsplit('/', 1)[1]):05d}:primary": c for p, c in counts.items()}
    equal, short, over = 0, [], []
    for eid, attempts, uncertain in zip(
        ledger.endpoint_id, ledger.attempts, ledger.uncertain, strict=True
    ):
        got = requests.get(eid, 0)
        if got == attempts:
            equal += 1
        elif got == attempts - 1 and uncertain:
            short.append(eid)  # killed before its request left: counted, never received
        else:
            over.append((eid, int(attempts), got))
    healthy_twice = sum(
        1 for i in range(n) if kind_of(i) == "ok" and requests.get(f"s{i:05d}:primary", 0) > 1
    )
    dead_early = ledger[
        (ledger.status == "dead")
        & ledger.endpoint_id.map(lambda e: kind_of(int(e[1:6])) in ("fail", "hang"))
        & (ledger.attempts < MAX_ATTEMPTS)
    ]
    final = runs[-1]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"requests received  {sum(counts.values())}; ledger attempts {int(ledger.attempts.sum())}"
    )
    print(
        f"attempts == requests for {equal}/{len(ledger)} endpoints; "
        f"{len(short)} uncertain sends killed before their request left; mismatches {len(over)}"
        + (f" (first: {over[:3]})" if over else "")
    )
    print(
        f"healthy endpoints sent twice {healthy_twice}; "
        f"dead before {MAX_ATTEMPTS} real sends {len(dead_early)}"
    )
    print(
        f"final: {final.ledger}, uncertain {final.uncertain}, "
        f"unserved {final.unserved} (deliver exits 1)"
    )
    print(f"peak RSS {peak_mb:.0f} MB")
    ok = not over and healthy_twice == 0 and dead_early.empty and len(ledger) == n
    print("PASS: the ledger's attempts equal the receivers' requests" if ok else "FAIL")


if __name__ == "__main__":
    main()
