"""KPI runs through a real n8n, its workflows calling an upstream imitation on 127.0.0.1.

Dagster POSTs to the published webhooks; the answers land in the series, or as failures that
store nothing.

The registry here has one n8n KPI per workflow of n8n/workflows it tests (the bundled one's n8n
KPIs need DAILY_INDEX_N8N_BASE_URL and a workflow each, which may be missing here). Expected
values come from the imitation's own answer, never written down here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from daily_index.definitions import build_definitions
from daily_index.defs.kpis import kpi_key
from daily_index.replay import Fault
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, raw_key, read_fetch_status, series_key
from daily_index_tests.n8n_live.conftest import ROOT, LiveN8n, utc_today
from daily_index_tests.sources.imitations import PREFIXES, unix

pytestmark = pytest.mark.timeout(600)

SIMPLE = f"{PREFIXES['coingecko']}/simple/price"
GLOBAL = f"{PREFIXES['coingecko']}/global"
BTC_RANGE = f"{PREFIXES['coingecko']}/coins/bitcoin/market_chart/range"
FNG = f"{PREFIXES['alternative_me']}/fng/"
KPIS = {
    "btc_price_n8n": ("price", "USD", "kpi/btc-price"),
    "eth_btc_ratio_n8n": ("ratio", "BTC", "kpi/eth-btc-ratio"),
    "fear_greed_n8n": ("index", "points", "kpi/fear-greed"),
    "usdt_dominance_n8n": ("dominance", '"%"', "kpi/usdt-dominance"),
}


def write_registry(path: Path, kpis: dict[str, tuple[str, str, str]]) -> Path:
    lines = ["version: 1", "kpis:"]
    for kpi_id, (kind, unit, webhook) in kpis.items():
        lines += [
            f"  - id: {kpi_id}",
            f"    name: {kpi_id} (live n8n)",
            "    description: An n8n KPI of the live tests.",
            f"    type: {kind}",
            f"    unit: {unit}",
            f"    source: {{kind: n8n, params: {{webhook: {webhook}}}}}",
            "    metadata: {source: n8n, category: live}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def expected_values(live: LiveN8n, day: date) -> dict[str, float]:
    """What each workflow must answer for `day`, from the imitation's own routes."""
    routes = live.upstream.server.routes
    _, prices = routes[SIMPLE]({"ids": "ethereum,bitcoin", "vs_currencies": "usd"})
    _, fng = routes[FNG]({"limit": "0"})
    (index,) = [e["value"] for e in fng["data"] if int(e["timestamp"]) == unix(day)]
    _, figures = routes[GLOBAL]({})
    return {
        "btc_price_n8n": prices["bitcoin"]["usd"],
        "eth_btc_ratio_n8n": prices["ethereum"]["usd"] / prices["bitcoin"]["usd"],
        "fear_greed_n8n": float(index),
        "usdt_dominance_n8n": figures["data"]["market_cap_percentage"]["usdt"],
    }


def past_btc_price(live: LiveN8n, day: date) -> float:
    """The imitation's bitcoin price at 12:00 UTC of `day` (the trigger's time of day)."""
    start = unix(day)
    _, chart = live.upstream.server.routes[BTC_RANGE](
        {"vs_currency": "usd", "from": str(start), "to": str(start + 86_399)}
    )
    (noon,) = [p for ms, p in chart["prices"] if ms == (start + 12 * 3600) * 1000]
    return noon


