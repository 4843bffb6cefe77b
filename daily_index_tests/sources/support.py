"""Helpers for the source tests: KPI specs, requests and the recorded responses."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from daily_index.contract import partition_timestamp
from daily_index.registry import KpiSpec, default_registry_path, load_registry
from daily_index.replay import DEMO_DAY, responses_dir
from daily_index.sources import FetchOutcome, FetchRequest, SourceSettings, fetch_all

FRED_KEY = "fredkey0123456789abcdef0123456789"
N8N_HEADER = "X-N8N-Auth"
N8N_SECRET = "n8n-shared-secret-value"


def spec(kpi_id: str, **changes: Any) -> KpiSpec:
    """A KPI of the bundled registry, optionally with some fields changed."""
    base = load_registry(default_registry_path()).get(kpi_id)
    if not changes:
        return base
    raw = base.model_dump(by_alias=True)
    raw.update(changes)
    return KpiSpec.model_validate(raw)


def request(
    kpi: str | KpiSpec, day: date = DEMO_DAY, *, today: date = DEMO_DAY, trace: str = "t-1"
):
    return FetchRequest(
        spec=spec(kpi) if isinstance(kpi, str) else kpi,
        day=day,
        today=today,
        trace_id=trace,
        timestamp=partition_timestamp(day),
    )


def fetch(settings: SourceSettings, kpi: str | KpiSpec, day: date = DEMO_DAY) -> FetchOutcome:
    return fetch_all([request(kpi, day)], settings)[0]


def recorded(name: str) -> Any:
    return json.loads((responses_dir() / name).read_text(encoding="utf-8"))
