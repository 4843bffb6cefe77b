"""The n8n workflow exports: well-formed, wired to a registered KPI, and answering by contract.

The Code node's JavaScript is run under Node.js in a small harness that provides n8n's
`$input` and `$('Webhook')` with a sample trigger and a sample API answer; what it returns
goes through `daily_index.contract.parse_update`, the same gate a live answer passes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daily_index.contract import (
    KPIDataUpdate,
    KPIErrorUpdate,
    parse_update,
    partition_timestamp,
)
from daily_index.registry import KpiSpec, parse_registry

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "n8n" / "workflows"
README = ROOT / "n8n" / "README.md"
EXPORTS = sorted(WORKFLOWS.glob("*.json"))

WEBHOOK = "n8n-nodes-base.webhook"
HTTP = "n8n-nodes-base.httpRequest"
CODE = "n8n-nodes-base.code"
RESPOND = "n8n-nodes-base.respondToWebhook"

NOW = datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC)
TODAY = NOW.date()

HARNESS = r"""
const fs = require('fs');
const ctx = JSON.parse(fs.readFileSync(0, 'utf8'));
const RealDate = Date;
const fixed = new RealDate(ctx.now).getTime();
// `new Date()` and `Date.now()` see the test's clock; `new Date(x)` behaves as usual.
class FakeDate extends RealDate {
  constructor(...args) { if (args.length === 0) { super(fixed); } else { super(...args); } }
  static now() { return fixed; }
}
const items = (json) => ({ first: () => ({ json }), all: () => [{ json }] });
const $input = items(ctx.input);
const $ = (name) => {
  if (name !== ctx.webhookNode) throw new Error(`the workflow has no node named ${name}`);
  return items({ headers: {}, params: {}, query: {}, body: ctx.trigger });
};
const body = `return (async () => {\n${ctx.jsCode}\n})();`;
new Function('$input', '$', 'Date', body)($input, $, FakeDate).then(
  (out) => process.stdout.write(JSON.stringify(out)),
  (err) => { process.stderr.write(String((err && err.stack) || err)); process.exit(1); },
);
"""


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _nodes_by_type(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["type"]: node for node in workflow["nodes"]}


def _readme_registry() -> list[KpiSpec]:
    """The registry example in n8n/README.md, validated like any registry file."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    registries = [b for b in blocks if b.lstrip().startswith("version:")]
    assert registries, "n8n/README.md has no ```yaml registry example starting with version:"
    return list(parse_registry(registries[0], source="n8n/README.md").kpis)


def _n8n_kpis() -> dict[str, KpiSpec]:
    """Every n8n KPI we know of, by webhook path: the bundled registry and the README's."""
    from daily_index.registry import load_registry

    specs = [*load_registry().kpis, *_readme_registry()]
    return {
        str(spec.source.params["webhook"]).lstrip("/"): spec
        for spec in specs
        if spec.source.kind == "n8n"
    }


def _spec_for(workflow: dict[str, Any]) -> KpiSpec:
    path = _nodes_by_type(workflow)[WEBHOOK]["parameters"]["path"]
    return _n8n_kpis()[path]


def _trigger(spec: KpiSpec, day) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "traceId": f"trace-{spec.id}-{day}",
        "kpiId": spec.id,
        "timestamp": partition_timestamp(day),
        "kpiType": spec.type,
        "metadata": {"kpiName": spec.name, "unit": spec.unit, "day": day.isoformat()},
    }


