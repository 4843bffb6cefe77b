"""`daily-index doctor`: the setup checked the way a run would use it, never showing a secret.

Resources are built from the environment and their `EnvVar`s resolved exactly as for a
run (`dg.build_resources`), so an S3/R2 store is reached with the real keys. The store is
checked for real: a probe object is written, read back and deleted. Each source family an
enabled KPI uses gets one request; n8n is asked whether it is healthy and whether every
registry n8n KPI's webhook is served (`n8n_control.check_n8n`: through its API with
DAILY_INDEX_N8N_API_KEY, else a GET per webhook, which runs no workflow). `offline` skips
every request.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx

from daily_index.n8n_control import check_n8n
from daily_index.registry import Registry, RegistryError, load_registry, registry_path

PROBE_PREFIX = "doctor/probe-"
REQUEST_TIMEOUT_S = 5.0
REJECTED = (400, 401, 403, 407)
"""Answers that mean our request or credentials were refused (FRED: 400 for a bad key)."""

# One cheap request per source family: (family, path). FRED's adds the series and the key.
PROBES: dict[str, tuple[str, str]] = {
    "coingecko_price": ("coingecko", "/ping"),
    "coingecko_global": ("coingecko", "/ping"),
    "alternative_me_fng": ("alternative_me", "/fng/?limit=1"),
    "binance_kline": ("binance_spot", "/api/v3/ping"),
    "binance_funding": ("binance_futures", "/fapi/v1/time"),
    "defillama_stablecoins": ("defillama_stablecoins", "/stablecoins?includePrices=false"),
    "fred": ("fred", "/fred/series"),
}


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table: `ok` True (fine), None (off), False (a problem)."""

    name: str
    ok: bool | None
    detail: str


def _hide(text: str, secrets: list[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text


class _Unresolved(ValueError):
    """A resource's EnvVar could not be read."""


def _resolved(resource: dg.ConfigurableResource) -> Any:
    """The resource with its EnvVars read from the process environment, as a run gets it."""
    try:
        with dg.build_resources({"resource": resource}) as built:
            return built.resource
    except dg.DagsterError as exc:
        # Dagster's message holds a stack trace; the variable's name is what helps.
        missing = re.search(r'environment variable "([^"]+)" which is not set', str(exc))
        reason = f"{missing.group(1)} is not set" if missing else str(exc).splitlines()[0]
        raise _Unresolved(f"cannot build the resource from the environment: {reason}") from None


def check_store(env: Mapping[str, str]) -> Check:
    """Build the store as a run does and write, read back and delete a probe object."""
    from daily_index.defs.resources import ConfigurationError, storage_from_env

    secret = env.get("DAILY_INDEX_S3_SECRET_ACCESS_KEY")
    try:
        store = _resolved(storage_from_env(env)).get_store()
    except (ConfigurationError, _Unresolved) as exc:
        return Check("storage", False, _hide(str(exc), [secret]))
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}.txt"
    data = f"daily-index doctor probe {time.time()}".encode()
    step = "write"
    try:
        store.put(key, data, content_type="text/plain")
        step = "read back"
        if store.read_bytes(key) != data:
            return Check("storage", False, f"{store.description}: the probe {key} read back wrong")
        step = "delete"
        store.delete(key)
    except Exception as exc:  # any failure of the store is what this check reports
        detail = _hide(str(exc) or type(exc).__name__, [secret])
        return Check("storage", False, f"probe {step} failed: {detail}")
    return Check(
        "storage",
        True,
        f"{store.description} reachable: a probe object written, read back and deleted",
    )


def _get(client: httpx.Client, url: str, shown: str, secrets: list[str | None], **kw) -> Check:
    begun = time.perf_counter()
    try:
        response = client.get(url, **kw)
    except httpx.HTTPError as exc:
        reason = _hide(str(exc) or type(exc).__name__, secrets)
        return Check(shown, False, f"no answer ({type(exc).__name__}: {reason})")
    ms = (time.perf_counter() - begun) * 1000
    status = response.status_code
    if status in REJECTED:
        return Check(shown, False, f"HTTP {status}: key or credentials rejected?")
    if status >= 500:
        return Check(shown, False, f"HTTP {status}: the service is failing")
    # Any other answer (a 404 on the probe path, a 429) shows the service is there.
    return Check(shown, True, f"reachable, HTTP {status} in {ms:.0f} ms")


def check_sources(env: Mapping[str, str], registry: Registry) -> list[Check]:
    """One request to each source family (and base URL) an enabled KPI uses (n8n aside)."""
    from daily_index.defs.resources import ConfigurationError, sources_from_env

    try:
        settings = _resolved(sources_from_env(env)).settings()
    except (ConfigurationError, _Unresolved) as exc:
        return [Check("sources", False, str(exc))]
    secrets = [settings.fred_api_key, settings.n8n_auth_value]
    targets: dict[tuple[str, str], tuple[str, dict]] = {}
    for spec in registry.enabled(dict(env)):
        kind = spec.source.kind
        if kind == "n8n":
            continue  # check_n8n asks n8n
        if kind == "derived":
            continue  # computed from stored series: nothing to reach
        family, path = PROBES[kind]
        base = settings.base_url(spec, family)
        kwargs: dict[str, Any] = {}
        if kind == "fred":
            # FRED answers 400 to a key it does not know: the one request checks the key.
            kwargs["params"] = {
                "series_id": spec.source.params.get("series_id", ""),
                "api_key": settings.fred_api_key or "",
                "file_type": "json",
            }
        targets.setdefault((family, f"{base}{path}"), (family, kwargs))
    if not targets:
        return [Check("sources", None, "no enabled KPI uses a network source")]
    checks = []
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, follow_redirects=True) as client:
        for (family, url), (_, kwargs) in sorted(targets.items()):
            shown = url.split("?", 1)[0]
            check = _get(client, url, f"source {family}", secrets, **kwargs)
            checks.append(Check(check.name, check.ok, f"{shown}: {check.detail}"))
    return checks


