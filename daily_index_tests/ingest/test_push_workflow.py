"""n8n/workflows/kpi-push-btc-price.json: answers 202 at once, then POSTs a signed push.

Its Code node runs under Node.js (as n8n runs it, with `require('crypto')` and `$env`) and
the request it builds is sent to the ingestion server on 127.0.0.1, which must accept it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daily_index.calendars import EXPECTED_GAP_CODES
from daily_index.contract import KPIErrorUpdate, parse_update, partition_timestamp
from daily_index_tests.ingest.conftest import OLD_SECRET, SECRET, ThreadedServer, filed, today

WORKFLOW = Path(__file__).resolve().parents[2] / "n8n" / "workflows" / "kpi-push-btc-price.json"

HARNESS = r"""
const fs = require('fs');
const ctx = JSON.parse(fs.readFileSync(0, 'utf8'));
const items = (json) => ({ first: () => ({ json }), all: () => [{ json }] });
const $input = items(ctx.input);
const $ = (name) => {
  if (name !== 'Webhook') throw new Error(`the workflow has no node named ${name}`);
  return items({ headers: {}, params: {}, query: {}, body: ctx.trigger });
};
const $env = ctx.env;
const $execution = { id: '4711' };
const body = `return (async () => {\n${ctx.jsCode}\n})();`;
new Function('$input', '$', '$env', '$execution', 'require', body)(
  $input, $, $env, $execution, require,
).then(
  (out) => process.stdout.write(JSON.stringify(out)),
  (err) => { process.stderr.write(String((err && err.stack) || err)); process.exit(1); },
);
"""


def _workflow() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text(encoding="utf-8"))


def _trigger(day=None) -> dict[str, Any]:
    day = day or today()
    return {
        "schemaVersion": 2,
        "traceId": f"trace-push-{day}-{time.time_ns()}",
        "kpiId": "btc_price_push",
        "timestamp": partition_timestamp(day),
        "kpiType": "price",
        "metadata": {"day": day.isoformat()},
    }


def run_sign_node(trigger: dict, reply: dict, env: dict[str, str]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed: the Code node cannot be executed")
    [code] = [n for n in _workflow()["nodes"] if n["type"] == "n8n-nodes-base.code"]
    context = {
        "jsCode": code["parameters"]["jsCode"],
        "trigger": trigger,
        "input": reply,
        "env": env,
    }
    done = subprocess.run(  # noqa: S603 (node on our own harness)
        [node, "-e", HARNESS],
        input=json.dumps(context),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"the Code node threw: {done.stderr}"
    [item] = json.loads(done.stdout)
    return item["json"]


def _reply(price: float | None = 97123.5, status: int = 200, updated: datetime | None = None):
    updated = updated or datetime.now(UTC)
    coin = {"usd": price, "last_updated_at": int(updated.timestamp())}
    return {"statusCode": status, "headers": {}, "body": json.dumps({"bitcoin": coin})}


def _send(request: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        request["url"], content=request["body"].encode(), headers=request["headers"], timeout=10
    )


def test_shape_answers_202_first_then_pushes() -> None:
    workflow = _workflow()
    by_name = {n["name"]: n for n in workflow["nodes"]}
    chain, current = [], "Webhook"
    while current:
        chain.append(by_name[current]["type"].rsplit(".", 1)[1])
        nexts = workflow["connections"].get(current, {}).get("main", [[]])[0]
        current = nexts[0]["node"] if nexts else None
    assert chain == ["webhook", "respondToWebhook", "httpRequest", "code", "httpRequest"]
    answer = by_name["Answer 202"]["parameters"]
    assert answer["options"]["responseCode"] == 202
    assert by_name["Webhook"]["parameters"]["path"] == "kpi/btc-price-push"
    assert workflow["active"] is False
    push = by_name["Push to ingest"]["parameters"]
    assert push["contentType"] == "raw" and push["body"] == "={{ $json.body }}"


@pytest.fixture
def env(server: ThreadedServer) -> dict[str, str]:
    return {"DAILY_INDEX_INGEST_URL": server.url + "/", "DAILY_INDEX_INGEST_SECRET": SECRET}


def test_the_signed_push_is_accepted(env: dict[str, str], store_dir: Path) -> None:
    trigger = _trigger()
    request = run_sign_node(trigger, _reply(97123.5), env)
    assert request["url"].endswith("/api/kpi-data")
    answer = _send(request)
    assert answer.status_code == 202, answer.text
    inbox = filed(store_dir)
    [marker] = inbox.pending()
    push = inbox.load(marker)
    assert push.update["value"] == 97123.5 and push.update["traceId"] == trigger["traceId"]
    assert push.update["metadata"]["n8nExecutionId"] == "4711"
    # The same trigger run again signs the same webhook-id: a repeat, not a second push.
    again = _send(run_sign_node(trigger, _reply(97123.5), env))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


@pytest.mark.parametrize(
    ("reply", "day_offset", "code"),
    [
        (_reply(status=503), 0, "upstream_error"),
        (_reply(price=None), 0, "bad_upstream_answer"),
        (_reply(updated=datetime.now(UTC) - timedelta(days=1)), 0, "stale"),
        (_reply(), 2, "no_history"),
    ],
    ids=["503", "no-price", "stale", "past-day"],
)
def test_a_failure_is_pushed_as_an_error_update(
    env: dict[str, str], store_dir: Path, reply: dict, day_offset: int, code: str
) -> None:
    request = run_sign_node(_trigger(today() - timedelta(days=day_offset)), reply, env)
    assert request["url"].endswith("/api/kpi-error")
    assert json.loads(request["body"])["errorCode"] == code
    answer = _send(request)
    assert answer.status_code == 202, answer.text
    [marker] = filed(store_dir).pending()
    assert marker.split("/")[2] == "error"


def test_a_push_signed_with_an_unknown_secret_is_refused(server: ThreadedServer) -> None:
    other = "whsec_" + "bm90IHRoZSBzZXJ2ZXIncyBzZWNyZXQgYXQgYWxs"
    env = {"DAILY_INDEX_INGEST_URL": server.url, "DAILY_INDEX_INGEST_SECRET": other}
    assert _send(run_sign_node(_trigger(), _reply(), env)).status_code == 401
    env["DAILY_INDEX_INGEST_SECRET"] = OLD_SECRET  # the rotated-out secret still works
    assert _send(run_sign_node(_trigger(), _reply(), env)).status_code == 202


def test_the_202_answer_is_an_expected_gap_for_the_kpi_run() -> None:
    """What the KPI run reads from the immediate answer: a gap for the day, not a failure."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed: the expression cannot be evaluated")
    [answer] = [n for n in _workflow()["nodes"] if n["name"] == "Answer 202"]
    expression = answer["parameters"]["responseBody"]
    assert expression.startswith("={{") and expression.endswith("}}")
    trigger = _trigger()
    script = (
        "const ctx = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const $json = { body: ctx.trigger }; const $execution = { id: '4711' };"
        f"process.stdout.write(String({expression[3:-2]}));"
    )
    done = subprocess.run(  # noqa: S603 (node on our own expression)
        [node, "-e", script],
        input=json.dumps({"trigger": trigger}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    update = parse_update(
        json.loads(done.stdout),
        kpi_id=trigger["kpiId"],
        trace_id=trigger["traceId"],
        timestamp=trigger["timestamp"],
        kpi_type="price",
    )
    assert isinstance(update, KPIErrorUpdate)
    assert update.error_code in EXPECTED_GAP_CODES and "pushes" in update.error
