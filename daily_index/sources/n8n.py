"""n8n webhooks: POST the IndividualKPITrigger, validate the answer through the contract.

The answer must echo the trigger's traceId and kpiId and carry a timestamp of the trigger's
day (`parse_update` checks all three); its timestamp is the observation's own time.
"""

from __future__ import annotations

from daily_index.contract import (
    IndividualKPITrigger,
    KPIErrorUpdate,
    KPIUpdate,
    parse_update,
)
from daily_index.sources.base import FetchRequest, SourceSettings
from daily_index.sources.http import Http, SourceError


def trigger_for(request: FetchRequest) -> IndividualKPITrigger:
    spec = request.spec
    return IndividualKPITrigger(
        traceId=request.trace_id,
        kpiId=spec.id,
        timestamp=request.timestamp,
        kpiType=spec.type,
        metadata={
            "kpiName": spec.name,
            "unit": spec.unit,
            "category": spec.metadata.category,
            "day": request.day.isoformat(),
        },
    )


async def fetch(request: FetchRequest, settings: SourceSettings, http: Http) -> KPIUpdate:
    spec = request.spec
    webhook = spec.source.params.get("webhook")
    if not isinstance(webhook, str) or not webhook:
        raise SourceError(
            f"registry: source param 'webhook' of KPI {spec.id!r} is missing", "bad_params"
        )
    base = (spec.source.base_url or settings.n8n_base_url or "").rstrip("/")
    if not base:
        raise SourceError(
            "no n8n base URL: set DAILY_INDEX_N8N_BASE_URL to the n8n instance", "missing_config"
        )
    headers = {}
    if settings.n8n_auth_header and settings.n8n_auth_value:
        headers[settings.n8n_auth_header] = settings.n8n_auth_value
    body = await http.post_json(
        f"{base}/webhook/{webhook.lstrip('/')}",
        trigger_for(request).to_wire(),
        family="n8n",
        headers=headers,
    )
    update = parse_update(
        body,
        kpi_id=spec.id,
        trace_id=request.trace_id,
        timestamp=request.timestamp,
        kpi_type=spec.type,
    )
    if isinstance(update, KPIErrorUpdate):
        if update.error_code == "stale" and not request.is_past:
            # Today's value may still come (the workflow's inputs lag): worth asking again.
            update = update.model_copy(update={"retryable": True})
        return update
    observed = {"observedOn": update.day.isoformat(), "observedAt": update.timestamp}
    changes: dict[str, object] = {"metadata": {**update.metadata, **observed}}
    if update.unit is None and spec.unit:
        changes["unit"] = spec.unit
    return update.model_copy(update=changes)
