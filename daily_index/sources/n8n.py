"""n8n webhooks: POST the IndividualKPITrigger, validate the answer through the contract.

The answer must echo the trigger's traceId and kpiId and carry a timestamp of the trigger's
day (`parse_update` checks all three); its timestamp is the observation's own time.

A starting n8n answers its health check well before it runs workflows: measured on 2 cores,
webhooks answer 404 "The requested webhook ... is not registered." for about 20 s after
`/healthz` is up, then 503, and a database still migrating answers 200 "n8n is starting up.
Please wait". So the run's n8n triggers first go one at a time, as probes: the first that
finds n8n not answering waits for its health check (asked only then: a running n8n costs no
extra request), and each probe is followed by a backoff, until one webhook answers. Only
then do the others go, at most `settings.concurrency_of("n8n")` in flight. While n8n is starting, a
webhook that is not registered yet is asked again with backoff, but no longer than
`settings.n8n_ready_wait_s` from the run's first n8n request, nor past the fetch budget. Any
other 404, and a "not registered" from an n8n that was up at once, fail at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from daily_index.contract import (
    IndividualKPITrigger,
    KPIErrorUpdate,
    KPIUpdate,
    parse_update,
)
from daily_index.sources.base import (
    FETCH_BUDGET_ENV,
    N8N_READY_WAIT_ENV,
    FetchRequest,
    SourceSettings,
)
from daily_index.sources.http import Http, SourceError, where

FAMILY = "n8n"
# n8n's own text (WebhookNotFoundError) for a path no active workflow listens on. Its other
# 404, "This webhook is not registered for POST requests. Did you mean ...", is a method
# mismatch that no wait fixes.
NOT_REGISTERED_RE = re.compile(r'The requested webhook "[^"]*" is not registered')
STARTING_UP = "n8n is starting up"
HEALTH_POLL_S = 1.0
HEALTH_TIMEOUT_S = 5.0
# Backoff between start-up probes: starting at the settings' base, never above this.
START_BACKOFF_MAX_S = 5.0


def trigger_for(request: FetchRequest) -> IndividualKPITrigger:
    spec = request.spec
    return IndividualKPITrigger(
        traceId=request.trace_id,
        kpiId=spec.id,
        timestamp=request.timestamp,
        kpiType=spec.type,
        metadata={
            "kpiName": spec.name,
            "unit": spec.unit,
            "category": spec.metadata.category,
            "day": request.day.isoformat(),
        },
    )


def start_signal(exc: SourceError) -> str | None:
    """What a failed webhook call says about a starting n8n, or None (it answered).

    Returns:
        `not_registered`, `unavailable` (503, "starting up", no connection) or None.
    """
    status = exc.metadata.get("status")
    if status == 404 and NOT_REGISTERED_RE.search(exc.reason):
        return "not_registered"
    if exc.code == "connection_error" or status == 503:
        return "unavailable"
    if exc.code == "invalid_json" and STARTING_UP in exc.reason:
        return "unavailable"
    return None


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


class StartGate:
    """One n8n instance's start-up state within a batch.

    Closed until a webhook answers: until then triggers go one at a time, each probe
    followed by a backoff, so a starting n8n sees about one request per backoff instead of
    the whole run. `starting` says whether n8n showed any sign of starting before its first
    answer; only then are "not registered" answers retried after the gate opens.
    """

    def __init__(self, base: str, settings: SourceSettings, http: Http) -> None:
        self.base = base
        self.settings = settings
        self.batch = http.batch
        self.begun = self.batch.clock()
        window = max(0.0, settings.n8n_ready_wait_s)
        self.deadline = self.begun + window
        if self.batch.deadline is not None:
            self.deadline = min(self.deadline, self.batch.deadline)
        self.waits = window > 0
        self.opened = not self.waits
        self.starting = False
        self.probes_failed = 0
        self._lock = asyncio.Lock()
        self._healthy: asyncio.Future[None] | None = None

    # the health check

    def check_health_failure(self) -> None:
        """Fail at once when this batch already gave up waiting for n8n's health check.

        Raises:
            SourceError: `n8n_not_ready`, a copy of the first KPI's failure.
        """
        if self._healthy is not None and self._healthy.done() and self._healthy.exception():
            error = self._healthy.exception()
            if isinstance(error, SourceError):
                raise error.copy()

    async def healthy(self, client: httpx.AsyncClient) -> None:
        """Wait (once per batch) until n8n's health check answers.

        Raises:
            SourceError: `n8n_not_ready` (a copy per KPI), the wait is over and n8n still
                does not answer its health check.
        """
        if not self.waits:
            return
        if self._healthy is None:
            self._healthy = asyncio.ensure_future(self._poll_health(client))
        try:
            await asyncio.shield(self._healthy)
        except SourceError as exc:
            raise exc.copy() from None

    async def _ask_health(self, client: httpx.AsyncClient) -> str | None:
        """None when n8n's health check says it is up, else what it answered."""
        timeout = httpx.Timeout(min(HEALTH_TIMEOUT_S, self.settings.n8n_timeout_s))
        # /healthz/readiness also waits for n8n's database. A server without it (a proxy, an
        # older n8n) answers 4xx there and /healthz, n8n's liveness, is asked instead; one
        # without either is up as far as a health check can tell: the webhooks decide.
        for path in ("/healthz/readiness", "/healthz"):
            self.batch.calls["n8n health"] += 1
            try:
                response = await client.get(f"{self.base}{path}", timeout=timeout)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__} from {where(self.base + path)}"
            status = response.status_code
            if status >= 500 or (status < 300 and STARTING_UP in response.text[:200]):
                return f"HTTP {status} from {where(self.base + path)}"
            if status < 400:
                return None
        return None

    async def _poll_health(self, client: httpx.AsyncClient) -> None:
        while True:
            last = await self._ask_health(client)
            if last is None:
                return
            self.starting = True
            now = self.batch.clock()
            if now + HEALTH_POLL_S > self.deadline:
                raise SourceError(
                    f"n8n at {where(self.base)} is not ready: its health check still failed "
                    f"after {_seconds(now - self.begun)} ({last}); {self._limit_text()}; "
                    "no webhook called",
                    "n8n_not_ready",
                    retryable=True,
                )
            await asyncio.sleep(HEALTH_POLL_S)

    # the webhooks

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[bool]:
        """A trigger's turn to be sent: exclusive while the gate is closed.

        Yields:
            Whether this turn is exclusive (a probe of a closed gate).
        """
        if self.opened:
            yield False
            return
        await self._lock.acquire()
        if self.opened:
            self._lock.release()
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()

    def answered(self) -> None:
        """A webhook answered: n8n runs workflows; every trigger may go now."""
        if not self.opened:
            self.opened = True

    def retry_wait(self, signal: str, probe: bool, attempt: int) -> float | None:
        """Seconds to wait before asking again, or None: the answer is final.

        Args:
            signal: what the failed call said (`start_signal`).
            probe: the call was a probe of the closed gate.
            attempt: this KPI's failed start-up attempts so far (0 for the first).
        """
        if not self.waits:
            return None
        if probe:
            self.probes_failed += 1
            if self.probes_failed > 1 or signal != "not_registered":
                self.starting = True
            tries = self.probes_failed - 1
        else:
            if not self.starting:
                # n8n answered from the start: a workflow not registered now is missing or
                # inactive, and a 503 was already retried as any 5xx is.
                return None
            tries = attempt
        cap = min(self.settings.backoff_max_s, START_BACKOFF_MAX_S)
        wait = min(cap, self.settings.backoff_base_s * 2**tries)
        if self.batch.clock() + wait > self.deadline:
            return None
        return wait

    def _limit_text(self) -> str:
        budget = self.batch.deadline is not None and self.batch.deadline < (
            self.begun + self.settings.n8n_ready_wait_s
        )
        if budget:
            return f"the fetch budget ({FETCH_BUDGET_ENV}={self.settings.fetch_budget_s:g}) ends"
        return f"the start-up wait is {N8N_READY_WAIT_ENV}={self.settings.n8n_ready_wait_s:g}"

    def final_reason(self, exc: SourceError, signal: str, retried: bool) -> SourceError:
        """The failure as the operator reads it, with what n8n's answer means."""
        reason = exc.reason
        if signal == "not_registered":
            reason += (
                " (no published, active workflow listens on this webhook path in n8n; "
                "`daily-index n8n status` lists them)"
            )
        still_starting = retried and self.starting
        if still_starting:
            elapsed = self.batch.clock() - self.begun
            reason += f"; n8n was still starting after {_seconds(elapsed)}: {self._limit_text()}"
        code = "n8n_not_registered" if signal == "not_registered" else exc.code
        retryable = still_starting or exc.retryable
        failure = SourceError(reason, code, retryable=retryable, **exc.metadata)
        failure.attempts, failure.waited_s = exc.attempts, exc.waited_s
        return failure