def run_code_node(workflow: dict[str, Any], trigger: dict[str, Any], api_answer: Any) -> Any:
    """What the workflow's Code node returns for this trigger and API answer."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed: the Code nodes cannot be executed")
    nodes = _nodes_by_type(workflow)
    context = {
        "jsCode": nodes[CODE]["parameters"]["jsCode"],
        "webhookNode": nodes[WEBHOOK]["name"],
        "trigger": trigger,
        "input": api_answer,
        "now": NOW.isoformat().replace("+00:00", "Z"),
    }
    done = subprocess.run(
        [node, "-e", HARNESS],
        input=json.dumps(context),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"the Code node threw (n8n would answer HTTP 500): {done.stderr}"
    return json.loads(done.stdout)


def answer_for(workflow: dict[str, Any], api_answer: Any, day=TODAY):
    """Run the Code node and judge its answer exactly as the n8n source does."""
    spec = _spec_for(workflow)
    trigger = _trigger(spec, day)
    out = run_code_node(workflow, trigger, api_answer)
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"json"}, out
    body = out[0]["json"]
    assert body.get("schemaVersion") == 2, body
    update = parse_update(
        body,
        kpi_id=spec.id,
        trace_id=trigger["traceId"],
        timestamp=trigger["timestamp"],
        kpi_type=spec.type,
    )
    # What parse_update built itself (not the workflow's own error) names its reason codes.
    if isinstance(update, KPIErrorUpdate):
        assert update.error_code not in {
            "invalid_body",
            "wrong_kpi",
            "missing_value",
            "invalid_value",
            "invalid_error_update",
        }, f"the workflow's answer broke the contract: {update.error}"
    assert update.trace_id == trigger["traceId"]
    assert update.timestamp == trigger["timestamp"]
    return update


def _export(name: str) -> dict[str, Any]:
    return _load(WORKFLOWS / name)


# --- shape ------------------------------------------------------------------------------


def test_the_three_examples_exist() -> None:
    assert {p.name for p in EXPORTS} >= {
        "kpi-btc-price.json",
        "kpi-eth-btc-ratio.json",
        "kpi-fear-greed.json",
    }


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_export_is_an_importable_webhook_workflow(path: Path) -> None:
    workflow = _load(path)
    assert isinstance(workflow["name"], str) and workflow["name"]
    assert workflow["active"] is False
    assert isinstance(workflow["settings"], dict)
    for node in workflow["nodes"]:
        assert {"id", "name", "type", "typeVersion", "position", "parameters"} <= set(node)
    names = [node["name"] for node in workflow["nodes"]]
    assert len(names) == len(set(names)), "node names must be unique (connections use them)"
    assert len({node["id"] for node in workflow["nodes"]}) == len(names)

    nodes = _nodes_by_type(workflow)
    assert {WEBHOOK, HTTP, CODE, RESPOND} <= set(nodes)
    hook = nodes[WEBHOOK]["parameters"]
    assert hook["httpMethod"] == "POST"
    assert hook["responseMode"] == "responseNode"
    assert re.fullmatch(r"kpi/[a-z0-9-]+", hook["path"]), hook["path"]
    assert nodes[WEBHOOK]["name"] == "Webhook", "the Code nodes read $('Webhook')"
    assert nodes[HTTP]["parameters"]["url"].startswith("https://")
    assert "jsCode" in nodes[CODE]["parameters"]
    assert nodes[RESPOND]["parameters"]["respondWith"] == "firstIncomingItem"

    # Every connection names existing nodes, and the chain runs Webhook → HTTP → Code → Respond.
    for source, outputs in workflow["connections"].items():
        assert source in names, f"connection from unknown node {source!r}"
        for branch in outputs["main"]:
            for target in branch:
                assert target["node"] in names, f"connection to unknown node {target['node']!r}"
    chain, current = [], nodes[WEBHOOK]["name"]
    while current:
        chain.append(current)
        nexts = workflow["connections"].get(current, {}).get("main", [[]])[0]
        current = nexts[0]["node"] if nexts else None
    by_name = {node["name"]: node["type"] for node in workflow["nodes"]}
    assert [by_name[n] for n in chain] == [WEBHOOK, HTTP, CODE, RESPOND]


def test_readme_registry_example_is_a_valid_registry() -> None:
    specs = _readme_registry()
    assert {s.source.kind for s in specs} == {"n8n"}
    assert all(s.requires_env == "DAILY_INDEX_N8N_BASE_URL" for s in specs)


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_webhook_path_belongs_to_a_registered_n8n_kpi(path: Path) -> None:
    hook_path = _nodes_by_type(_load(path))[WEBHOOK]["parameters"]["path"]
    assert hook_path in _n8n_kpis(), (
        f"{path.name}: no n8n KPI in daily_index/kpis.yaml or the n8n/README.md example "
        f"has source.params.webhook = {hook_path!r}"
    )


# --- the Code nodes answer by contract --------------------------------------------------

GOOD = [
    ("kpi-btc-price.json", {"bitcoin": {"usd": 97123.45}}, 97123.45, "USD"),
    ("kpi-btc-price.json", {"bitcoin": {"usd": 91000}}, 91000.0, "USD"),
    (
        "kpi-eth-btc-ratio.json",
        {"ethereum": {"usd": 3500.0}, "bitcoin": {"usd": 100000.0}},
        0.035,
        "BTC",
    ),
    (
        "kpi-fear-greed.json",
        {
            "name": "Fear and Greed Index",
            "data": [
                {
                    "value": "61",
                    "value_classification": "Greed",
                    "timestamp": str(int(datetime(2026, 11, 24, tzinfo=UTC).timestamp())),
                    "time_until_update": "43195",
                },
                {
                    "value": "48",
                    "value_classification": "Neutral",
                    "timestamp": str(int(datetime(2026, 11, 23, tzinfo=UTC).timestamp())),
                },
            ],
            "metadata": {"error": None},
        },
        61.0,
        "points",
    ),
]


@pytest.mark.parametrize(("name", "api", "value", "unit"), GOOD, ids=lambda v: str(v)[:30])
def test_code_node_answers_a_data_update(name: str, api: Any, value: float, unit: str) -> None:
    update = answer_for(_export(name), api)
    assert isinstance(update, KPIDataUpdate), getattr(update, "error", update)
    assert update.value == pytest.approx(value)
    assert update.unit == unit
    assert update.source
    assert update.day == TODAY


def test_fear_greed_answers_the_triggers_day_in_a_backfill() -> None:
    day = TODAY - timedelta(days=1)
    update = answer_for(_export("kpi-fear-greed.json"), GOOD[3][1], day=day)
    assert isinstance(update, KPIDataUpdate)
    assert update.value == 48.0 and update.day == day


NONSENSE = [
    # CoinGecko's rate-limit body (Never Error passes it through as data).
    (
        "kpi-btc-price.json",
        {"status": {"error_code": 429, "error_message": "rate limited"}},
        "bad_upstream_answer",
        "bitcoin",
    ),
    ("kpi-btc-price.json", {"bitcoin": {"usd": "97123.45"}}, "bad_upstream_answer", "97123.45"),
    ("kpi-btc-price.json", {"bitcoin": {"usd": 0}}, "bad_upstream_answer", "positive"),
    ("kpi-btc-price.json", {"bitcoin": {}}, "bad_upstream_answer", "bitcoin.usd"),
    # The HTTP node failed and On Error: Continue handed its error on.
    (
        "kpi-btc-price.json",
        {"error": {"message": "getaddrinfo ENOTFOUND api.coingecko.com"}},
        "upstream_error",
        "ENOTFOUND",
    ),
    ("kpi-btc-price.json", "<html>502 Bad Gateway</html>", "bad_upstream_answer", "502"),
    ("kpi-eth-btc-ratio.json", {"ethereum": {"usd": 3500.0}}, "bad_upstream_answer", "bitcoin.usd"),
    (
        "kpi-eth-btc-ratio.json",
        {"ethereum": {"usd": 3500.0}, "bitcoin": {"usd": -1}},
        "bad_upstream_answer",
        "positive",
    ),
    ("kpi-fear-greed.json", {"data": "nope"}, "bad_upstream_answer", "data list"),
    ("kpi-fear-greed.json", {"data": []}, "no_value_for_day", "2026-11-24"),
    (
        "kpi-fear-greed.json",
        {
            "data": [
                {
                    "value": "sixty",
                    "timestamp": str(int(datetime(2026, 11, 24, tzinfo=UTC).timestamp())),
                }
            ]
        },
        "bad_upstream_answer",
        "sixty",
    ),
    (
        "kpi-fear-greed.json",
        {
            "data": [
                {
                    "value": "130",
                    "timestamp": str(int(datetime(2026, 11, 24, tzinfo=UTC).timestamp())),
                }
            ]
        },
        "bad_upstream_answer",
        "0 to 100",
    ),
    ("kpi-fear-greed.json", None, "bad_upstream_answer", "null"),
]


@pytest.mark.parametrize(("name", "api", "code", "mentions"), NONSENSE, ids=lambda v: str(v)[:30])
def test_code_node_turns_nonsense_into_an_error_update(
    name: str, api: Any, code: str, mentions: str
) -> None:
    update = answer_for(_export(name), api)
    assert isinstance(update, KPIErrorUpdate), update
    assert update.error_code == code, update.error
    assert mentions in update.error, update.error


@pytest.mark.parametrize("name", ["kpi-btc-price.json", "kpi-eth-btc-ratio.json"])
def test_current_price_workflows_refuse_a_past_day(name: str) -> None:
    """Today's price filed under a backfilled day would silently rewrite history."""
    good_api = next(api for n, api, _, _ in GOOD if n == name)
    update = answer_for(_export(name), good_api, day=TODAY - timedelta(days=3))
    assert isinstance(update, KPIErrorUpdate)
    assert update.error_code == "no_history"
    assert str(TODAY - timedelta(days=3)) in update.error
