"""Fixtures for the source tests: a real ReplayServer on 127.0.0.1 and fast settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daily_index.replay import ReplayServer
from daily_index.sources import SourceSettings
from daily_index_tests.sources.support import FRED_KEY, N8N_HEADER, N8N_SECRET


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as replay:
        yield replay


@pytest.fixture
def settings(server: ReplayServer) -> SourceSettings:
    """Every source pointed at the replay server, with backoffs short enough for tests."""
    return SourceSettings(
        base_urls=server.base_urls(),
        n8n_base_url=server.n8n_base_url,
        n8n_auth_header=N8N_HEADER,
        n8n_auth_value=N8N_SECRET,
        fred_api_key=FRED_KEY,
        timeout_s=2.0,
        max_attempts=3,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        concurrency=16,
        n8n_ready_wait_s=1.0,
    )
