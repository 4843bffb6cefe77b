"""Benchmark of the read API: requests per second and latency for a 90-day series.

Starts `daily-index serve-api` (the real command: uvicorn, access log off) in a subprocess
over a temporary local store holding a 90-day `btc_price` series written through the
project's series code, then loads it from this process with a small keep-alive HTTP/1.1
load generator on asyncio (C connections, each sending its next request when the answer
is in; bounded by a request count and a time limit). The same load generator then drives
the floor: bare uvicorn answering every request with the same bytes from memory (no key
check, no routing, no cache lookup), started the same way. Prints requests per second,
p50/p95/p99 latency and errors for each format, and our throughput as a ratio of the
floor's. The target: at least 1,000 requests per second with p95 under 20 ms (json).

Usage: python bench/api.py [--requests N] [--connections C] [--seconds S] [--formats json,csv]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"
FIRST = date(2026, 1, 1)
DAYS = 90
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_store(folder: Path) -> None:
    from daily_index.storage.objectstore import LocalObjectStore
    from daily_index.storage.series import KpiSeriesStore, SeriesRow

    fetched = datetime.now(UTC)
    rows = [
        SeriesRow(
            FIRST + timedelta(days=n), 40_000 + n * 13.37 + 1 / 7, "USD", "bench", fetched, "b"
        )
        for n in range(DAYS)
    ]
    KpiSeriesStore(LocalObjectStore(folder)).upsert("btc_price", rows)


def start(command: list[str], env: dict[str, str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            httpx.get(url, headers={"X-API-Key": KEY}, timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start within 60 s")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: `ask()` sends the request and waits for the whole answer."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        match = _LENGTH.search(self.buffer, 0, end + 2)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) >= end + 4 + length:
            status = int(self.buffer[9:12])
            del self.buffer[: end + 4 + length]
            self.waiter.set_result(status)
            self.waiter = None

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def ask(self, request: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def load(port: int, path: str, requests: int, connections: int, seconds: float) -> dict:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = requests
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                began = time.perf_counter()
                status = await conn.ask(request)
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.transport.close()

    # A short warm-up (connections, caches, the first answer built) outside the figures.
    await asyncio.gather(*(asyncio.wait_for(_one(loop, port, request), 30) for _ in range(5)))
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": quantile(0.95),
        "p99_ms": quantile(0.99),
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "statuses": statuses,
    }


async def _one(loop, port: int, request: bytes) -> int:
    _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
    try:
        return await conn.ask(request)
    finally:
        conn.transport.close()


FLOOR_APP = """
import sys, uvicorn
BODY = open(sys.argv[2], "rb").read()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per format (default 20000)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per format")
    parser.add_argument("--formats", default="json,csv,parquet")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    path = f"/v1/kpis/btc_price/series?from={FIRST}&to={FIRST + timedelta(days=DAYS - 1)}"
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        folder = Path(tmp)
        write_store(folder / "store")
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DAILY_INDEX_")},
            "DAILY_INDEX_API_KEYS": KEY,
            "DAILY_INDEX_DATA_DIR": str(folder / "store"),
            # The limiter runs on every request, but this key's budget is never used up.
            "DAILY_INDEX_API_RATE_LIMIT": "1000000000",
        }
        daily_index = str(Path(sys.executable).with_name("daily-index"))
        server = start(
            [daily_index, "serve-api", "--port", str(port), "--no-access-log"],
            env,
            f"http://127.0.0.1:{port}/v1/health",
        )
        results = {}
        bodies = {}
        try:
            for fmt in formats:
                url = f"http://127.0.0.1:{port}{path}&format={fmt}"
                bodies[fmt] = httpx.get(url, headers={"X-API-Key": KEY}, timeout=10).content
                results[fmt] = asyncio.run(
                    load(
                        port, f"{path}&format={fmt}", args.requests, args.connections, args.seconds
                    )
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
        body_file = folder / "floor-body"
        body_file.write_bytes(bodies[formats[0]])
        floor_port = free_port()
        floor = start(
            [sys.executable, "-c", FLOOR_APP, str(floor_port), str(body_file)],
            env,
            f"http://127.0.0.1:{floor_port}/",
        )
        try:
            floor_result = asyncio.run(
                load(floor_port, path, args.requests, args.connections, args.seconds)
            )
        finally:
            floor.terminate()
            floor.wait(timeout=30)

    print(
        f"read API, 90-day btc_price series, {args.connections} keep-alive connections, "
        f"up to {args.requests} requests or {args.seconds:g} s per format, "
        f"on {os.cpu_count()} cores"
    )
    print(
        f"{'':<22}{'requests':>9}{'req/s':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>7}"
    )
    rows = [(f"ours {fmt} ({len(bodies[fmt])} B)", r) for fmt, r in results.items()]
    rows.append((f"floor ({len(bodies[formats[0]])} B)", floor_result))
    for label, r in rows:
        print(
            f"{label:<22}{r['requests']:>9}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
            f"{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>7}"
        )
    first = results[formats[0]]
    print(
        f"{formats[0]}: {first['rps'] / floor_result['rps']:.2f}x the floor's requests per second; "
        f"target >= 1000 req/s: {'met' if first['rps'] >= 1000 else 'NOT met'}, "
        f"p95 < 20 ms: {'met' if first['p95_ms'] < 20 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
