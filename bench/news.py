"""Benchmark of the news stack: 500 headlines embedded, then related headlines of 200 moves.

Steps, each timed:
  fetch     500 headlines from 5 RSS feeds on a local HTTP server (parse, dedup)
  load      the packaged all-MiniLM-L6-v2 (import of torch and sentence-transformers)
  embed     the 500 headlines
  related   200 moves: their descriptions embedded and each one's top 3 found (the
            numpy index alone is printed too)
Targets: fetch + load + embed under 15 s; related under 1 s. A floor measured in the same
run (embedding one short sentence after the load) is printed so the figures read as ratios.

Usage: python bench/news.py [--headlines 500] [--moves 200]
"""

import argparse
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from daily_index.formatting import Change
from daily_index.news.feeds import NewsSettings, collect_headlines
from daily_index.news.related import headline_text, move_text, nearest, related_headlines
from daily_index.registry import KpiSpec
from daily_index.report.model import KpiRow

DAY = date(2026, 11, 24)
SUBJECTS = [
    "Bitcoin",
    "Ether",
    "Solana",
    "Treasury yields",
    "The dollar",
    "Gold",
    "Oil",
    "Stablecoin supply",
    "Funding rates",
    "Tech stocks",
]
VERBS = ["jumps", "slides", "steadies", "hits a record", "falls", "rallies", "edges higher"]
CAUSES = [
    "after strong payrolls",
    "as ETF flows turn",
    "ahead of the Fed meeting",
    "on inflation data",
    "as liquidations mount",
    "on upgrade hopes",
]


def feed(index: int, count: int) -> bytes:
    items = []
    for n in range(count):
        k = index * count + n
        title = (
            f"{SUBJECTS[k % len(SUBJECTS)]} {VERBS[k % len(VERBS)]} "
            f"{CAUSES[k % len(CAUSES)]} (story {k})"
        )
        items.append(
            f"<item><title>{title}</title><link>https://news{index}.test/{k}</link>"
            f"<pubDate>Tue, 24 Nov 2026 {k % 24:02d}:{k % 60:02d}:00 GMT</pubDate>"
            f"<description>Report number {k} on {SUBJECTS[k % len(SUBJECTS)]}.</description>"
            "</item>"
        )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {index}</title>'
        f"{''.join(items)}</channel></rss>"
    ).encode()


def serve(bodies: dict[str, bytes]) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def moves(count: int) -> list[KpiRow]:
    rows = []
    for n in range(count):
        spec = KpiSpec.model_validate(
            {
                "id": f"bench_{n:03d}",
                "name": f"{SUBJECTS[n % len(SUBJECTS)]} KPI {n}",
                "description": "Synthetic.",
                "type": "price",
                "unit": "USD",
                "source": {"kind": "n8n"},
                "metadata": {"source": "stub", "category": "bench"},
            }
        )
        change = Change((-1) ** n * (2.0 + n % 7), "pct")
        rows.append(
            KpiRow(spec=spec, value=1.0, status="ok", changes={1: change}, zscore=3.0 + n % 3)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headlines", type=int, default=500)
    parser.add_argument("--moves", type=int, default=200)
    args = parser.parse_args()
    per_feed = args.headlines // 5
    server, url = serve({f"/feed{i}": feed(i, per_feed) for i in range(5)})
    try:
        started = time.perf_counter()
        settings = NewsSettings(feeds=tuple(f"{url}/feed{i}" for i in range(5)))
        headlines, _ = collect_headlines(settings, DAY)
        fetched = time.perf_counter()
        from daily_index.news.embed import embed, load_model

        load_model()
        loaded = time.perf_counter()
        vectors = embed([headline_text(h) for h in headlines])
        embedded = time.perf_counter()
        rows = moves(args.moves)
        found = related_headlines(rows, headlines, vectors, embed)
        related = time.perf_counter()
        embed(["Bitcoin rises"])
        floor = time.perf_counter() - related
        queries = embed([move_text(r) for r in rows])
        index_started = time.perf_counter()
        nearest(queries, vectors)
        index_only = time.perf_counter() - index_started
    finally:
        server.shutdown()
    total = embedded - started
    print(f"{len(headlines)} headlines, {args.moves} moves")
    print(f"  fetch + parse    {fetched - started:.2f} s")
    print(f"  model load       {loaded - fetched:.2f} s")
    print(f"  embed            {embedded - loaded:.2f} s")
    print(f"  news total       {total:.2f} s (target < 15 s) -> {'OK' if total < 15 else 'MISSED'}")
    search = related - embedded
    print(
        f"  related search   {search:.3f} s for {args.moves} moves (target < 1 s) -> "
        f"{'OK' if search < 1 else 'MISSED'}; {len(found)} moves with headlines"
    )
    print(f"    of which the numpy index: {index_only * 1000:.2f} ms (the rest embeds the moves)")
    print(
        f"  floor            {floor * 1000:.1f} ms (one sentence embedded); "
        f"search = {search / floor:.0f} x floor"
    )


if __name__ == "__main__":
    main()
