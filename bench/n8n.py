"""Benchmark: 200 n8n KPIs in one day's run against a real n8n, vs n8n's own floor.

Starts n8n 2.40.7 through n8n/local.sh (installed and cached by `n8n/local.sh install`) with
this repository's workflows, their upstream imitated on 127.0.0.1 in a child process (the
CoinGecko and alternative.me imitations of the tests). Then, in one go:
  warm-up   a few direct webhook calls (not counted), so n8n's first executions' start-up
            costs land in neither figure
  floor     N triggers POSTed straight to the webhooks, C in flight at once (httpx, asyncio):
            the time n8n itself needs for N executions at that concurrency
  ours      `daily-index run --kpis-only` of a registry of N n8n KPIs on the same webhooks,
            DAILY_INDEX_FETCH_CONCURRENCY=C: the whole command's wall time, and the run's own
            figure ("stored in", from the command's start of work to the stored series)
  floor     once more, so a drift in the machine's load shows; the ratio uses the mean
Prints each phase's time, failures, n8n executions and how long n8n was busy with them (from
their start and stop times, through n8n's public API), and the ratios to the floor (target:
ours within 1.2x): the run's whole time, and n8n's busy time (the fetching alone).

Usage: python bench/n8n.py [--kpis 200] [--concurrency 8] [--port P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daily_index_tests.sources.imitations import PREFIXES, Imitations  # noqa: E402

SCRIPT = ROOT / "n8n" / "local.sh"
HEADER = "X-Daily-Index-Auth"
WEBHOOKS = [
    ("price", "USD", "kpi/btc-price"),
    ("ratio", "BTC", "kpi/eth-btc-ratio"),
    ("index", "points", "kpi/fear-greed"),
    ("dominance", '"%"', "kpi/usdt-dominance"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upstream_child(ports) -> None:
    with Imitations(today=datetime.now(UTC).date()) as imitations:
        ports.put(imitations.server.url)
        while True:
            time.sleep(3600)


def start_upstream() -> tuple[multiprocessing.Process, str]:
    context = multiprocessing.get_context("fork")
    urls = context.Queue()
    child = context.Process(target=upstream_child, args=(urls,), daemon=True)
    child.start()
    return child, urls.get(timeout=30)


def execution_list(base: str, api_key: str) -> list[dict]:
    """Every execution n8n recorded (id, startedAt, stoppedAt, ...), through its public API."""
    found, cursor = [], None
    for _ in range(1000):
        url = f"{base}/api/v1/executions?limit=250" + (f"&cursor={cursor}" if cursor else "")
        request = urllib.request.Request(url, headers={"X-N8N-API-KEY": api_key})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            page = json.loads(answer.read())
        found += page["data"]
        cursor = page.get("nextCursor")
        if not cursor:
            return found
    raise RuntimeError("more executions than the bounded count")


def newest_id(base: str, api_key: str) -> int:
    return max((int(e["id"]) for e in execution_list(base, api_key)), default=0)


def since(base: str, api_key: str, after_id: int) -> list[dict]:
    return [e for e in execution_list(base, api_key) if int(e["id"]) > after_id]


def settled(base: str, api_key: str, after_id: int, expected: int) -> list[dict]:
    """The executions after `after_id`, once `expected` are recorded or none arrive for 5 s."""
    deadline, seen, steady = time.monotonic() + 60, -1, 0
    while time.monotonic() < deadline:
        now = len(since(base, api_key, after_id))
        if now >= expected:
            time.sleep(1)
            break
        steady = steady + 1 if now == seen else 0
        if steady >= 10:
            break
        seen = now
        time.sleep(0.5)
    return since(base, api_key, after_id)


def moment(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else math.nan


def busy(found: list[dict]) -> tuple[float, float]:
    """When n8n worked on these executions: (first start, last stop), epoch seconds."""
    starts = [moment(e.get("startedAt")) for e in found]
    stops = [moment(e.get("stoppedAt")) for e in found]
    return (min(starts), max(stops)) if found else (math.nan, math.nan)


def trigger(kpi_id: str, kind: str, day: str) -> dict:
    return {
        "schemaVersion": 2,
        "traceId": secrets.token_hex(16),
        "kpiId": kpi_id,
        "timestamp": f"{day}T12:00:00Z",
        "kpiType": kind,
        "metadata": {"kpiName": kpi_id, "day": day},
    }


async def direct(base: str, secret: str, n: int, concurrency: int, day: str) -> tuple[float, int]:
    """N webhook calls, `concurrency` in flight: (seconds, failures)."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    timeout = httpx.Timeout(60.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal failures
        kind, _, path = WEBHOOKS[i % len(WEBHOOKS)]
        async with gate:
            try:
                answer = await client.post(
                    f"{base}/webhook/{path}",
                    json=trigger(f"bench_kpi_{i:03d}", kind, day),
                    headers={HEADER: secret},
                )
                body = answer.json()
                if answer.status_code != 200 or "error" in body or "value" not in body:
                    failures += 1
            except (httpx.HTTPError, ValueError):
                failures += 1

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(n)))
        return time.perf_counter() - started, failures


