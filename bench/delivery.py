"""Benchmark: deliver one report to 5,000 json:// endpoints on local HTTP receivers.

1% of the endpoints point at a dead port or a receiver answering 500. Prints wall time,
sent/failed counts, endpoints per second and peak RSS, and checks that every endpoint is
in the ledger as sent, or failed with a reason.

    python bench/delivery.py [--endpoints 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date
from multiprocessing import Process, Queue
from pathlib import Path

import stubs

from daily_index.delivery import ReportPayload, Subscriber, deliver, read_ledger
from daily_index.storage.objectstore import LocalObjectStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--receivers", type=int, default=4)
    args = parser.parse_args()

    # Receivers run in their own process, as remote endpoints would: in-process they
    # would compete with the sender for the GIL and the 2 cores.
    ports: Queue = Queue()
    child = Process(target=stubs.receivers_child, args=(args.receivers, ports), daemon=True)
    child.start()
    *servers, failing = ports.get(timeout=30)
    dead = stubs.dead_port()
    subscribers = []
    for i in range(args.endpoints):
        if i % 100 == 0:
            port = dead if i % 200 == 0 else failing
        else:
            port = servers[i % len(servers)]
        subscribers.append(
            Subscriber(
                id=f"s{i:05d}",
                name=f"Subscriber {i}",
                urls=(f"json://127.0.0.1:{port}/hook/{i}",),
                receives="summary" if i % 2 else "pdf",
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "report.pdf"
        pdf.write_bytes(b"%PDF-1.7\n" + b"0" * 200_000)
        store = LocalObjectStore(Path(tmp) / "store")
        payload = ReportPayload(
            title="Daily Index 2024-05-01",
            body="Summary " * 50,
            pdf_path=pdf,
            link="https://example.org/r/2024-05-01.pdf",
        )
        day = date(2024, 5, 1)
        begun = time.perf_counter()
        summary = deliver(
            day=day,
            store=store,
            subscribers=subscribers,
            payload=payload,
            concurrency=args.concurrency,
        )
        wall = time.perf_counter() - begun
        ledger = read_ledger(store, day)

    unexplained = ledger[(ledger.status != "sent") & ledger.last_error.isna()]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"endpoints      {summary.total}")
    print(f"wall time      {wall:.2f} s")
    print(f"sent / failed  {summary.sent} / {summary.failed} (dead {summary.dead})")
    print(f"throughput     {summary.total / wall:.0f} endpoints/s")
    print(f"peak RSS       {peak_mb:.0f} MB")
    print(
        f"ledger rows    {len(ledger)} ({ledger.status.value_counts().to_dict()}); "
        f"without reason: {len(unexplained)}"
    )
    print(f"sample error   {ledger[ledger.status == 'failed'].last_error.head(2).tolist()}")
    ok = (
        len(ledger) == args.endpoints
        and unexplained.empty
        and set(ledger.status) <= {"sent", "failed"}
        and wall < 20
    )
    child.terminate()
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
