"""The n8n workflow exports: well-formed, wired to a registered KPI, and answering by contract.

Each export is run as n8n would run it, without n8n: a small interpreter under Node.js walks
the workflow's connections from the Webhook node with a sample trigger, runs the Code nodes'
JavaScript with n8n's `$input`, `$(...)`, `$execution` and `$workflow`, evaluates the IF
node's condition and the HTTP Request node's URL expression (with `$env`), and hands the
HTTP Request node's output to the next node in the shape n8n 2.x gives it with *Include
Response Headers and Status*, format *Text*, *Never Error* and *On Error: Continue*: a
`{body, headers, statusCode, statusMessage}` item per response, `{error}` when the request
failed. What the Respond to Webhook node receives goes through
`daily_index.contract.parse_update`, the gate a live answer passes. Every case of the module
runs in one Node.js process, so the module stays fast; the live tests run the same exports in
a real n8n.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from daily_index.contract import (
    KPIDataUpdate,
    KPIErrorUpdate,
    KPIUpdate,
    parse_update,
    partition_timestamp,
)
from daily_index.registry import KpiSpec, parse_registry

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "n8n" / "workflows"
README = ROOT / "n8n" / "README.md"
# kpi-push-* workflows push their value instead of answering the webhook: not run here.
EXPORTS = sorted(p for p in WORKFLOWS.glob("*.json") if not p.name.startswith("kpi-push-"))

WEBHOOK = "n8n-nodes-base.webhook"
HTTP = "n8n-nodes-base.httpRequest"
CODE = "n8n-nodes-base.code"
IF = "n8n-nodes-base.if"
RESPOND = "n8n-nodes-base.respondToWebhook"

NOW = datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC)
TODAY = NOW.date()
PAST = TODAY - timedelta(days=3)
EXECUTION_ID = "4711"
COINGECKO = "https://api.coingecko.com"
ALTERNATIVE_ME = "https://api.alternative.me"
# The n8n environment variable each upstream's base URL comes from, and its default.
BASE_URLS = {
    "CoinGecko": ("KPI_COINGECKO_BASE_URL", COINGECKO),
    "alternative.me": ("KPI_ALTERNATIVE_ME_BASE_URL", ALTERNATIVE_ME),
}

# Codes parse_update gives an answer that breaks the contract: a workflow's own error never
# needs them (its `stale` and `wrong_day` are told apart by the body's own errorCode).
CONTRACT_BREACHES = {
    "invalid_body",
    "missing_field",
    "wrong_kpi",
    "wrong_trace",
    "missing_value",
    "invalid_value",
    "invalid_error_update",
    "out_of_domain",
}

INTERPRETER = r"""
const fs = require('fs');
const { cases } = JSON.parse(fs.readFileSync(0, 'utf8'));
const RealDate = Date;
const clock = (now) => {
  const fixed = new RealDate(now).getTime();
  // `new Date()` and `Date.now()` see the case's clock; `new Date(x)` behaves as usual.
  return class FakeDate extends RealDate {
    constructor(...args) { if (args.length === 0) { super(fixed); } else { super(...args); } }
    static now() { return fixed; }
  };
};
const items = (list) => ({ first: () => list[0], all: () => list });
// An n8n parameter: a literal, or '=' followed by text with {{ expression }} parts.
const evaluate = (value, scope) => {
  if (typeof value !== 'string' || !value.startsWith('=')) return value;
  const run = (code) =>
    new Function(...Object.keys(scope), `return (${code});`)(...Object.values(scope));
  const text = value.slice(1);
  const whole = text.match(/^\{\{([\s\S]*)\}\}$/);
  if (whole && !whole[1].includes('}}')) return run(whole[1]);
  return text.replace(/\{\{([\s\S]*?)\}\}/g, (_, code) => String(run(code)));
};
// What n8n 2.x's HTTP Request node (4.2; full response, format Text, Never Error) outputs for
// one upstream reply. n8n asks with json: true, so axios parses a JSON body and the node turns
// it back into text; an empty body becomes undefined (the key then disappears).
const httpItem = (reply) => {
  if (reply.failure !== undefined) return { error: reply.failure };
  let body = reply.body === '' ? undefined : reply.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body);
      body = parsed !== null && typeof parsed === 'object' ? JSON.stringify(parsed) : parsed;
    } catch (e) { /* stays text, as axios leaves it */ }
  }
  const headers = reply.contentType === null ? {} : { 'content-type': reply.contentType };
  const item = { body, headers, statusCode: reply.status, statusMessage: 'Whatever' };
  return JSON.parse(JSON.stringify(item));
};