def write_registry(path: Path, n: int) -> None:
    lines = ["version: 1", "kpis:"]
    for i in range(n):
        kind, unit, webhook = WEBHOOKS[i % len(WEBHOOKS)]
        lines += [
            f"  - id: bench_kpi_{i:03d}",
            f"    name: Bench KPI {i}",
            "    description: Synthetic n8n KPI for the benchmark.",
            f"    type: {kind}",
            f"    unit: {unit}",
            f"    source: {{kind: n8n, params: {{webhook: {webhook}}}}}",
            f"    metadata: {{source: n8n, category: bench_{i % 8}}}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ours(base: str, secret: str, n: int, concurrency: int, day: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    registry = work / "kpis.yaml"
    write_registry(registry, n)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAILY_INDEX_", "KPI_"))}
    env |= {
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_STORAGE": "local",
        "DAILY_INDEX_DATA_DIR": str(work / "store"),
        "DAILY_INDEX_OUTBOX_DIR": str(work / "outbox"),
        "DAGSTER_HOME": str(work / "dagster_home"),
        "DAILY_INDEX_N8N_BASE_URL": base,
        "DAILY_INDEX_N8N_AUTH_HEADER": HEADER,
        "DAILY_INDEX_N8N_AUTH_VALUE": secret,
        "DAILY_INDEX_TODAY": day,
        "DAILY_INDEX_FETCH_CONCURRENCY": str(concurrency),
        "DAILY_INDEX_FETCH_MAX_ATTEMPTS": "1",
        "COLUMNS": "250",
    }
    (work / "dagster_home").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "daily_index.cli", "run", "--kpis-only", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - started
    found = re.search(r"(\d+) KPIs stored in ([\d.]+) s", done.stdout)
    status_file = work / "store" / "status" / f"{day}.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    failed = sum(1 for s in status.values() if s.get("status") != "ok") + (n - len(status))
    if done.returncode not in (0, 1):
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return {
        "wall": wall,
        "step": float(found.group(2)) if found else float("nan"),
        "stored": int(found.group(1)) if found else 0,
        "failures": failed,
        "exit": done.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    n, c = args.kpis, args.concurrency
    port = args.port or free_port()
    day = datetime.now(UTC).date().isoformat()
    secret = "bench-" + secrets.token_hex(16)
    child, upstream = start_upstream()
    work = Path(tempfile.mkdtemp(prefix="bench-n8n-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAILY_INDEX_N8N_", "KPI_"))}
    env |= {
        "DAILY_INDEX_N8N_AUTH_HEADER": HEADER,
        "DAILY_INDEX_N8N_AUTH_VALUE": secret,
        "KPI_COINGECKO_BASE_URL": upstream + PREFIXES["coingecko"].removesuffix("/api/v3"),
        "KPI_ALTERNATIVE_ME_BASE_URL": upstream + PREFIXES["alternative_me"],
    }
    where = ["--port", str(port), "--dir", str(work / "n8n")]
    base = f"http://127.0.0.1:{port}"
    try:
        subprocess.run(["bash", str(SCRIPT), "install"], env=env, check=True, timeout=1800)  # noqa: S607
        started = time.perf_counter()
        subprocess.run(["bash", str(SCRIPT), "start", *where], env=env, check=True, timeout=600)  # noqa: S607
        print(f"n8n started in {time.perf_counter() - started:.1f} s (fresh database, published)")
        api_key = (work / "n8n" / "api_key").read_text().strip()

        asyncio.run(direct(base, secret, 2 * c, c, day))  # warm-up
        rows = []
        for phase in ("floor", "ours", "floor"):
            after_id = newest_id(base, api_key)
            began = time.time()
            if phase == "floor":
                seconds, failures = asyncio.run(direct(base, secret, n, c, day))
                row = {"phase": phase, "wall": seconds, "step": seconds, "failures": failures}
            else:
                row = {"phase": phase, **ours(base, secret, n, c, day, work / "run")}
            ended = began + row["wall"]
            found = settled(base, api_key, after_id, n)
            first, last = busy(found)
            row |= {"executions": len(found), "busy": last - first}
            rows.append(row)
            print(
                f"{phase:6s} {row['wall']:7.1f} s wall  {row['step']:7.1f} s step  "
                f"n8n busy {row['busy']:6.1f} s (first execution {first - began:+.1f} s after "
                f"the start, last {ended - last:.1f} s before the end)  "
                f"failures {row['failures']:3d}  n8n executions {row['executions']:4d}"
                + (f"  (exit {row['exit']}, {row['stored']} stored)" if phase == "ours" else ""),
                flush=True,
            )
        floor = (rows[0]["wall"] + rows[2]["wall"]) / 2
        run = rows[1]
        print(
            f"\n{n} KPIs, {c} in flight: floor {floor:.1f} s (mean of {rows[0]['wall']:.1f} and "
            f"{rows[2]['wall']:.1f}), {n / floor:.1f} executions/s"
        )
        print(
            f"ours / floor: {run['step'] / floor:.2f}x (the run's step), "
            f"{run['wall'] / floor:.2f}x (the whole command, start-up included); target 1.2x"
        )
        floor_busy = (rows[0]["busy"] + rows[2]["busy"]) / 2
        print(
            f"n8n busy for ours / for the floor: {run['busy'] / floor_busy:.2f}x (from the first "
            "execution's start to the last one's end: the fetching, without the run's start-up "
            "and its storing after the last answer)"
        )
        floor_failures = rows[0]["failures"] + rows[2]["failures"]
        print(
            f"failures: ours {run['failures']}, floor {floor_failures}; "
            f"n8n executions for ours: {run['executions']} (expected {n})"
        )
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", *where], env=env, check=False, timeout=120)  # noqa: S607
        child.terminate()


if __name__ == "__main__":
    main()
