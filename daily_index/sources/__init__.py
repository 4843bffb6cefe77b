"""KPI sources: fetch every KPI of a day concurrently, one outcome per request.

`fetch_many` (async) and `fetch_all` (sync) are the entry points. A per-KPI problem never
raises: it comes back as a `KPIErrorUpdate` in that KPI's outcome, and the others go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, KPIUpdate, make_error
from daily_index.sources import alternative_me, binance, coingecko, defillama, fred, n8n
from daily_index.sources.base import DEFAULT_BASE_URLS, FetchRequest, SourceSettings
from daily_index.sources.http import Http, SourceError, redact

__all__ = [
    "DEFAULT_BASE_URLS",
    "FetchOutcome",
    "FetchRequest",
    "SourceSettings",
    "fetch_all",
    "fetch_many",
    "fetch_one",
]

Fetcher = Callable[[FetchRequest, SourceSettings, Http], Awaitable[KPIUpdate]]

FETCHERS: dict[str, Fetcher] = {
    "n8n": n8n.fetch,
    "coingecko_price": coingecko.fetch_price,
    "coingecko_global": coingecko.fetch_global,
    "alternative_me_fng": alternative_me.fetch,
    "binance_kline": binance.fetch_kline,
    "binance_funding": binance.fetch_funding,
    "defillama_stablecoins": defillama.fetch,
    "fred": fred.fetch,
}


@dataclass(frozen=True)
class FetchOutcome:
    """What fetching one KPI-day produced, and what it cost."""

    request: FetchRequest
    update: KPIDataUpdate | KPIErrorUpdate
    latency_ms: float
    attempts: int


def _secrets(settings: SourceSettings) -> tuple[str | None, ...]:
    return (settings.fred_api_key, settings.n8n_auth_value)


def _error(
    request: FetchRequest, reason: str, code: str, retryable: bool, **meta: object
) -> KPIErrorUpdate:
    return make_error(
        kpi_id=request.spec.id,
        trace_id=request.trace_id,
        timestamp=request.timestamp,
        reason=reason,
        code=code,
        retryable=retryable,
        sourceKind=request.spec.source.kind,
        **meta,
    )


async def fetch_one(
    request: FetchRequest, settings: SourceSettings, client: httpx.AsyncClient
) -> FetchOutcome:
    """Fetch one KPI-day; every failure becomes a KPIErrorUpdate (never raises)."""
    secrets = _secrets(settings)
    http = Http(client=client, settings=settings, secrets=secrets)
    started = time.perf_counter()
    update: KPIUpdate
    try:
        fetcher = FETCHERS.get(request.spec.source.kind)
        if request.day > request.today:
            # Live endpoints would answer with today's value, stored under a future date.
            raise SourceError(
                f"{request.day} is in the future (today is {request.today}); nothing to fetch",
                "future_day",
            )
        if fetcher is None:
            raise SourceError(f"no source for kind {request.spec.source.kind!r}", "unknown_source")
        update = await fetcher(request, settings, http)
    except SourceError as exc:
        update = _error(
            request, redact(exc.reason, secrets), exc.code, exc.retryable, **exc.metadata
        )
    except Exception as exc:  # noqa: BLE001 - one KPI's bug must not sink the batch
        update = _error(
            request, redact(f"{type(exc).__name__}: {exc}", secrets), "internal_error", False
        )
    if isinstance(update, KPIErrorUpdate):
        # Error texts from far ends (n8n) are redacted too: a secret must never be stored.
        update = update.model_copy(update={"error": redact(update.error, secrets)})
    return FetchOutcome(
        request=request,
        update=update,
        latency_ms=(time.perf_counter() - started) * 1000,
        attempts=http.attempts,
    )


def make_client(settings: SourceSettings) -> httpx.AsyncClient:
    """One client for a batch, its pool sized to the batch's concurrency."""
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s),
        limits=limits,
        headers={"Accept": "application/json", "User-Agent": "daily-index-tracker"},
        follow_redirects=True,
    )


async def fetch_many(
    requests: list[FetchRequest],
    settings: SourceSettings,
    *,
    client: httpx.AsyncClient | None = None,
    on_done: Callable[[FetchOutcome], None] | None = None,
) -> list[FetchOutcome]:
    """Fetch all requests concurrently (at most `settings.concurrency` at once).

    Args:
        requests: the KPI-days to fetch.
        settings: base URLs, secrets, timeouts, retry policy and concurrency.
        client: a client to use instead of a fresh one (left open).
        on_done: called with each outcome as it finishes, e.g. to advance a progress bar.

    Returns:
        One outcome per request, in the order of `requests`.
    """
    semaphore = asyncio.Semaphore(max(1, settings.concurrency))

    async def run(request: FetchRequest, shared: httpx.AsyncClient) -> FetchOutcome:
        async with semaphore:
            outcome = await fetch_one(request, settings, shared)
        if on_done is not None:
            on_done(outcome)
        return outcome

    if client is not None:
        return list(await asyncio.gather(*(run(r, client) for r in requests)))
    async with make_client(settings) as own:
        return list(await asyncio.gather(*(run(r, own) for r in requests)))


def fetch_all(
    requests: list[FetchRequest],
    settings: SourceSettings,
    on_done: Callable[[FetchOutcome], None] | None = None,
) -> list[FetchOutcome]:
    """Blocking `fetch_many`, usable from any thread.

    A thread already running an event loop (a notebook, an async op) cannot call
    `asyncio.run`, so the batch then runs on a worker thread with its own loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetch_many(requests, settings, on_done=on_done))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, fetch_many(requests, settings, on_done=on_done)).result()
