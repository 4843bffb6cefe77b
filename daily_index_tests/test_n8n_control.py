"""`daily-index n8n status|activate|deactivate` against an imitation of n8n's public API.

The imitation (127.0.0.1) answers in the documented shapes (`{"data": [...], "nextCursor":
...}`, a workflow object for activate/deactivate) and checks `X-N8N-API-KEY`. The command
sees only the environment given, as a user runs it; the key never appears in anything
printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from daily_index.n8n_control import Workflow, find_workflow, kpi_problems, n8n_group
from daily_index_tests.conftest import closed_port
from daily_index_tests.n8n_imitation import N8nImitation, workflow

REPO = Path(__file__).resolve().parent.parent
API_KEY = "n8n-api-key-never-printed-3e9a"

REGISTRY = """\
version: 1
kpis:
{entries}
"""
ENTRY = """\
  - id: {id}
    name: {id} (n8n)
    description: a KPI fetched by an n8n workflow
    type: price
    unit: USD
    requiresEnv: DAILY_INDEX_N8N_BASE_URL
    source: {{kind: n8n, params: {{webhook: {path}}}}}
    metadata: {{source: n8n, updateFrequency: daily, category: crypto_prices}}
"""
KPIS = {
    "btc_n8n": "kpi/btc-price",
    "eth_n8n": "kpi/eth-btc-ratio",
    "fng_n8n": "kpi/fear-greed",
}


def _flows() -> list[dict]:
    return [
        workflow("wfBtc", "BTC price", ["kpi/btc-price"]),
        workflow("wfEth", "ETH/BTC ratio", ["kpi/eth-btc-ratio"], active=False),
        workflow("wfOther", "Unrelated", ["other/hook"]),
    ] + [workflow(f"wfFill{i:03d}", f"Filler {i:03d}", [f"fill/{i}"]) for i in range(7)]


@pytest.fixture
def n8n() -> Iterator[N8nImitation]:
    with N8nImitation(_flows(), api_key=API_KEY) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, n8n: N8nImitation) -> dict[str, str]:
    registry = tmp_path / "kpis.yaml"
    entries = "".join(ENTRY.format(id=k, path=p) for k, p in KPIS.items())
    registry.write_text(REGISTRY.format(entries=entries), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DAILY_INDEX_")}
    return clean | {
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_N8N_BASE_URL": n8n.url,
        "DAILY_INDEX_N8N_API_KEY": API_KEY,
        "COLUMNS": "200",
    }


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str, env: dict[str, str]) -> Done:
    """The `n8n` command group run in this process with exactly `env` (as its environment).

    One test runs the installed command in a subprocess; the others stay in process: on a
    loaded 2-core machine importing the whole CLI costs 10-15 s a process.
    """
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides |= env
    result = CliRunner().invoke(n8n_group, list(args), env=overrides)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


def _printed(done: Done) -> str:
    return done.stdout + done.stderr


def test_status_lists_the_workflows_and_the_kpis_not_served(n8n, env):
    done = _cli("status", env=env)
    out = _printed(done)
    assert done.returncode == 1, out
    for name, wf_id in [("BTC price", "wfBtc"), ("ETH/BTC ratio", "wfEth"), ("Filler 006", "")]:
        assert name in out and wf_id in out
    assert "POST kpi/btc-price" in out and "POST other/hook" in out
    [listing] = [c for c in n8n.api_calls if c[1] == "/api/v1/workflows"]
    assert listing[2]["limit"] == "250" and "cursor" not in listing[2]
    problems = out.split("n8n KPIs are not served:", 1)[1]
    assert "2 of 3 n8n KPIs are not served" in out
    assert "eth_n8n: POST kpi/eth-btc-ratio: its workflow is inactive" in problems
    assert "'ETH/BTC ratio' (wfEth)" in problems
    assert "fng_n8n: POST kpi/fear-greed: no workflow has this webhook path" in problems
    assert "btc_n8n" not in problems
    assert API_KEY not in out
    assert set(n8n.api_keys_seen) == {API_KEY}


def test_status_follows_next_cursor(env):
    # The command asks for 250 a page; an n8n answering fewer gives a nextCursor.
    with N8nImitation(_flows(), api_key=API_KEY, max_page=3) as server:
        done = _cli("status", env=env | {"DAILY_INDEX_N8N_BASE_URL": server.url})
        out = _printed(done)
        assert done.returncode == 1 and "Filler 006" in out and "BTC price" in out, out
        cursors = [c[2].get("cursor") for c in server.api_calls if c[1] == "/api/v1/workflows"]
        assert cursors == [None, "3", "6", "9"]


def test_deactivate_then_activate_by_name_and_by_id(n8n, env):
    done = _cli("deactivate", "BTC price", env=env)
    assert done.returncode == 0, _printed(done)
    assert "deactivated BTC price (wfBtc)" in done.stdout
    assert "kpi/btc-price" not in n8n.registered()
    assert ("POST", "/api/v1/workflows/wfBtc/deactivate", {}) in n8n.api_calls

    again = _cli("deactivate", "wfBtc", env=env)
    assert again.returncode == 0 and "already inactive; nothing done" in again.stdout

    status = _cli("status", env=env)
    assert "btc_n8n: POST kpi/btc-price: its workflow is inactive" in status.stdout

    done = _cli("activate", "wfEth", env=env)
    assert done.returncode == 0, _printed(done)
    assert "activated ETH/BTC ratio (wfEth); webhooks: POST kpi/eth-btc-ratio" in done.stdout
    assert "kpi/eth-btc-ratio" in n8n.registered()
    assert _cli("activate", "btc PRICE", env=env).returncode == 0  # a name, any case
    # One KPI left without a workflow: status still exits 1, for it alone.
    status = _cli("status", env=env)
    assert status.returncode == 1 and "1 of 3 n8n KPIs are not served" in status.stdout


def test_status_of_one_workflow(n8n, env):
    done = _cli("status", "ETH/BTC ratio", env=env)
    out = _printed(done)
    assert done.returncode == 1, out
    assert "wfEth" in out and "wfBtc" not in out
    assert "1 of 1 n8n KPIs are not served" in out


def test_an_unknown_or_ambiguous_workflow_exits_2(n8n, env):
    done = _cli("activate", "nope", env=env)
    assert done.returncode == 2 and "no workflow with the id or name 'nope'" in done.stderr
    n8n.workflows.append(workflow("wfBtc2", "BTC price", ["kpi/btc-2"]))
    done = _cli("deactivate", "BTC price", env=env)
    assert done.returncode == 2, _printed(done)
    assert "several workflows are named 'BTC price'" in done.stderr
    assert "wfBtc" in done.stderr and "wfBtc2" in done.stderr
    assert not any(c[1].endswith("/deactivate") for c in n8n.api_calls)


@pytest.mark.parametrize(
    "missing, words",
    [
        ("DAILY_INDEX_N8N_BASE_URL", "DAILY_INDEX_N8N_BASE_URL is not set"),
        ("DAILY_INDEX_N8N_API_KEY", "DAILY_INDEX_N8N_API_KEY is not set"),
    ],
)
def test_missing_configuration_exits_2(n8n, env, missing, words):
    for command in (["status"], ["activate", "wfBtc"]):
        done = _cli(*command, env={k: v for k, v in env.items() if k != missing})
        assert done.returncode == 2, _printed(done)
        assert words in done.stderr and "Traceback" not in done.stderr
    assert not n8n.api_calls


def test_a_refused_key_is_a_clear_error_without_the_key(n8n, env):
    """Through the installed `daily-index` entry point, in its own process."""
    wrong = "wrong-key-also-never-printed-11"
    done = subprocess.run(
        [sys.executable, "-m", "daily_index.cli", "n8n", "status"],
        env=env | {"DAILY_INDEX_N8N_API_KEY": wrong},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "n8n refused the API key (HTTP 401" in done.stderr
    assert "DAILY_INDEX_N8N_API_KEY" in done.stderr and "Traceback" not in out
    assert wrong not in out and API_KEY not in out
    assert n8n.api_keys_seen == [wrong]  # it was really sent


def test_an_unreachable_n8n_exits_1_with_the_address(env):
    url = f"http://127.0.0.1:{closed_port()}"
    done = _cli("status", env=env | {"DAILY_INDEX_N8N_BASE_URL": url})
    assert done.returncode == 1, _printed(done)
    assert f"n8n's API at {url}/api/v1/workflows did not answer" in done.stderr


def _wf(raw: dict) -> Workflow:
    return Workflow.from_api(raw)


def test_webhooks_come_from_the_published_version_and_default_to_get():
    draft = workflow("w1", "W", ["kpi/draft"])
    draft["activeVersion"] = {"nodes": [workflow("w1", "W", ["kpi/published"])["nodes"][0]]}
    assert [h.path for h in _wf(draft).webhooks] == ["kpi/published"]
    bare = workflow("w2", "G", ["kpi/get"])
    del bare["nodes"][0]["parameters"]["httpMethod"]
    served = _wf(bare)
    assert served.webhooks[0].method == "GET"
    from daily_index_tests.sources.test_n8n_start import n8n_kpi

    [problem] = kpi_problems([n8n_kpi(0, "kpi/get")], [served])
    assert "listens with GET, not POST" in problem.reason


def test_find_workflow_prefers_the_id():
    flows = [_wf(workflow("abc", "x", [])), _wf(workflow("x", "abc", []))]
    assert find_workflow(flows, "abc").id == "abc"
    assert find_workflow(flows, "X").id == "abc"  # no id "X": the name, ignoring case
