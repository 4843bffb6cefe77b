"""An n8n answer that echoes the webhook's auth value stores nothing that carries it.

A real KPI run (`dg.materialize` of the KPI assets, local store, an ephemeral instance)
against the n8n imitation on 127.0.0.1, whose workflows echo the auth header back in every
place an answer has: the value's metadata, its unit, its source, an error text, a field name.
Afterwards every stored byte (raw payloads, series, fetch status) and every event of the run
(materialisations, observations, logs) is searched for the secret, JSON-escaped or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from daily_index.defs.kpis import build_kpi_assets, kpi_key
from daily_index.defs.resources import KpiSourcesResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index.replay import DEMO_DAY
from daily_index_tests.n8n_imitation import N8nImitation, kpi_answer, workflow
from daily_index_tests.sources.support import spec

HEADER = "X-Daily-Index-Key"
# A quote and a backslash: JSON text carries them escaped, the decoded payload does not.
SECRET = 'n8n-auth-"value"\\with-escapes-5f2c'
PLAIN_SECRET = "n8n-auth-plain-value-88d1"


def echo(place: str):
    """A workflow answer that puts the auth value it received into `place`."""

    def answer(trigger: dict, headers: dict[str, str]) -> tuple[int, dict]:
        seen = headers[HEADER.lower()]
        _, body = kpi_answer(trigger, headers)
        if place == "metadata":
            body["metadata"] = {"debug": {"headers": {HEADER: seen}}}
        elif place == "unit":
            body["unit"] = seen
        elif place == "source":
            body["source"] = f"n8n ({seen})"
        elif place == "key":
            body["metadata"] = {seen: "header"}
        elif place == "error":
            body = {k: v for k, v in body.items() if k != "value"}
            body |= {"error": f"upstream refused key {seen}", "errorCode": "upstream"}
        elif place == "none":
            pass
        return 200, body

    return answer


PLACES = ["metadata", "unit", "source", "key", "error"]


def kpi(place: str) -> KpiSpec:
    raw = spec("usdt_dominance").model_dump(by_alias=True) | {
        "id": f"echo_{place}",
        "name": f"Echo in {place}",
        "source": {"kind": "n8n", "params": {"webhook": f"kpi/{place}"}},
    }
    return KpiSpec.model_validate(raw)


def stored_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("secret", [SECRET, PLAIN_SECRET], ids=["escaped", "plain"])
def test_an_echoed_auth_value_is_stored_nowhere(tmp_path, secret):
    places = [*PLACES, "none"]
    flows = [workflow(f"wf-{p}", f"Echo {p}", [f"kpi/{p}"]) for p in places]
    kpis = [kpi(p) for p in places]
    store = tmp_path / "store"
    with N8nImitation(flows) as n8n:
        # The trigger does not say which webhook it was sent to: the KPI id does.
        n8n.answer = lambda trigger, headers: echo(trigger["kpiId"].removeprefix("echo_"))(
            trigger, headers
        )
        sources = KpiSourcesResource(
            n8n_base_url=n8n.url,
            n8n_auth_header=HEADER,
            n8n_auth_value=secret,
            today=DEMO_DAY.isoformat(),
            max_attempts=1,
        )
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [build_kpi_assets(kpis=kpis)],
            partition_key=DEMO_DAY.isoformat(),
            instance=instance,
            resources={"sources": sources, "storage": StorageResource(local_dir=str(store))},
            raise_on_error=False,
        )
        assert sum(n8n.executions.values()) == len(places)  # every workflow really answered

    # The clean answer landed, so the search below looks at a store that was written.
    landed = {e.asset_key for e in result.get_asset_materialization_events()}
    assert landed == {kpi_key("echo_none")}
    files = stored_bytes(store)
    assert any("echo_none" in name for name in files), sorted(files)
    forms = {secret, json.dumps(secret)[1:-1], secret.replace("\\", "\\\\")}
    for name, data in files.items():
        text = data.decode("utf-8", errors="replace")
        assert not any(form in text for form in forms), name
    for entry in instance.all_logs(result.run_id):
        text = dg.serialize_value(entry)
        assert not any(form in text for form in forms), entry.dagster_event_type
    # Each echoing KPI-day failed as `echoed_secret`, a reason that names no secret.
    failures = [
        entry
        for entry in instance.all_logs(result.run_id)
        if "echoed_secret" in dg.serialize_value(entry)
    ]
    assert failures
