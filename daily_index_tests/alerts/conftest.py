"""Fixtures for the alert tests: a small registry, stored series, real receivers on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from daily_index.alerts.ledger import KPI_LEDGER_KEY, OPERATOR_LEDGER_KEY
from daily_index.registry import KpiSpec, Registry
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow

# The delivery tests' receivers, re-exported (the fixtures register by being imported here).
from daily_index_tests.delivery.conftest import (  # noqa: F401
    Mailbox,
    Receiver,
    free_port,
    receiver,
    smtp,
)

SECRET = "s3cr3t-token-value"


def kpi(kpi_id: str, *rules: dict, type: str = "price", unit: str = "USD", **extra) -> KpiSpec:
    """A KPI spec as the registry would build it from kpis.yaml."""
    return KpiSpec.model_validate(
        {
            "id": kpi_id,
            "name": kpi_id.replace("_", " ").title(),
            "description": "Test KPI.",
            "type": type,
            "unit": unit,
            "source": {"kind": "n8n", "params": {"webhook": f"kpi/{kpi_id}"}},
            "metadata": {"source": "test", "category": "test"},
            "alerts": list(rules),
            **extra,
        }
    )


def registry_yaml(kpis: Iterable[KpiSpec]) -> str:
    registry = Registry(version=1, kpis=tuple(kpis))
    return yaml.safe_dump(registry.model_dump(mode="json", by_alias=True, exclude_none=True))


def days(end: date, n: int) -> list[date]:
    """`n` consecutive days ending on `end`."""
    return [end - timedelta(days=n - 1 - i) for i in range(n)]


def store_values(store: LocalObjectStore, kpi_id: str, values: dict[date, float]) -> None:
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    KpiSeriesStore(store).upsert(
        kpi_id, [SeriesRow(d, v, "USD", "test", stamp, f"t-{d}") for d, v in values.items()]
    )


def ledger(store: LocalObjectStore, operators: bool = False) -> dict:
    data = store.read_bytes(OPERATOR_LEDGER_KEY if operators else KPI_LEDGER_KEY)
    return json.loads(data)["entries"] if data else {}


def outbox_messages(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as inst:
        yield inst


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")