def check_subscribers(env: Mapping[str, str]) -> Check:
    from daily_index.delivery import SubscriberFileError, load_subscribers, problems_summary

    file = env.get("DAILY_INDEX_SUBSCRIBERS_FILE")
    if not file:
        outbox = env.get("DAILY_INDEX_OUTBOX_DIR", ".data/outbox")
        return Check("subscribers", None, f"no subscriber file: reports go to {outbox}/")
    try:
        loaded = load_subscribers(file)
    except SubscriberFileError as exc:
        return Check("subscribers", False, str(exc).splitlines()[0])
    detail = f"{file}: {len(loaded.subscribers)} subscribers"
    if loaded.problems:
        summary = problems_summary(loaded.problems, listed=1)
        detail += (
            f"; {summary['count']} skipped (lines {summary['lines'][:200]}), "
            f"first: {summary['first'][0]}"
        )
    return Check("subscribers", not loaded.problems, detail)


def run_checks(env: Mapping[str, str], *, offline: bool = False) -> list[Check]:
    """Every check, in the order the doctor prints them."""
    from daily_index.defs.resources import ConfigurationError, sources_from_env
    from daily_index.report.analysis import LlmSettings

    checks: list[Check] = []
    registry: Registry | None = None
    try:
        registry = load_registry(registry_path(env))
        checks.append(
            Check(
                "KPI registry",
                True,
                f"{registry_path(env)} v{registry.version}: "
                f"{len(registry.enabled(dict(env)))}/{len(registry.kpis)} KPIs enabled",
            )
        )
    except RegistryError as exc:
        checks.append(Check("KPI registry", False, str(exc).splitlines()[0]))
    checks.append(check_store(env))
    try:
        sources = sources_from_env(env)
        if not sources.n8n_base_url or offline:
            checks.append(
                Check(
                    "n8n",
                    None,
                    f"{sources.n8n_base_url}: not asked (--offline)"
                    if sources.n8n_base_url
                    else "not configured (DAILY_INDEX_N8N_BASE_URL); n8n KPIs off",
                )
            )
        else:
            checks.extend(Check(f.name, f.ok, f.detail) for f in check_n8n(env))
        checks.append(
            Check(
                "n8n auth",
                True if sources.n8n_auth_header else None,
                f"header {sources.n8n_auth_header} set (value hidden)"
                if sources.n8n_auth_header
                else "no webhook authentication",
            )
        )
        fred = bool(env.get("FRED_API_KEY"))
        checks.append(
            Check("FRED", True if fred else None, "key set (hidden)" if fred else "no FRED_API_KEY")
        )
    except ConfigurationError as exc:
        checks.append(Check("sources", False, str(exc)))
    if registry is not None:
        if offline:
            checks.append(Check("source requests", None, "skipped (--offline)"))
        else:
            checks.extend(check_sources(env, registry))
    home = env.get("DAGSTER_HOME") or ".dagster_home (default of `daily-index run`)"
    checks.append(Check("Dagster instance", True, f"DAGSTER_HOME={home}"))
    try:
        llm = LlmSettings.from_env(env)
        checks.append(
            Check(
                "analyst",
                True if llm else None,
                f"LLM {llm.model} at {llm.base_url} (key hidden)"
                if llm
                else "no LLM key: the rule-based analyst writes the analysis",
            )
        )
    except ValueError as exc:
        checks.append(Check("analyst", False, str(exc)))
    checks.append(check_subscribers(env))
    found = shutil.which("pdftoppm")
    checks.append(
        Check(
            "PDF preview",
            True if found else None,
            "pdftoppm found"
            if found
            else "pdftoppm missing (apt-get install poppler-utils): no page-1 preview",
        )
    )
    return checks
