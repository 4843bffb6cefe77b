"""KPI sources: fetch every KPI-day of a run concurrently, one outcome per request.

`fetch_many` (async) and `fetch_all` (sync) are the entry points. A per-KPI problem never
raises: it comes back as a `KPIErrorUpdate` in that KPI's outcome, and the others go on.

The requests of one call form a batch (`sources.batch`): each KPI's days are asked for in
as few API requests as the API allows (a range, paginated where the API caps a page), the
same GET is sent once for every KPI-day that needs it, and each source family keeps to its
rate limit. Every KPI-day still gets its own outcome, read from the shared answer with the
same rules as a one-day request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, KPIUpdate, make_error
from daily_index.sources import alternative_me, binance, coingecko, defillama, fred, n8n
from daily_index.sources.base import DEFAULT_BASE_URLS, FetchRequest, SourceSettings
from daily_index.sources.batch import Batch
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
    # Seconds its calls waited: Retry-After, backoff between attempts, the rate limiter.
    waited_s: float = 0.0


def _texts(value: object) -> Iterator[str]:
    """Every string of a JSON-ready value, keys included, as decoded (not JSON-escaped)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _echoes_secret(update: KPIUpdate, secrets: tuple[str | None, ...]) -> bool:
    """Whether any secret (4 characters or more, as `redact` treats them) is in the answer.

    Each string is searched as decoded: a secret holding a quote or a backslash is escaped
    in the JSON text, and the stored payload decodes back to it.
    """
    wire = update.to_wire()
    found = [secret for secret in secrets if secret and len(secret) >= 4]
    return any(secret in text for text in _texts(wire) for secret in found)


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
    request: FetchRequest,
    settings: SourceSettings,
    client: httpx.AsyncClient,
    batch: Batch | None = None,
) -> FetchOutcome:
    """Fetch one KPI-day; every failure becomes a KPIErrorUpdate (never raises).

    Within `batch` (default: a batch of this request alone) it shares the range requests
    and rate limits of the other KPI-days.
    """
    secrets = _secrets(settings)
    batch = batch if batch is not None else Batch(settings, [request])
    http = Http(client=client, settings=settings, batch=batch, secrets=secrets)
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
    if _echoes_secret(update, secrets):
        # A far end (an n8n workflow) that echoes the auth value or a key gets nothing
        # stored: the value, its metadata and the raw payload would all carry the secret.
        update = _error(
            request,
            "the answer contains a configured secret (the n8n auth value or an API key); "
            "nothing stored",
            "echoed_secret",
            False,
        )
    return FetchOutcome(
        request=request,
        update=update,
        latency_ms=(time.perf_counter() - started) * 1000,
        attempts=http.attempts,
        waited_s=http.waited_s,
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
    calls: Counter[str] | None = None,
) -> list[FetchOutcome]:
    """Fetch all requests as one batch (at most `settings.concurrency` HTTP calls at once).

    Args:
        requests: the KPI-days to fetch.
        settings: base URLs, secrets, timeouts, retry policy, rate limits and concurrency.
        client: a client to use instead of a fresh one (left open).
        on_done: called with each outcome as it finishes, e.g. to advance a progress bar.
        calls: if given, counts the HTTP requests sent per source family.

    Returns:
        One outcome per request, in the order of `requests`.
    """
    batch = Batch(settings, requests)

    async def run(request: FetchRequest, shared: httpx.AsyncClient) -> FetchOutcome:
        outcome = await fetch_one(request, settings, shared, batch)
        if on_done is not None:
            on_done(outcome)
        return outcome

    try:
        if client is not None:
            return list(await asyncio.gather(*(run(r, client) for r in requests)))
        async with make_client(settings) as own:
            return list(await asyncio.gather(*(run(r, own) for r in requests)))
    finally:
        if calls is not None:
            calls.update(batch.calls)


def fetch_all(
    requests: list[FetchRequest],
    settings: SourceSettings,
    on_done: Callable[[FetchOutcome], None] | None = None,
    calls: Counter[str] | None = None,
) -> list[FetchOutcome]:
    """Blocking `fetch_many`, usable from any thread.

    A thread already running an event loop (a notebook, an async op) cannot call
    `asyncio.run`, so the batch then runs on a worker thread with its own loop.
    """
    batch = fetch_many(requests, settings, on_done=on_done, calls=calls)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(batch)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, batch).result()