async def _post_when_ready(
    request: FetchRequest,
    settings: SourceSettings,
    http: Http,
    base: str,
    url: str,
    headers: dict[str, str],
) -> object:
    """POST the trigger through the instance's start gate; returns the decoded answer."""
    gate = http.batch.local((FAMILY, base), lambda: StartGate(base, settings, http))
    attempt = 0
    while True:
        wait: float | None = None
        async with gate.turn() as probe:
            gate.check_health_failure()
            try:
                answer = await http.post_json(
                    url,
                    trigger_for(request).to_wire(),
                    family=FAMILY,
                    headers=headers,
                    timeout_s=settings.n8n_timeout_s,
                    retry_timeouts=False,
                )
                gate.answered()
                return answer
            except SourceError as exc:
                signal = start_signal(exc)
                if signal is None:
                    gate.answered()
                    raise
                if probe:
                    # Only now is the health check worth its request: n8n did not answer.
                    await gate.healthy(http.client)
                wait = gate.retry_wait(signal, probe, attempt)
                retried = attempt > 0 or probe
                if wait is None:
                    if signal == "unavailable" and not retried:
                        raise
                    raise gate.final_reason(exc, signal, retried) from None
                if probe:
                    # The gate stays closed during the wait: the next probe comes after it.
                    http.waited_s += wait
                    await asyncio.sleep(wait)
                    wait = None
        if wait is not None:
            http.waited_s += wait
            await asyncio.sleep(wait)
        attempt += 1


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    spec = request.spec
    webhook = spec.source.params.get("webhook")
    if not isinstance(webhook, str) or not webhook:
        raise SourceError(
            f"registry: source param 'webhook' of KPI {spec.id!r} is missing", "bad_params"
        )
    base = (spec.source.base_url or settings.n8n_base_url or "").rstrip("/")
    if not base:
        raise SourceError(
            "no n8n base URL: set DAILY_INDEX_N8N_BASE_URL to the n8n instance", "missing_config"
        )
    headers = {}
    if settings.n8n_auth_header and settings.n8n_auth_value:
        headers[settings.n8n_auth_header] = settings.n8n_auth_value
    body = await _post_when_ready(
        request, settings, http, base, f"{base}/webhook/{webhook.lstrip('/')}", headers
    )
    update = parse_update(
        body,
        kpi_id=spec.id,
        trace_id=request.trace_id,
        timestamp=request.timestamp,
        kpi_type=spec.type,
    )
    if isinstance(update, KPIErrorUpdate):
        if update.error_code == "stale" and not request.is_past:
            # Today's value may still come (the workflow's inputs lag): worth asking again.
            update = update.model_copy(update={"retryable": True})
        return update
    observed = {"observedOn": update.day.isoformat(), "observedAt": update.timestamp}
    changes: dict[str, object] = {"metadata": {**update.metadata, **observed}}
    if update.unit is None and spec.unit:
        changes["unit"] = spec.unit
    return update.model_copy(update=changes)
