"""Fixtures: one read API per test module over a filled local store, and fresh stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.api.support import REGISTRY, RunningApi, fill_store, serve


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory) -> dict[str, str]:
    path = Path(tmp_path_factory.mktemp("registry")) / "kpis.yaml"
    path.write_text(REGISTRY, encoding="utf-8")
    return {"DAILY_INDEX_KPIS_FILE": str(path)}


@pytest.fixture(scope="module")
def api(tmp_path_factory, registry_env) -> Iterator[RunningApi]:
    """One server per test module, no rate limit, over a filled local store."""
    store = LocalObjectStore(tmp_path_factory.mktemp("store"))
    fill_store(store)
    with serve(store, registry_env) as running:
        yield running


@pytest.fixture
def fresh_store(tmp_path) -> LocalObjectStore:
    """A filled store of the test's own, for tests that change it."""
    store = LocalObjectStore(tmp_path / "store")
    fill_store(store)
    return store
