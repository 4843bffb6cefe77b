"""Benchmark of a history load: N days (365) of every keyless KPI against imitations of the APIs.

The imitations (daily_index_tests/sources/imitations.py: CoinGecko, Binance spot and
futures, alternative.me, DefiLlama, FRED, with their documented page sizes, granularity and
keyless history limit) run in a child process, as remote APIs would; in this process they
would compete with the load for the GIL. The load is what the KPI step asks for: every
KPI-day of the range and today, expected gaps left out, in one `fetch_all` batch with the
default rate limits. Prints the requests each KPI needed (from the imitations' own log), the
requests per source and the wall time; the targets are at most 2 requests per KPI and under
60 s. FRED needs a key (any will do for the imitation): its series are listed apart.

`--dagster` also runs the whole KPI step (fetch, store, materialise, check) over the same
range in one run on a fresh SQLite instance, and prints its wall time and requests.

Usage: python bench/history.py [--days 365] [--dagster]
"""

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daily_index.calendars import expected_gap  # noqa: E402
from daily_index.contract import KPIDataUpdate, partition_timestamp  # noqa: E402
from daily_index.registry import load_registry  # noqa: E402
from daily_index.replay import DEMO_DAY  # noqa: E402
from daily_index.sources import FetchRequest, SourceSettings, fetch_all  # noqa: E402
from daily_index_tests.sources.imitations import PREFIXES, Imitations, requests_of  # noqa: E402

LOG_PATH = "/_log"
KEYED = {"fred"}


def serve(urls: "multiprocessing.Queue[str]", stop: "multiprocessing.synchronize.Event") -> None:
    """The imitations until `stop` is set; `/_log` answers with every request seen so far."""
    apis = Imitations(today=DEMO_DAY)
    apis.server.routes[LOG_PATH] = lambda query: (
        200,
        [[path, params] for path, params in apis.server.requests if path != LOG_PATH],
    )
    with apis:
        urls.put(apis.server.url)
        stop.wait()


def request_log(url: str) -> list[tuple[str, dict[str, str]]]:
    return [(path, query) for path, query in httpx.get(f"{url}{LOG_PATH}", timeout=30).json()]


def history(kpis, days: int) -> list[FetchRequest]:
    wanted = [DEMO_DAY - timedelta(days=n) for n in range(days, -1, -1)]
    return [
        FetchRequest(kpi, day, DEMO_DAY, f"{kpi.id}-{day}", partition_timestamp(day))
        for kpi in kpis
        for day in wanted
        if not expected_gap(kpi, day, DEMO_DAY)
    ]


def report(kpis, log, requests, outcomes) -> int:
    """Print requests per KPI and per source; returns the most requests any KPI needed."""
    asked = Counter(r.spec.id for r in requests)
    stored = Counter(o.request.spec.id for o in outcomes if isinstance(o.update, KPIDataUpdate))
    print(f"{'kpi':<20} {'source':<22} {'days':>5} {'values':>6} {'requests':>8}")
    most = 0
    for kpi in kpis:
        needed = requests_of(kpi, log)
        keyed = " (keyed)" if kpi.source.kind in KEYED else ""
        if not keyed:
            most = max(most, needed)
        print(
            f"{kpi.id:<20} {kpi.source.kind + keyed:<22} {asked[kpi.id]:>5} "
            f"{stored[kpi.id]:>6} {needed:>8}"
        )
    per_source = Counter(
        next((f for f, prefix in PREFIXES.items() if path.startswith(prefix)), path)
        for path, _ in log
    )
    print("requests per source: " + ", ".join(f"{f} {n}" for f, n in sorted(per_source.items())))
    return most


def run_dagster(kpis, days: int, base_urls: dict[str, str]) -> float:
    import dagster as dg

    from daily_index.defs.kpis import build_kpi_assets, kpi_key
    from daily_index.defs.resources import KpiSourcesResource, StorageResource

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "dagster"
        home.mkdir()
        instance = dg.DagsterInstance.local_temp(tempdir=str(home))
        first = DEMO_DAY - timedelta(days=days)
        started = time.perf_counter()
        result = dg.materialize(
            [build_kpi_assets(kpis=kpis)],
            instance=instance,
            selection=[kpi_key(k.id) for k in kpis],
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": DEMO_DAY.isoformat(),
            },
            resources={
                "sources": KpiSourcesResource(
                    base_urls=base_urls, fred_api_key="bench-key", today=DEMO_DAY.isoformat()
                ),
                "storage": StorageResource(local_dir=str(Path(tmp) / "store")),
            },
            raise_on_error=False,
        )
        elapsed = time.perf_counter() - started
        landed = len(result.get_asset_materialization_events())
        print(f"dagster: success={result.success}, {landed} materialisations, {elapsed:.1f} s")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--dagster", action="store_true", help="also the whole KPI step")
    args = parser.parse_args()

    kpis = [k for k in load_registry().kpis if k.source.kind != "n8n"]
    context = multiprocessing.get_context("spawn")
    urls = context.Queue()
    stop = context.Event()
    child = context.Process(target=serve, args=(urls, stop), daemon=True)
    child.start()
    try:
        url = urls.get(timeout=60)
        base_urls = {family: f"{url}{prefix}" for family, prefix in PREFIXES.items()}
        settings = SourceSettings(base_urls=base_urls, fred_api_key="bench-key")
        requests = history(kpis, args.days)
        started = time.perf_counter()
        outcomes = fetch_all(requests, settings)
        elapsed = time.perf_counter() - started
        log = request_log(url)
        print(f"history load: {args.days} days + today, {len(kpis)} KPIs, {len(requests)} KPI-days")
        most = report(kpis, log, requests, outcomes)
        failed = [o for o in outcomes if not isinstance(o.update, KPIDataUpdate)]
        print(f"{len(log)} requests in all; {len(failed)} KPI-days without a value")
        for outcome in failed[:5]:
            print(f"  {outcome.request.spec.id} {outcome.request.day}: {outcome.update.error}")
        print(
            f"fetch wall time {elapsed:.2f} s (target < 60 s); most requests for a keyless KPI "
            f"{most} (target <= 2)"
        )
        if args.dagster:
            before = len(log)
            run_dagster(kpis, args.days, base_urls)
            print(f"dagster run: {len(request_log(url)) - before} requests")
    finally:
        stop.set()
        child.join(timeout=10)


if __name__ == "__main__":
    main()
