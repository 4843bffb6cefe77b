"""`daily-index n8n status|deactivate|activate` and the doctor's n8n check against a real n8n.

The session's n8n 2.40.7 (conftest `n8n_live`, the workflows of n8n/workflows published) and
its public API key. The BTC price workflow is deactivated and activated again; whatever a
test does, it leaves the workflow active for the other live tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daily_index.n8n_control import check_n8n
from daily_index_tests.n8n_live.conftest import LiveN8n
from daily_index_tests.test_n8n_control import ENTRY, REGISTRY, _cli, _printed

pytestmark = pytest.mark.timeout(600)

BTC_ID = "dixBtcPrice00001"
BTC_NAME = "Daily Index KPI: BTC price (CoinGecko)"
KPIS = {"btc_n8n": "kpi/btc-price", "fng_n8n": "kpi/fear-greed"}


@pytest.fixture
def env(live: LiveN8n, tmp_path: Path) -> Iterator[dict[str, str]]:
    registry = tmp_path / "kpis.yaml"
    entries = "".join(ENTRY.format(id=k, path=p) for k, p in KPIS.items())
    registry.write_text(REGISTRY.format(entries=entries), encoding="utf-8")
    env = live.dagster_env(tmp_path) | {
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_N8N_API_KEY": live.api_key,
    }
    yield env
    _cli("activate", BTC_ID, env=env)  # leave it as the other live tests expect it


def _webhook_answer(live: LiveN8n, path: str) -> httpx.Response:
    """A GET on the webhook: n8n says whether a POST webhook serves it, running nothing."""
    return httpx.get(f"{live.base_url}/webhook/{path}", timeout=30)


def _wait_for(live: LiveN8n, path: str, served: bool, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        said = _webhook_answer(live, path).text
        if ("Did you mean to make a POST request" in said) == served:
            return True
        time.sleep(0.5)
    return False


def test_status_deactivate_activate_through_the_real_api(live, env):
    done = _cli("status", env=env)
    out = _printed(done)
    assert done.returncode == 0, out
    assert BTC_NAME in out and BTC_ID in out and "POST kpi/btc-price" in out
    assert "2 n8n KPIs in the registry, all served by active workflows" in out
    assert live.api_key not in out

    done = _cli("deactivate", BTC_NAME, env=env)
    assert done.returncode == 0, _printed(done)
    assert f"deactivated {BTC_NAME} ({BTC_ID})" in done.stdout
    assert _wait_for(live, "kpi/btc-price", served=False)
    answer = _webhook_answer(live, "kpi/btc-price")
    assert answer.status_code == 404 and "is not registered" in answer.text

    status = _cli("status", env=env)
    assert status.returncode == 1, _printed(status)
    assert "btc_n8n: POST kpi/btc-price: its workflow is inactive" in status.stdout
    assert "fng_n8n" not in status.stdout.split("not served:", 1)[1]

    # The doctor without a key asks the webhooks themselves; with one, the API.
    no_key = {k: v for k, v in env.items() if k != "DAILY_INDEX_N8N_API_KEY"}
    findings = {f.detail: f.ok for f in check_n8n(no_key)}
    assert any(ok is False and "btc_n8n" in d for d, ok in findings.items()), findings
    assert any(ok and "POST kpi/fear-greed is registered" in d for d, ok in findings.items())

    done = _cli("activate", BTC_ID, env=env)
    assert done.returncode == 0, _printed(done)
    assert f"activated {BTC_NAME} ({BTC_ID}); webhooks: POST kpi/btc-price" in done.stdout
    assert _wait_for(live, "kpi/btc-price", served=True)
    assert all(f.ok for f in check_n8n(env)), check_n8n(env)
    assert _cli("status", env=env).returncode == 0


def test_a_wrong_key_is_refused_by_the_real_api(live, env):
    done = _cli("status", env=env | {"DAILY_INDEX_N8N_API_KEY": "not-the-key-1234"})
    assert done.returncode == 2, _printed(done)
    assert "n8n refused the API key (HTTP 401" in done.stderr
