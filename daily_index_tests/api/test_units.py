"""Pure parts of the read API and its client: the token bucket, Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from daily_index.api.app import RateLimiter
from daily_index.client import _retry_after


def test_bucket_allows_a_burst_then_refills_at_the_rate():
    limiter = RateLimiter(limit=3, window_s=6)  # 0.5 requests a second
    assert [limiter.take(0, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(0, now=100.0) == pytest.approx(2.0)
    assert limiter.take(0, now=101.0) == pytest.approx(1.0)
    assert limiter.take(0, now=102.0) == 0.0
    assert limiter.take(1, now=102.0) == 0.0  # another key, its own bucket
    # A long pause fills the bucket to its size, no further.
    assert [limiter.take(0, now=1000.0) for _ in range(4)][-1] > 0


def test_hot_answers_are_bounded_by_count_and_bytes():
    from starlette.responses import Response

    from daily_index.api.app import HotAnswer, HotAnswers

    hot = HotAnswers(size=3, max_bytes=10)

    def answer(size: int) -> HotAnswer:
        return HotAnswer("kpi/x.parquet", 1, None, Response(b"x" * size))

    for n in range(4):
        hot.remember((f"/{n}", b""), answer(2))
    assert [hot.get((f"/{n}", b"")) is not None for n in range(4)] == [False, True, True, True]
    hot.remember(("/big", b""), answer(7))  # 2 + 2 + 7 > 10: the oldest go
    assert [hot.get((f"/{n}", b"")) is not None for n in range(4)] == [False, False, False, True]
    hot.remember(("/huge", b""), answer(11))
    assert hot.get(("/huge", b"")) is None


def test_no_limit_never_waits():
    limiter = RateLimiter(limit=0, window_s=60)
    assert {limiter.take(0, now=float(n)) for n in range(1000)} == {0.0}


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_in_seconds(header, expected):
    headers = {} if header is None else {"Retry-After": header}
    assert _retry_after(httpx.Response(429, headers=headers)) == expected


def test_retry_after_as_an_http_date():
    now = datetime(2026, 3, 31, 12, 0, 0, tzinfo=UTC)
    header = {"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)}
    assert _retry_after(httpx.Response(429, headers=header), now=now) == 30.0
    assert _retry_after(httpx.Response(429, headers=header), now=now + timedelta(minutes=1)) == 0