const runCase = async (c) => {
  const workflow = c.workflow;
  const FakeDate = clock(c.now);
  const byName = Object.fromEntries(workflow.nodes.map((n) => [n.name, n]));
  const outputs = {};
  const visited = [];
  const requests = [];
  const $env = c.envBlocked
    ? new Proxy({}, { get: () => { throw new Error('access to env vars denied'); } })
    : { ...c.env };
  const $ = (name) => {
    if (!(name in outputs)) throw new Error(`no node named ${name} has run`);
    return items(outputs[name]);
  };
  let answer;
  const run = async (node, input) => {
    visited.push(node.name);
    const p = node.parameters;
    if (node.type === 'n8n-nodes-base.webhook') return [input];
    if (node.type === 'n8n-nodes-base.code') {
      const body = `return (async () => {\n${p.jsCode}\n})();`;
      const fn = new Function('$input', '$', '$execution', '$workflow', 'Date', body);
      const $workflow = { id: workflow.id, name: workflow.name };
      const out = await fn(items(input), $, { id: c.executionId }, $workflow, FakeDate);
      return [JSON.parse(JSON.stringify(out))];
    }
    if (node.type === 'n8n-nodes-base.if') {
      const yes = [];
      const no = [];
      for (const item of input) {
        const scope = { $json: item.json, Date: FakeDate };
        const ok = p.conditions.conditions.every((c2) => evaluate(c2.leftValue, scope) === true);
        (ok ? yes : no).push(item);
      }
      return [yes, no];
    }
    if (node.type === 'n8n-nodes-base.httpRequest') {
      const out = [];
      for (const item of input) {
        let url;
        try {
          url = evaluate(p.url, { $json: item.json, $env, Date: FakeDate });
        } catch (e) {
          out.push({ json: { error: e.message } });
          continue;
        }
        requests.push(url);
        const path = new URL(url).pathname;
        const refused = { message: `connect ECONNREFUSED (no reply for ${path})` };
        const reply = c.upstream[path] || { failure: refused };
        out.push({ json: httpItem(reply) });
      }
      return [out];
    }
    if (node.type === 'n8n-nodes-base.respondToWebhook') {
      answer = input[0].json;
      return [];
    }
    throw new Error(`the interpreter does not know node type ${node.type}`);
  };
  const webhook = workflow.nodes.find((n) => n.type === 'n8n-nodes-base.webhook');
  const queue = [[webhook, [{ json: { headers: {}, params: {}, query: {}, body: c.trigger } }]]];
  for (let steps = 0; queue.length > 0; steps += 1) {
    if (steps > 50) throw new Error('the workflow runs in a loop');
    const [node, input] = queue.shift();
    const result = await run(node, input);
    outputs[node.name] = result.flat();
    const links = (workflow.connections[node.name] || {}).main || [];
    result.forEach((out, index) => {
      if (out.length === 0) return;  // n8n runs nothing behind an empty output
      for (const link of links[index] || []) queue.push([byName[link.node], out]);
    });
  }
  return { answer, requests, visited };
};

(async () => {
  const results = {};
  for (const c of cases) {
    try {
      results[c.id] = await runCase(c);
    } catch (err) {
      results[c.id] = { thrown: String((err && err.stack) || err) };
    }
  }
  process.stdout.write(JSON.stringify(results));
})();
"""


# --- sample upstream replies ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One upstream reply as the HTTP Request node receives it, or a failed request."""

    status: int = 200
    body: str = ""
    content_type: str | None = "application/json; charset=utf-8"
    failure: Any = None

    def wire(self) -> dict[str, Any]:
        if self.failure is not None:
            return {"failure": self.failure}
        return {"status": self.status, "body": self.body, "contentType": self.content_type}


def ok_json(value: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(value))


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


UPDATED = unix(NOW) - 25
YESTERDAY_NOON = unix(midnight(TODAY - timedelta(days=1))) + 12 * 3600


def simple_price(**coins: tuple[float | None, int | None]) -> dict[str, Any]:
    return {coin: {"usd": usd, "last_updated_at": at} for coin, (usd, at) in coins.items()}


def hourly(day: date, base: float) -> list[list[float]]:
    """A day of hourly [ms, price] points; the price at HH:00 is base + HH."""
    start = unix(midnight(day)) * 1000
    return [[start + hour * 3_600_000, base + hour] for hour in range(24)]


def fng(*days_values: tuple[date, str | None]) -> dict[str, Any]:
    return {
        "name": "Fear and Greed Index",
        "data": [
            {
                "value": value,
                "value_classification": "Greed",
                "timestamp": str(unix(midnight(day))),
            }
            for day, value in days_values
        ],
        "metadata": {"error": None},
    }


def global_figures(usdt: float | None, updated: int = UPDATED) -> dict[str, Any]:
    return {
        "data": {
            "active_cryptocurrencies": 17000,
            "market_cap_percentage": {"btc": 57.1, "eth": 12.2, "usdt": usdt},
            "updated_at": updated,
        }
    }


SIMPLE = "/api/v3/simple/price"
GLOBAL = "/api/v3/global"
FNG = "/fng/"


def chart(coin: str) -> str:
    return f"/api/v3/coins/{coin}/market_chart/range"


