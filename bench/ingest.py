"""Push ingestion throughput: signed pushes per second into `daily-index serve-ingest`.

Starts the real server (a subprocess, local store in a temporary folder, rate limit off) for a
registry of n8n KPIs, then sends distinct signed KPIDataUpdates (one per KPI-day) from
client threads over keep-alive connections for a bounded time. Prints pushes per second,
latency percentiles, the answers by status, and the server's RSS sampled every second (first
and last fifth of the run), so that a growth over the run shows. The floor measured in the
same run is `GET /api/health` under the same client (no signature, no storage): the push
rate as a share of it says what verification, validation and the durable inbox cost.

    python bench/ingest.py                 # 10 s
    python bench/ingest.py --duration 60   # the 60 s run of the target
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from daily_index.contract import partition_timestamp
from daily_index.ingest.signing import signed_headers

SECRET = "whsec_" + "YmVuY2htYXJrIHNlY3JldCBmb3IgcHVzaCBpbmdlc3Rpb24="
FIRST = date(2019, 1, 1)


def registry(kpis: int) -> str:
    lines = ["version: 1", "kpis:"]
    for n in range(kpis):
        lines += [
            f"  - id: push_kpi_{n:03d}",
            f"    name: Pushed KPI {n}",
            "    description: A KPI an n8n workflow pushes (benchmark).",
            "    type: price",
            "    unit: USD",
            f"    source: {{kind: n8n, params: {{webhook: kpi/push-{n}}}}}",
            "    metadata: {source: n8n, updateFrequency: daily, category: bench}",
        ]
    return "\n".join(lines) + "\n"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(folder: Path, kpis: int, port: int) -> subprocess.Popen:
    (folder / "kpis.yaml").write_text(registry(kpis))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILY_INDEX_")} | {
        "DAILY_INDEX_INGEST_SECRETS": SECRET,
        "DAILY_INDEX_KPIS_FILE": str(folder / "kpis.yaml"),
        "DAILY_INDEX_STORAGE": "local",
        "DAILY_INDEX_DATA_DIR": str(folder / "store"),
        "DAILY_INDEX_INGEST_RATE_LIMIT": "0",
    }
    process = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "daily_index.cli", "serve-ingest", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("serve-ingest did not start")


class Load:
    """Client threads sending until a deadline; latencies and statuses collected."""

    def __init__(self, port: int, threads: int, duration: float, kpis: int, push: bool):
        self.port, self.threads, self.duration = port, threads, duration
        self.kpis, self.push = kpis, push
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.lock = threading.Lock()
        self.days = (datetime.now(UTC).date() - FIRST).days + 1

    def _body(self, n: int) -> bytes:
        kpi, offset = n % self.kpis, n // self.kpis
        if offset >= self.days:
            raise SystemExit("ran out of distinct KPI-days: use more --kpis")
        day = FIRST + timedelta(days=offset)
        return json.dumps(
            {
                "schemaVersion": 2,
                "traceId": f"bench-{n}",
                "kpiId": f"push_kpi_{kpi:03d}",
                "timestamp": partition_timestamp(day),
                "value": 1000.0 + n % 977,
                "unit": "USD",
            }
        ).encode()

    def _worker(self, index: int, stop_at: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = index
        mine: list[float] = []
        statuses: Counter[int] = Counter()
        while time.monotonic() < stop_at:
            try:
                started = time.perf_counter()
                if self.push:
                    body = self._body(n)
                    headers = signed_headers(SECRET, f"msg_bench_{n}", int(time.time()), body)
                    conn.request("POST", "/api/kpi-data", body=body, headers=headers)
                else:
                    conn.request("GET", "/api/health")
                response = conn.getresponse()
                response.read()
                mine.append((time.perf_counter() - started) * 1000)
                statuses[response.status] += 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            n += self.threads
        conn.close()
        with self.lock:
            self.latencies.extend(mine)
            self.statuses.update(statuses)

    def run(self, sample=None) -> float:
        stop_at = time.monotonic() + self.duration
        workers = [
            threading.Thread(target=self._worker, args=(i, stop_at)) for i in range(self.threads)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers):
            if sample is not None:
                sample()
            time.sleep(1.0)
        for worker in workers:
            worker.join()
        return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of pushes (max 60)")
    parser.add_argument("--threads", type=int, default=16, help="client threads (connections)")
    parser.add_argument("--kpis", type=int, default=200, help="n8n KPIs in the registry")
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), 60.0)
    port = 18787 + os.getpid() % 1000
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        server = start_server(Path(tmp), args.kpis, port)
        try:
            floor = Load(port, args.threads, min(5.0, duration), args.kpis, push=False)
            floor_s = floor.run()
            floor_rate = sum(floor.statuses.values()) / floor_s
            rss: list[int] = []
            load = Load(port, args.threads, duration, args.kpis, push=True)
            cpu_before = cpu_s(server.pid)
            elapsed = load.run(sample=lambda: rss.append(rss_kb(server.pid)))
            server_cpu = cpu_s(server.pid) - cpu_before
        finally:
            server.kill()
            server.wait()
        stored = len(list((Path(tmp) / "store" / "ingest" / "data").rglob("*.json")))
    done = sum(load.statuses.values())
    rate = done / elapsed
    fifth = max(1, len(rss) // 5)
    print(f"pushes: {done} in {elapsed:.1f} s = {rate:.0f}/s with {args.threads} client threads")
    print(
        f"latency ms: p50 {percentile(load.latencies, 50):.1f}  "
        f"p95 {percentile(load.latencies, 95):.1f}  p99 {percentile(load.latencies, 99):.1f}"
    )
    print(f"answers: {dict(sorted(load.statuses.items()))}; transport errors {load.errors}")
    print(f"5xx: {sum(c for s, c in load.statuses.items() if s >= 500)}; inbox records {stored}")
    print(
        f"server CPU: {server_cpu:.1f} s over the run, {server_cpu / max(done, 1) * 1000:.2f} ms "
        f"per push; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"floor (GET /api/health, same client): {floor_rate:.0f}/s; pushes at "
        f"{rate / floor_rate:.2f}x of it"
    )
    if rss:
        first, last = statistics.mean(rss[:fifth]), statistics.mean(rss[-fifth:])
        print(
            f"server RSS MB: first fifth {first / 1024:.1f}, last fifth {last / 1024:.1f}, "
            f"max {max(rss) / 1024:.1f} ({len(rss)} samples)"
        )


if __name__ == "__main__":
    main()
