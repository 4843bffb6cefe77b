"""Helpers of the read API tests: a real server on 127.0.0.1 (uvicorn in a thread), a real store.

The store holds a few series written through the project's own series code, and one PDF
stored where the report's IO manager stores it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import uvicorn

from daily_index.api import ApiSettings, create_app
from daily_index.delivery.ledger import delivered_pdf_key
from daily_index.storage.io_manager import artifact_key
from daily_index.storage.objectstore import ObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-fedcba9876543210"
FIRST_DAY = date(2026, 1, 1)
MISSING_DAY = date(2026, 1, 6)
REPORT_DAY = date(2026, 3, 31)
PDF = b"%PDF-1.7\n% the report as delivered\n%%EOF\n"
AMENDED_PDF = b"%PDF-1.7\n% the amended edition as delivered\n%%EOF\n"
REBUILT_PDF = b"%PDF-1.7\n% rebuilt after delivery\n%%EOF\n"
BUILT_ONLY_DAY = date(2026, 3, 30)
BUILT_PDF = b"%PDF-1.7\n% built, never delivered\n%%EOF\n"

REGISTRY = """\
version: 1
kpis:
  - id: btc_price
    name: Bitcoin price
    description: Spot price of one bitcoin in US dollars.
    type: price
    unit: USD
    source: {kind: coingecko_price, params: {coin: bitcoin, vs: usd}}
    metadata: {source: CoinGecko, category: crypto_prices}
  - id: fear_greed
    name: Fear & Greed index
    description: Sentiment index from 0 to 100.
    type: index
    source: {kind: alternative_me_fng}
    metadata: {source: alternative.me, category: sentiment}
  - id: eth_btc
    name: ETH/BTC ratio
    description: Ether priced in bitcoin.
    type: ratio
    unit: BTC
    active: false
    source: {kind: binance_kline, params: {symbol: ETHBTC}}
    metadata: {source: Binance, category: crypto_prices}
"""


def btc_values() -> dict[date, float]:
    """90 days of awkward floats (shortest spellings with many digits), one day missing."""
    values = {}
    for n in range(90):
        day = FIRST_DAY + timedelta(days=n)
        if day != MISSING_DAY:
            values[day] = 40_000 + n * 0.1 + 1 / 3 + (1e-9 if n % 7 == 0 else 0.0)
    return values


def fear_greed_values() -> dict[date, float]:
    return {FIRST_DAY + timedelta(days=n): float(20 + n % 60) for n in range(0, 90, 2)}


def rows(values: dict[date, float], unit: str | None) -> list[SeriesRow]:
    fetched = datetime(2026, 4, 1, tzinfo=UTC)
    return [SeriesRow(d, v, unit, "test", fetched, f"t-{d}") for d, v in values.items()]


def fill_store(store: ObjectStore) -> None:
    series = KpiSeriesStore(store)
    series.upsert("btc_price", rows(btc_values(), "USD"))
    series.upsert("fear_greed", rows(fear_greed_values(), None))
    # The day's report was delivered, then its amended edition; the built PDF was rebuilt since.
    built = dg.AssetKey(["report", "pdf"])
    store.put(artifact_key(built, REPORT_DAY.isoformat())[0], REBUILT_PDF)
    store.put(delivered_pdf_key(REPORT_DAY), PDF)
    store.put(delivered_pdf_key(REPORT_DAY, "amended"), AMENDED_PDF)
    # A day whose report was built but has no delivered copy.
    store.put(artifact_key(built, BUILT_ONLY_DAY.isoformat())[0], BUILT_PDF)


@dataclass
class RunningApi:
    url: str
    store: ObjectStore
    environ: dict[str, str]


@contextmanager
def serve(
    store: ObjectStore, environ: dict[str, str], **options: float | int
) -> Iterator[RunningApi]:
    """The API over `store` on a free loopback port, until the block ends."""
    settings = ApiSettings.from_keys([KEY, OTHER_KEY], **{"rate_limit": 0, **options})
    app = create_app(settings=settings, store=store, environ=environ)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningApi(f"http://127.0.0.1:{port}", store, environ)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