GOOD_TODAY: dict[str, dict[str, Reply]] = {
    "kpi-btc-price.json": {SIMPLE: ok_json(simple_price(bitcoin=(97123.45, UPDATED)))},
    "kpi-eth-btc-ratio.json": {
        SIMPLE: ok_json(simple_price(ethereum=(3500.0, UPDATED), bitcoin=(100000.0, UPDATED - 40)))
    },
    "kpi-fear-greed.json": {FNG: ok_json(fng((TODAY, "61"), (TODAY - timedelta(days=1), "48")))},
    "kpi-usdt-dominance.json": {GLOBAL: ok_json(global_figures(4.62))},
}
TODAY_VALUE = {
    "kpi-btc-price.json": (97123.45, "USD"),
    "kpi-eth-btc-ratio.json": (0.035, "BTC"),
    "kpi-fear-greed.json": (61.0, "points"),
    "kpi-usdt-dominance.json": (4.62, "%"),
}
# The upstream path whose reply the failure cases replace, for a trigger of today.
TODAY_PATH = {
    "kpi-btc-price.json": SIMPLE,
    "kpi-eth-btc-ratio.json": SIMPLE,
    "kpi-fear-greed.json": FNG,
    "kpi-usdt-dominance.json": GLOBAL,
}


# --- running the workflows -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A trigger for one workflow, the upstream's replies by path, and n8n's environment."""

    id: str
    workflow: str
    upstream: dict[str, Reply]
    day: date = TODAY
    env: dict[str, str] = field(default_factory=dict)
    env_blocked: bool = False
    trigger_changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    answer: dict[str, Any]
    requests: list[str]
    visited: list[str]
    update: KPIUpdate
    trigger: dict[str, Any]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _export(name: str) -> dict[str, Any]:
    return _load(WORKFLOWS / name)


def _nodes_by_type(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["type"]: node for node in workflow["nodes"]}


