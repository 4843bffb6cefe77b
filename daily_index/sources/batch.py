"""What the KPI-days of one run share: their days per KPI, the answers, the rate limits.

A run over N days asks each API for the KPI's whole span at once (`days_of`), identical GETs
(the same URL and query) are sent once and their answer shared by every KPI-day that asks
(three KPIs on CoinGecko's `/global`, two on the same Binance symbol, DefiLlama's chart for
every day), and every request of a source family passes that family's rate limiter and then
its bounds on requests in flight: the family's own (n8n: 8 by default), then the batch's.
Nothing here outlives the batch: the next run asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from daily_index.sources.base import (
    FETCH_BUDGET_ENV,
    FetchRequest,
    SourceSettings,
    family_name,
    rate_limit_env,
)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class BudgetExceeded(Exception):
    """A wait that would end after the batch's deadline: the caller fails at once."""

    def __init__(self, reason: str, wait_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


class RateLimiter:
    """At most `per_minute` requests in any 60 s window, granted in the order asked.

    A sliding window, not an even spacing: the APIs count calls per minute, so a short
    run's few calls go out at once and only a long one waits. `pause(s)` holds the whole
    family, e.g. after a server's Retry-After.
    """

    def __init__(
        self,
        family: str,
        per_minute: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.family = family
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._held_until = 0.0
        self._lock = asyncio.Lock()
        self.grants: list[float] = []

    def _wait_needed(self, now: float) -> float:
        wait = max(0.0, self._held_until - now)
        window = 60.0
        while self._granted and self._granted[0] <= now - window:
            self._granted.popleft()
        allowed = max(1, int(self.per_minute))
        if self.per_minute > 0 and len(self._granted) >= allowed:
            # Enough grants must leave the window to make room for one more.
            wait = max(wait, self._granted[len(self._granted) - allowed] + window - now)
        return wait

    async def acquire(self, deadline: float | None = None) -> float:
        """Wait for a slot; returns the seconds waited.

        Raises:
            BudgetExceeded: the slot comes after `deadline` (nothing is waited).
        """
        async with self._lock:
            now = self._clock()
            wait = self._wait_needed(now)
            if wait > 0 and deadline is not None and now + wait > deadline:
                name = family_name(self.family)
                if now < self._held_until:
                    why = f"{name} asked to pause (Retry-After): the next request waits"
                else:
                    why = (
                        f"{name}'s rate limit ({self.per_minute:g} requests/minute, "
                        f"{rate_limit_env(self.family)}) makes the next request wait"
                    )
                raise BudgetExceeded(
                    f"{why} {_seconds(wait)}, more than the {_seconds(max(0.0, deadline - now))} "
                    f"left of the fetch budget ({FETCH_BUDGET_ENV}); not sent",
                    wait,
                )
            if wait > 0:
                await self._sleep(wait)
            granted = max(now + wait, self._clock())
            self._granted.append(granted)
            self.grants.append(granted)
            return wait

    def pause(self, seconds: float) -> None:
        """Hold every request of the family for `seconds` from now."""
        self._held_until = max(self._held_until, self._clock() + seconds)


def _span_key(spec: Any) -> tuple[str, str]:
    return spec.id, spec.source.model_dump_json()


@dataclass
class Batch:
    """The run-wide state of one `fetch_many`: spans, shared answers, limiters, deadline.

    Attributes:
        calls: HTTP requests sent per source family (attempts included).
    """

    settings: SourceSettings
    requests: list[FetchRequest] = field(default_factory=list)
    clock: Clock = time.monotonic
    calls: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        days: dict[tuple[str, str], set[date]] = {}
        for request in self.requests:
            if request.day <= request.today:
                days.setdefault(_span_key(request.spec), set()).add(request.day)
        self._days = {key: sorted(found) for key, found in days.items()}
        self._shared: dict[Any, asyncio.Future] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._semaphore = asyncio.Semaphore(max(1, self.settings.concurrency))
        self._family_semaphores: dict[str, asyncio.Semaphore] = {}
        self._locals: dict[Any, Any] = {}
        budget = self.settings.fetch_budget_s
        self.deadline = self.clock() + budget if budget and budget > 0 else None

    def days_of(self, request: FetchRequest) -> list[date]:
        """Every day of the batch this KPI (same id and source) is asked for, sorted."""
        return self._days.get(_span_key(request.spec)) or [request.day]

    def limiter(self, family: str) -> RateLimiter:
        limiter = self._limiters.get(family)
        if limiter is None:
            per_minute = self.settings.rate_limits.get(family, 0.0) or 0.0
            limiter = RateLimiter(family, per_minute, clock=self.clock)
            self._limiters[family] = limiter
        return limiter

    @property
    def semaphore(self) -> asyncio.Semaphore:
        return self._semaphore

    @asynccontextmanager
    async def slot(self, family: str) -> AsyncIterator[None]:
        """One request in flight: the family's own bound first, then the batch's.

        In that order, a family at its bound waits without holding a batch slot that another
        family could use.
        """
        limit = self.settings.concurrency_of(family)
        if limit is None:
            async with self._semaphore:
                yield
            return
        own = self._family_semaphores.get(family)
        if own is None:
            own = self._family_semaphores[family] = asyncio.Semaphore(limit)
        async with own, self._semaphore:
            yield

    def local(self, key: Any, make: Callable[[], T]) -> T:
        """A per-batch object for `key` (e.g. one n8n instance's start-up state), made once."""
        if key not in self._locals:
            self._locals[key] = make()
        return self._locals[key]

    def left_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    async def shared(self, key: Any, make: Callable[[], Awaitable[Any]]) -> Any:
        """The result of `make()` for `key`, computed once per batch and shared.

        A failure is shared too: every KPI-day that needed the answer gets the same reason.
        """
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(make())
            self._shared[key] = future
        # One waiter's cancellation must not cancel the call the others are waiting for.
        return await asyncio.shield(future)