def cli(*args: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daily_index.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def stored(folder: Path, kpi_id: str) -> dict[date, float]:
    frame = KpiSeriesStore(LocalObjectStore(folder / "store")).read(kpi_id)
    return {row.date: row.value for row in frame.itertuples()}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return write_registry(tmp_path / "kpis.yaml", KPIS)


def test_a_run_lands_each_workflows_exact_value(live: LiveN8n, registry: Path, tmp_path: Path):
    today = utc_today()
    env = live.dagster_env(tmp_path, DAILY_INDEX_KPIS_FILE=str(registry))
    before = live.executions()
    done = cli("run", "--kpis-only", "--no-progress", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = expected_values(live, today)
    for kpi_id, value in expected.items():
        assert stored(tmp_path, kpi_id) == {today: pytest.approx(value, rel=1e-12)}, kpi_id
    status = read_fetch_status(LocalObjectStore(tmp_path / "store"), today)
    assert {kpi: status[kpi]["status"] for kpi in KPIS} == dict.fromkeys(KPIS, "ok")
    assert live.executions_after(before, expected=len(KPIS)) == len(KPIS)
    assert live.auth_value not in done.stdout + done.stderr


# Through the Dagster KPI step in-process (the same step `daily-index run` runs)


@pytest.fixture
def step_env(live: LiveN8n, registry: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    env = live.dagster_env(tmp_path, DAILY_INDEX_KPIS_FILE=str(registry))
    for key, value in env.items():  # secrets are read through dg.EnvVar at run time
        monkeypatch.setenv(key, value)
    return env


def materialise(env: dict[str, str], kpi_id: str, day: date) -> dg.ExecuteInProcessResult:
    defs = build_definitions(environ=env)
    return dg.materialize(
        [defs.get_assets_def(kpi_key(kpi_id))],
        selection=[kpi_key(kpi_id)],
        partition_key=day.isoformat(),
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def failure_of(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """The failed KPI's observation metadata (error, error_code, ...) as plain text."""
    assert result.get_asset_materialization_events() == []
    (observation,) = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    return {key: str(entry.value) for key, entry in observation.metadata.items()}


def assert_nothing_stored(folder: Path, kpi_id: str, day: date) -> None:
    store = folder / "store"
    assert not (store / series_key(kpi_id)).exists()
    assert not (store / raw_key(kpi_id, day)).exists()


def _yesterday_noon() -> int:
    return unix(utc_today() - timedelta(days=1)) + 12 * 3600


# Each fault, and what the reason must quote: the status, the start of the body, the cause.
FAULTS = {
    "http-500": (Fault(status=500, body={"error": "internal error"}), ["500", "internal error"]),
    "html": (
        Fault(body="<html><body>Maintenance</body></html>", content_type="text/html"),
        ["text/html", "Maintenance"],
    ),
    "invalid-json": (
        Fault(body='{"bitcoin": {"usd": 6', content_type="application/json"),
        ['{\\"bitcoin\\": {\\"usd\\": 6'],
    ),
    # Longer than the workflow's request timeout (10 s); it answers before Dagster's 15 s.
    "hang": (Fault(delay_s=25, body={"bitcoin": {"usd": 1.0}}), ["timeout"]),
    "stale": (
        Fault(body={"bitcoin": {"usd": 90_000.0, "last_updated_at": _yesterday_noon()}}),
        [(utc_today() - timedelta(days=1)).isoformat()],
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_upstream_fault_is_a_failure_with_a_reason_and_stores_nothing(
    live: LiveN8n, step_env: dict[str, str], tmp_path: Path, fault: str
):
    answer, quoted = FAULTS[fault]
    live.upstream.server.faults[SIMPLE] = answer
    asked = len(live.upstream.requests)
    result = materialise(step_env, "btc_price_n8n", utc_today())
    assert not result.success
    failure = failure_of(result)
    reason = failure["error"]
    for text in quoted:
        assert text.lower() in reason.lower(), failure
    assert "n8n execution" in reason  # the workflow's own answer, not n8n refusing us
    if fault == "stale":
        assert failure["error_code"] == "stale", failure
    assert live.auth_value not in json.dumps(failure)
    assert_nothing_stored(tmp_path, "btc_price_n8n", utc_today())
    assert any(path == SIMPLE for path, _ in live.upstream.requests[asked:])


def test_a_stale_newest_fear_greed_point_stores_nothing(
    live: LiveN8n, step_env: dict[str, str], tmp_path: Path
):
    today = utc_today()
    live.upstream.missing["alternative_me"] = {today}  # the newest entry is yesterday's
    result = materialise(step_env, "fear_greed_n8n", today)
    assert not result.success
    failure = failure_of(result)
    assert failure["error_code"] == "stale", failure
    assert (today - timedelta(days=1)).isoformat() in failure["error"], failure
    assert_nothing_stored(tmp_path, "fear_greed_n8n", today)


def test_a_wrong_credential_is_a_clear_error(
    live: LiveN8n, step_env: dict[str, str], tmp_path: Path, monkeypatch
):
    wrong = "not-the-webhook-secret-0123"
    monkeypatch.setenv("DAILY_INDEX_N8N_AUTH_VALUE", wrong)
    env = step_env | {"DAILY_INDEX_N8N_AUTH_VALUE": wrong}
    asked = len(live.upstream.requests)
    result = materialise(env, "btc_price_n8n", utc_today())
    assert not result.success
    failure = failure_of(result)
    assert "HTTP 403" in failure["error"], failure
    assert "Authorization data is wrong" in failure["error"], failure
    for secret in (wrong, live.auth_value):
        assert secret not in json.dumps(failure)
    assert_nothing_stored(tmp_path, "btc_price_n8n", utc_today())
    assert len(live.upstream.requests) == asked  # n8n refused before running the workflow


def test_a_past_day_gets_that_days_value(live: LiveN8n, step_env: dict[str, str], tmp_path: Path):
    day = utc_today() - timedelta(days=3)
    for kpi_id in ("fear_greed_n8n", "btc_price_n8n"):
        assert materialise(step_env, kpi_id, day).success, kpi_id
    assert stored(tmp_path, "fear_greed_n8n") == {day: expected_values(live, day)["fear_greed_n8n"]}
    assert stored(tmp_path, "btc_price_n8n") == {day: past_btc_price(live, day)}
    asked = [query for path, query in live.upstream.requests if path == BTC_RANGE]
    assert asked and int(asked[-1]["from"]) == unix(day)


# 200 KPIs in one run


def test_200_kpis_through_n8n_complete_with_200_executions(live: LiveN8n, tmp_path: Path):
    webhooks = list(KPIS.values())
    kpis = {f"live_kpi_{i:03d}": webhooks[i % len(webhooks)] for i in range(200)}
    registry = write_registry(tmp_path / "kpis.yaml", kpis)
    env = live.dagster_env(tmp_path, DAILY_INDEX_KPIS_FILE=str(registry))
    before, asked = live.executions(), len(live.upstream.requests)
    done = cli("run", "--kpis-only", "--no-progress", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = read_fetch_status(LocalObjectStore(tmp_path / "store"), utc_today())
    failed = {kpi: s for kpi, s in status.items() if s["status"] != "ok"}
    assert len(status) == 200 and failed == {}
    assert live.executions_after(before, expected=200) == 200
    assert len(live.upstream.requests) - asked == 200  # one upstream call per execution
    expected = expected_values(live, utc_today())
    by_webhook = {webhook: expected[kpi] for kpi, webhook in KPIS.items()}
    for kpi_id, webhook in list(kpis.items())[::37]:
        assert stored(tmp_path, kpi_id) == {utc_today(): pytest.approx(by_webhook[webhook])}