def _readme_registry() -> list[KpiSpec]:
    """The registry example in n8n/README.md, validated like any registry file."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    registries = [b for b in blocks if b.lstrip().startswith("version:")]
    assert registries, "n8n/README.md has no ```yaml registry example starting with version:"
    return list(parse_registry(registries[0], source="n8n/README.md").kpis)


@cache
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


def _trigger(spec: KpiSpec, day: date) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "traceId": f"trace-{spec.id}-{day}",
        "kpiId": spec.id,
        "timestamp": partition_timestamp(day),
        "kpiType": spec.type,
        "metadata": {"kpiName": spec.name, "unit": spec.unit, "day": day.isoformat()},
    }


def run_cases(cases: list[Case]) -> dict[str, Outcome]:
    """Run every case in one Node.js process; judge each answer as the n8n source does."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed: the workflows cannot be executed")
    wire, specs, sent, triggers = [], {}, {}, {}
    for case in cases:
        workflow = _export(case.workflow)
        spec = specs[case.id] = _spec_for(workflow)
        sent[case.id] = _trigger(spec, case.day)  # what Dagster sends, and judges by
        trigger = triggers[case.id] = {**sent[case.id], **case.trigger_changes}
        wire.append(
            {
                "id": case.id,
                "workflow": workflow,
                "trigger": trigger,
                "upstream": {path: reply.wire() for path, reply in case.upstream.items()},
                "env": case.env,
                "envBlocked": case.env_blocked,
                "executionId": EXECUTION_ID,
                "now": NOW.isoformat().replace("+00:00", "Z"),
            }
        )
    done = subprocess.run(
        [node, "-e", INTERPRETER],
        input=json.dumps({"cases": wire}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcomes = {}
    for case_id, result in json.loads(done.stdout).items():
        assert "thrown" not in result, f"{case_id}: the workflow failed (n8n: HTTP 500): {result}"
        answer, trigger, spec = result.get("answer"), triggers[case_id], specs[case_id]
        assert isinstance(answer, dict), f"{case_id}: Respond to Webhook got no item: {result}"
        update = parse_update(
            answer,
            kpi_id=spec.id,
            trace_id=sent[case_id]["traceId"],
            timestamp=sent[case_id]["timestamp"],
            kpi_type=spec.type,
        )
        outcomes[case_id] = Outcome(answer, result["requests"], result["visited"], update, trigger)
    return outcomes


def a_value(outcome: Outcome) -> KPIDataUpdate:
    update = outcome.update
    assert isinstance(update, KPIDataUpdate), getattr(update, "error", update)
    assert outcome.answer["schemaVersion"] == 2
    return update


def an_error(outcome: Outcome, code: str) -> KPIErrorUpdate:
    """The workflow's own error answer (not one the contract made of a broken answer)."""
    update = outcome.update
    assert isinstance(update, KPIErrorUpdate), f"expected an error, got the value {update}"
    assert update.error_code not in CONTRACT_BREACHES, update.error
    assert outcome.answer.get("errorCode") == code, outcome.answer
    assert update.error_code == code
    assert outcome.answer["schemaVersion"] == 2 and "value" not in outcome.answer
    assert update.timestamp == outcome.trigger["timestamp"]
    assert update.error.endswith(f"(n8n execution {EXECUTION_ID})"), update.error
    assert update.metadata["traceId"] == outcome.trigger["traceId"]
    return update


def query_of(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


# --- the cases -----------------------------------------------------------------------------

CASES: list[Case] = []


def case(case_id: str, workflow: str, upstream: dict[str, Reply], **options: Any) -> None:
    CASES.append(Case(case_id, workflow, upstream, **options))


def past_chart(coin: str, base: float, day: date = PAST) -> Reply:
    return ok_json({"prices": hourly(day, base), "market_caps": [], "total_volumes": []})


for name in TODAY_VALUE:
    case(f"{name}:today", name, GOOD_TODAY[name])
    case(
        f"{name}:env",
        name,
        GOOD_TODAY[name],
        env={v: "http://127.0.0.1:8999/" for v, _ in BASE_URLS.values()},
    )

case("btc:past", "kpi-btc-price.json", {chart("bitcoin"): past_chart("bitcoin", 90000.0)}, day=PAST)
case(
    "ratio:past",
    "kpi-eth-btc-ratio.json",
    {
        chart("ethereum"): past_chart("ethereum", 3000.0),
        chart("bitcoin"): past_chart("bitcoin", 60000.0),
    },
    day=PAST,
)
case(
    "fng:past",
    "kpi-fear-greed.json",
    {FNG: ok_json(fng(*[(TODAY - timedelta(days=d), str(40 + d)) for d in range(6)]))},
    day=PAST,
)
case("usdt:past", "kpi-usdt-dominance.json", {}, day=PAST)


# Every way an upstream answer can be unusable, for every workflow (on today's request):
# fault -> (the reply, the expected errorCode, words the reason must contain).
GOOD_BODY = "<the workflow's good answer>"
FAULTS: dict[str, tuple[Reply, str, list[str]]] = {
    "503-plausible-json": (
        # The body of a good answer: only the status says it is not one.
        Reply(status=503, body=GOOD_BODY),
        "upstream_status",
        ["HTTP 503", "application/json", '"{\\"'],
    ),
    "429": (
        ok_json({"status": {"error_code": 429, "error_message": "rate limited"}}, 429),
        "upstream_status",
        ["HTTP 429", "rate limited"],
    ),
    "404": (
        Reply(status=404, body="Not Found", content_type="text/plain"),
        "upstream_status",
        ["HTTP 404", '"Not Found"'],
    ),
    "html": (
        Reply(
            body="<html><head><title>Just a moment...</title></head><body>"
            + "x" * 400
            + "</body></html>",
            content_type="text/html; charset=UTF-8",
        ),
        "upstream_not_json",
        ["HTTP 200", "text/html", '"<html><head><title>Just a moment...', "…"],
    ),
    "no-content-type": (
        Reply(body='{"a": 1}', content_type=None),
        "upstream_not_json",
        ["no content type"],
    ),
    "invalid-json": (
        Reply(body='{"bitcoin": {"usd": 6'),
        "upstream_invalid_json",
        ["not valid JSON", '"{\\"bitcoin\\": {\\"usd\\": 6"'],
    ),
    "empty-body": (Reply(body=""), "upstream_invalid_json", ["empty body"]),
    "json-null": (Reply(body="null"), "bad_upstream_answer", ["null"]),
    "timeout": (
        Reply(
            failure={
                "message": "timeout of 10000ms exceeded",
                "code": "ECONNABORTED",
                "name": "AxiosError",
            }
        ),
        "upstream_unreachable",
        ["could not be reached", "timeout of 10000ms exceeded"],
    ),
    "dns": (
        Reply(failure="getaddrinfo ENOTFOUND api.coingecko.com"),
        "upstream_unreachable",
        ["ENOTFOUND"],
    ),
}
for name, path in TODAY_PATH.items():
    for fault, (reply, _, _) in FAULTS.items():
        if reply.body == GOOD_BODY:
            reply = replace(reply, body=GOOD_TODAY[name][path].body)
        case(f"{name}:{fault}", name, {**GOOD_TODAY[name], path: reply})
    case(f"{name}:env-blocked", name, GOOD_TODAY[name], env_blocked=True)
    case(f"{name}:bad-trigger", name, GOOD_TODAY[name], trigger_changes={"timestamp": "yesterday"})

# A null or missing field, named in the reason; a stale newest observation, naming both days.
YESTERDAY = TODAY - timedelta(days=1)
FIELD_CASES: dict[str, tuple[str, Reply, str, list[str]]] = {
    "btc:null-price": (
        "kpi-btc-price.json",
        ok_json(simple_price(bitcoin=(None, UPDATED))),
        "bad_upstream_answer",
        ["bitcoin.usd is null"],
    ),
    "btc:no-coin": (
        "kpi-btc-price.json",
        ok_json({}),
        "bad_upstream_answer",
        ["no field bitcoin.usd"],
    ),
    "btc:string-price": (
        "kpi-btc-price.json",
        ok_json(simple_price(bitcoin=("97123.45", UPDATED))),
        "bad_upstream_answer",
        ["bitcoin.usd", '"97123.45"', "positive number"],
    ),
    "btc:zero-price": (
        "kpi-btc-price.json",
        ok_json(simple_price(bitcoin=(0, UPDATED))),
        "bad_upstream_answer",
        ["positive number"],
    ),
    "btc:no-update-time": (
        "kpi-btc-price.json",
        ok_json({"bitcoin": {"usd": 97000.0}}),
        "bad_upstream_answer",
        ["bitcoin.last_updated_at"],
    ),
    "btc:stale": (
        "kpi-btc-price.json",
        ok_json(simple_price(bitcoin=(90000.0, YESTERDAY_NOON))),
        "stale",
        ["2026-11-23", "2026-11-24", "stale"],
    ),
    "btc:next-day": (
        "kpi-btc-price.json",
        ok_json(simple_price(bitcoin=(90000.0, unix(NOW) + 86400))),
        "wrong_day",
        ["2026-11-25"],
    ),
    "ratio:null-eth": (
        "kpi-eth-btc-ratio.json",
        ok_json(simple_price(ethereum=(None, UPDATED), bitcoin=(1e5, UPDATED))),
        "bad_upstream_answer",
        ["ethereum.usd is null"],
    ),
    "ratio:no-btc": (
        "kpi-eth-btc-ratio.json",
        ok_json(simple_price(ethereum=(3500.0, UPDATED))),
        "bad_upstream_answer",
        ["no field bitcoin.usd"],
    ),
    "ratio:negative-btc": (
        "kpi-eth-btc-ratio.json",
        ok_json(simple_price(ethereum=(3500.0, UPDATED), bitcoin=(-1, UPDATED))),
        "bad_upstream_answer",
        ["bitcoin.usd is -1"],
    ),
    "ratio:stale-btc": (
        "kpi-eth-btc-ratio.json",
        ok_json(simple_price(ethereum=(3500.0, UPDATED), bitcoin=(1e5, YESTERDAY_NOON))),
        "stale",
        ["bitcoin", "2026-11-23", "2026-11-24"],
    ),
    "fng:null-value": (
        "kpi-fear-greed.json",
        ok_json(fng((TODAY, None))),
        "bad_upstream_answer",
        ["data[0].value is null"],
    ),
    "fng:word": (
        "kpi-fear-greed.json",
        ok_json(fng((TODAY, "sixty"))),
        "bad_upstream_answer",
        ['"sixty"', "0 to 100"],
    ),
    "fng:130": (
        "kpi-fear-greed.json",
        ok_json(fng((TODAY, "130"))),
        "bad_upstream_answer",
        ["130", "0 to 100"],
    ),
    "fng:no-list": (
        "kpi-fear-greed.json",
        ok_json({"data": "nope"}),
        "bad_upstream_answer",
        ["field data", "list"],
    ),
    "fng:empty-list": (
        "kpi-fear-greed.json",
        ok_json({"data": []}),
        "bad_upstream_answer",
        ["no dated entry"],
    ),
    "fng:reported": (
        "kpi-fear-greed.json",
        ok_json({"data": [], "metadata": {"error": "Invalid limit"}}),
        "upstream_reported_error",
        ["Invalid limit"],
    ),
    "fng:stale": (
        "kpi-fear-greed.json",
        ok_json(fng((YESTERDAY, "48"), (YESTERDAY - timedelta(days=1), "50"))),
        "stale",
        ["newest entry", "2026-11-23", "2026-11-24"],
    ),
    "usdt:null-share": (
        "kpi-usdt-dominance.json",
        ok_json(global_figures(None)),
        "bad_upstream_answer",
        ["data.market_cap_percentage.usdt is null"],
    ),
    "usdt:no-data": (
        "kpi-usdt-dominance.json",
        ok_json({"status": {"error_code": 10002}}),
        "bad_upstream_answer",
        ["no field data.market_cap_percentage.usdt"],
    ),
    "usdt:over-100": (
        "kpi-usdt-dominance.json",
        ok_json(global_figures(104.0)),
        "bad_upstream_answer",
        ["percentage"],
    ),
    "usdt:stale": (
        "kpi-usdt-dominance.json",
        ok_json(global_figures(4.5, YESTERDAY_NOON)),
        "stale",
        ["2026-11-23", "2026-11-24"],
    ),
}
for case_id, (name, reply, _, _) in FIELD_CASES.items():
    case(case_id, name, {TODAY_PATH[name]: reply})

# A past day from the range endpoint that is unusable.
PAST_CASES: dict[str, tuple[str, dict[str, Reply], str, list[str]]] = {
    "btc:past-503": (
        "kpi-btc-price.json",
        {chart("bitcoin"): Reply(status=503, body='{"prices": []}')},
        "upstream_status",
        ["HTTP 503", "market_chart/range"],
    ),
    "btc:past-401": (
        "kpi-btc-price.json",
        {
            chart("bitcoin"): ok_json(
                {
                    "error": {
                        "status": {
                            "error_code": 10012,
                            "error_message": "Your request exceeds the allowed time range.",
                        }
                    }
                },
                401,
            )
        },
        "upstream_status",
        ["HTTP 401", "allowed time range"],
    ),
    "btc:past-html": (
        "kpi-btc-price.json",
        {chart("bitcoin"): Reply(body="<html>oops</html>", content_type="text/html")},
        "upstream_not_json",
        ["text/html"],
    ),
    "btc:past-stale": (
        "kpi-btc-price.json",
        {chart("bitcoin"): past_chart("bitcoin", 1.0, PAST - timedelta(days=1))},
        "stale",
        ["newest point", "2026-11-20", "2026-11-21"],
    ),
    "btc:past-none": (
        "kpi-btc-price.json",
        {chart("bitcoin"): ok_json({"prices": []})},
        "no_observation",
        ["no price on 2026-11-21"],
    ),
    "btc:past-null": (
        "kpi-btc-price.json",
        {
            chart("bitcoin"): ok_json(
                {"prices": [[unix(midnight(PAST) + timedelta(hours=12)) * 1000, None]]}
            )
        },
        "bad_upstream_answer",
        ["prices[0][1]"],
    ),
    "btc:past-no-prices": (
        "kpi-btc-price.json",
        {chart("bitcoin"): ok_json({"error": "coin not found"})},
        "bad_upstream_answer",
        ["no field prices"],
    ),
    "ratio:past-one-leg": (
        "kpi-eth-btc-ratio.json",
        {
            chart("ethereum"): past_chart("ethereum", 3000.0),
            chart("bitcoin"): Reply(
                status=500, body="upstream exploded", content_type="text/plain"
            ),
        },
        "upstream_status",
        ["coins/bitcoin", "HTTP 500", '"upstream exploded"'],
    ),
    "fng:past-missing": (
        "kpi-fear-greed.json",
        {FNG: ok_json(fng(*[(TODAY - timedelta(days=d), "50") for d in range(6) if d != 3]))},
        "no_observation",
        ["no entry for 2026-11-21"],
    ),
    "fng:past-short": (
        "kpi-fear-greed.json",
        {FNG: ok_json(fng((TODAY, "50")))},
        "bad_upstream_answer",
        ["does not reach back to 2026-11-21"],
    ),
}
for case_id, (name, upstream, _, _) in PAST_CASES.items():
    case(case_id, name, upstream, day=PAST)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return run_cases(CASES)


# --- shape ---------------------------------------------------------------------------------


def test_every_n8n_kpi_of_the_examples_and_the_bundled_registry_has_a_workflow() -> None:
    assert {p.name for p in EXPORTS} >= set(TODAY_VALUE)
    hooks = {_nodes_by_type(_load(p))[WEBHOOK]["parameters"]["path"] for p in EXPORTS}
    assert set(_n8n_kpis()) <= hooks, f"n8n KPIs without a workflow: {set(_n8n_kpis()) - hooks}"


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_export_is_an_importable_webhook_workflow(path: Path) -> None:
    workflow = _load(path)
    assert re.fullmatch(r"[A-Za-z0-9]{16}", workflow["id"]), workflow["id"]
    assert isinstance(workflow["name"], str) and workflow["name"]
    assert workflow["active"] is False
    assert workflow["settings"] == {"executionOrder": "v1"}
    for node in workflow["nodes"]:
        assert {"id", "name", "type", "typeVersion", "position", "parameters"} <= set(node)
    names = [node["name"] for node in workflow["nodes"]]
    assert len(names) == len(set(names)), "node names must be unique (connections use them)"
    assert len({node["id"] for node in workflow["nodes"]}) == len(names)

    nodes = _nodes_by_type(workflow)
    assert set(nodes) == {WEBHOOK, CODE, IF, HTTP, RESPOND}
    webhook = nodes[WEBHOOK]
    hook = webhook["parameters"]
    assert hook["httpMethod"] == "POST"
    assert hook["responseMode"] == "responseNode"
    assert hook["authentication"] == "headerAuth"
    assert webhook["credentials"] == {
        "httpHeaderAuth": {"id": "dixWebhookAuth01", "name": "Daily Index webhook auth"}
    }
    assert re.fullmatch(r"kpi/[a-z0-9-]+", hook["path"]), hook["path"]
    assert webhook["name"] == "Webhook", "the Code nodes read $('Webhook')"
    assert nodes[RESPOND]["parameters"]["respondWith"] == "firstIncomingItem"
    assert nodes[RESPOND]["parameters"]["options"]["responseCode"] == 200

    # Webhook → Plan request → Ask upstream? → (true) HTTP → Build KPI answer → Respond;
    # (false) straight to Build KPI answer, which answers with the plan's reason.
    codes = [n["name"] for n in workflow["nodes"] if n["type"] == CODE]
    assert sorted(codes) == ["Build KPI answer", "Plan request"]
    http, ask = nodes[HTTP]["name"], nodes[IF]["name"]
    link = lambda *targets: {"main": [[{"node": t, "type": "main", "index": 0}] for t in targets]}  # noqa: E731
    assert workflow["connections"] == {
        "Webhook": link("Plan request"),
        "Plan request": link(ask),
        ask: link(http, "Build KPI answer"),
        http: link("Build KPI answer"),
        "Build KPI answer": link("Respond to Webhook"),
    }
    (condition,) = nodes[IF]["parameters"]["conditions"]["conditions"]
    assert condition["leftValue"] == "={{ $json.ask }}"
    assert condition["operator"] == {"type": "boolean", "operation": "true", "singleValue": True}


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_http_request_node_gives_the_full_response_never_fails_and_times_out(path: Path) -> None:
    node = _nodes_by_type(_load(path))[HTTP]
    assert node["onError"] == "continueRegularOutput"  # a network error reaches the Code node
    params = node["parameters"]
    assert params["method"] == "GET"
    assert (
        not params.get("sendQuery") and not params.get("sendHeaders") and not params.get("sendBody")
    )
    assert params["options"]["timeout"] == 10_000
    assert params["options"]["response"] == {
        "response": {
            "fullResponse": True,
            "neverError": True,
            "responseFormat": "text",
            "outputPropertyName": "body",
        }
    }


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_upstream_base_url_comes_from_env_with_the_public_api_as_default(path: Path) -> None:
    node = _nodes_by_type(_load(path))[HTTP]
    upstream = node["name"].removesuffix(" request")
    variable, default = BASE_URLS[upstream]
    assert node["parameters"]["url"] == (
        f"={{{{ ($env.{variable} || '{default}').replace(/\\/+$/, '') + $json.request }}}}"
    )


def _shared_blocks(code: str) -> dict[str, str]:
    found = re.findall(r"// ---- shared: (.+?) ----\n.*?// ---- end shared: \1 ----\n", code, re.S)
    blocks = dict.fromkeys(found, "")
    for name in found:
        start = code.index(f"// ---- shared: {name} ----")
        end = code.index(f"// ---- end shared: {name} ----")
        blocks[name] = code[start:end]
    return blocks


def test_shared_code_is_the_same_in_every_workflow() -> None:
    """What the Code nodes share is copied verbatim: a fix in one must reach them all."""
    seen: dict[str, tuple[str, str]] = {}
    counts: dict[str, int] = {}
    for path in EXPORTS:
        for node in _load(path)["nodes"]:
            if node["type"] != CODE:
                continue
            for name, text in _shared_blocks(node["parameters"]["jsCode"]).items():
                counts[name] = counts.get(name, 0) + 1
                first = seen.setdefault(name, (f"{path.name}/{node['name']}", text))
                assert text == first[1], (
                    f"shared block {name!r} of {path.name} differs from {first[0]}"
                )
    assert counts.get("plan") == counts.get("answer") == len(EXPORTS)
    assert counts.get("coingecko range") == 2


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


def test_readme_stands_alone_and_documents_the_interface() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = (README.parent / target).resolve()
        assert resolved.is_relative_to(ROOT) and resolved.exists(), f"README links {target}"
    assert "shared/" not in text and "DESIGN.md" not in text
    for needed in [
        "KPI_COINGECKO_BASE_URL",
        "KPI_ALTERNATIVE_ME_BASE_URL",
        "N8N_BLOCK_ENV_ACCESS_IN_NODE=false",
        "n8n/local.sh",
        "import:workflow",
        "publish:workflow",
        "n8nExecutionId",
        SIMPLE,
        GLOBAL,
        "/market_chart/range",
        "/fng/",
        "include_last_updated_at=true",
    ]:
        assert needed in text, f"n8n/README.md does not mention {needed}"
    for path in EXPORTS:
        workflow = _load(path)
        assert f"workflows/{path.name}" in text
        assert workflow["id"] in text
        assert _nodes_by_type(workflow)[WEBHOOK]["parameters"]["path"] in text


# --- the workflows answer by contract ------------------------------------------------------


@pytest.mark.parametrize("name", list(TODAY_VALUE))
def test_today_is_answered_with_the_value_its_time_and_the_trace(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[f"{name}:today"]
    update = a_value(outcome)
    value, unit = TODAY_VALUE[name]
    assert update.value == pytest.approx(value)
    assert update.unit == unit and update.source
    assert update.day == TODAY
    assert update.metadata["traceId"] == outcome.trigger["traceId"]
    assert update.metadata["n8nExecutionId"] == EXECUTION_ID
    assert update.metadata["n8nWorkflowId"] == _export(name)["id"]
    assert update.metadata["triggerTimestamp"] == outcome.trigger["timestamp"]
    assert len(outcome.requests) == 1
    assert outcome.visited[-1] == "Respond to Webhook"


def test_today_answers_carry_the_observations_own_time(outcomes: dict[str, Outcome]) -> None:
    at = lambda seconds: datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert a_value(outcomes["kpi-btc-price.json:today"]).timestamp == at(UPDATED)
    # The ratio is as old as its older leg (bitcoin's, 40 s before ether's).
    assert a_value(outcomes["kpi-eth-btc-ratio.json:today"]).timestamp == at(UPDATED - 40)
    assert a_value(outcomes["kpi-fear-greed.json:today"]).timestamp == "2026-11-24T00:00:00Z"
    assert a_value(outcomes["kpi-usdt-dominance.json:today"]).timestamp == at(UPDATED)


EXPECTED_TODAY_REQUESTS = {
    "kpi-btc-price.json": [
        (SIMPLE, {"ids": "bitcoin", "vs_currencies": "usd", "include_last_updated_at": "true"})
    ],
    "kpi-eth-btc-ratio.json": [
        (
            SIMPLE,
            {"ids": "ethereum,bitcoin", "vs_currencies": "usd", "include_last_updated_at": "true"},
        )
    ],
    "kpi-fear-greed.json": [(FNG, {"limit": "2"})],
    "kpi-usdt-dominance.json": [(GLOBAL, {})],
}


@pytest.mark.parametrize("name", list(TODAY_VALUE))
def test_requests_go_to_the_public_api_or_the_env_base_url(
    outcomes: dict[str, Outcome], name: str
) -> None:
    default = ALTERNATIVE_ME if name == "kpi-fear-greed.json" else COINGECKO
    expected = EXPECTED_TODAY_REQUESTS[name]
    for case_id, base in [(f"{name}:today", default), (f"{name}:env", "http://127.0.0.1:8999")]:
        asked = [query_of(url) for url in outcomes[case_id].requests]
        assert asked == [(base + path, query) for path, query in expected], case_id
        a_value(outcomes[case_id])


def test_a_past_price_comes_from_the_range_endpoint_at_the_triggers_time(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["btc:past"]
    start = unix(midnight(PAST))
    range_query = {"vs_currency": "usd", "from": str(start), "to": str(start + 86399)}
    assert [query_of(u) for u in outcome.requests] == [(COINGECKO + chart("bitcoin"), range_query)]
    update = a_value(outcome)
    # The hourly point closest to the trigger's 12:00 UTC: base + 12.
    assert update.value == 90012.0 and update.day == PAST
    assert update.timestamp == f"{PAST}T12:00:00Z"
    assert update.metadata["pointTime"] == (start + 12 * 3600) * 1000


def test_a_past_ratio_divides_both_coins_points_of_that_day(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["ratio:past"]
    start = unix(midnight(PAST))
    range_query = {"vs_currency": "usd", "from": str(start), "to": str(start + 86399)}
    assert [query_of(u) for u in outcome.requests] == [
        (COINGECKO + chart("ethereum"), range_query),
        (COINGECKO + chart("bitcoin"), range_query),
    ]
    update = a_value(outcome)
    assert update.value == pytest.approx(3012.0 / 60012.0) and update.day == PAST


def test_fear_and_greed_answers_the_triggers_day_in_a_backfill(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["fng:past"]
    assert [query_of(u) for u in outcome.requests] == [(ALTERNATIVE_ME + FNG, {"limit": "5"})]
    update = a_value(outcome)
    assert update.value == 43.0 and update.day == PAST
    assert update.timestamp == f"{PAST}T00:00:00Z"


def test_usdt_dominance_has_no_history_and_asks_nothing_for_a_past_day(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["usdt:past"]
    assert outcome.requests == []
    update = an_error(outcome, "no_history")
    assert str(PAST) in update.error and "/api/v3/global" in update.error
    assert update.retryable is False


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("name", list(TODAY_VALUE))
def test_an_unusable_upstream_answer_is_an_error_quoting_it(
    outcomes: dict[str, Outcome], name: str, fault: str
) -> None:
    _, code, mentions = FAULTS[fault]
    update = an_error(outcomes[f"{name}:{fault}"], code)
    for words in mentions:
        assert words in update.error, update.error
    if code in ("upstream_status", "upstream_not_json", "upstream_invalid_json"):
        assert f"answered HTTP {FAULTS[fault][0].status} " in update.error
        assert update.metadata["upstreamStatus"] == FAULTS[fault][0].status
    if fault == "html":  # the body's start, cut at 200 characters
        assert f'not JSON: "{FAULTS[fault][0].body[:200]}"… (n8n' in update.error
    assert update.retryable is (fault != "404")


@pytest.mark.parametrize("name", list(TODAY_VALUE))
def test_blocked_env_access_is_an_error_that_says_how_to_start_n8n(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[f"{name}:env-blocked"]
    update = an_error(outcome, "upstream_unreachable")
    assert "access to env vars denied" in update.error
    assert "N8N_BLOCK_ENV_ACCESS_IN_NODE=false" in update.error
    assert outcome.requests == []


@pytest.mark.parametrize("name", list(TODAY_VALUE))
def test_a_request_that_is_not_a_trigger_asks_no_upstream(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[f"{name}:bad-trigger"]
    assert outcome.requests == []
    assert outcome.answer["errorCode"] == "bad_trigger"
    assert outcome.answer["traceId"] == outcome.trigger["traceId"]
    # Its timestamp is not a date: the contract refuses the answer too, naming the field.
    assert (
        isinstance(outcome.update, KPIErrorUpdate) and outcome.update.error_code == "invalid_value"
    )


@pytest.mark.parametrize("case_id", list(FIELD_CASES))
def test_a_missing_null_or_impossible_field_or_a_stale_point_is_an_error_naming_it(
    outcomes: dict[str, Outcome], case_id: str
) -> None:
    _, _, code, mentions = FIELD_CASES[case_id]
    update = an_error(outcomes[case_id], code)
    for words in mentions:
        assert words in update.error, update.error
    if code == "stale":
        assert update.retryable is True  # today's value may still be published
        assert update.metadata["observedOn"] == "2026-11-23"


@pytest.mark.parametrize("case_id", list(PAST_CASES))
def test_an_unusable_past_day_is_an_error(outcomes: dict[str, Outcome], case_id: str) -> None:
    _, _, code, mentions = PAST_CASES[case_id]
    update = an_error(outcomes[case_id], code)
    for words in mentions:
        assert words in update.error, update.error
    if code in ("stale", "no_observation"):
        assert update.retryable is False  # a past day's data will not come later
