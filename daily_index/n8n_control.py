"""`daily-index n8n status|activate|deactivate [WORKFLOW]`: n8n's workflows from the command line.

Through n8n's public REST API (`/api/v1`, header `X-N8N-API-KEY`): `GET /workflows` read page
by page (`limit`, `cursor` / `nextCursor`), `POST /workflows/{id}/activate` and
`/deactivate` (n8n 2.x calls an active workflow "published"; its public API keeps these two
routes). The key comes from DAILY_INDEX_N8N_API_KEY and is never printed.

`status` lists the workflows (name, id, active, webhook paths) and then the registry's n8n
KPIs whose webhook no active workflow serves: a missing workflow, an inactive one, or one that
listens with another HTTP method. Exit codes: 0 all served, 1 a KPI is not served or n8n
failed, 2 configuration (no base URL, no key, a key n8n refuses, an unknown WORKFLOW).

`check_n8n` is what `daily-index doctor` runs: n8n's health check, then, with a key, the
same status; without one, each registry webhook is asked with a GET, which n8n answers
without running anything: "This webhook is not registered for GET requests. Did you mean to
make a POST request?" when a workflow serves it, "The requested webhook ... is not
registered." when none does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
import httpx

from daily_index.registry import KpiSpec, RegistryError, load_registry, registry_path

API_KEY_ENV = "DAILY_INDEX_N8N_API_KEY"
BASE_URL_ENV = "DAILY_INDEX_N8N_BASE_URL"
API_KEY_HEADER = "X-N8N-API-KEY"
PAGE_LIMIT = 250  # the public API's largest page
MAX_PAGES = 400  # 100,000 workflows: far beyond any instance; the loop stays bounded
TIMEOUT_S = 10.0
WEBHOOK_NODE = "n8n-nodes-base.webhook"
# n8n's answer to a GET on a path that only a POST webhook serves (WebhookNotFoundError).
SERVED_FOR_POST = "Did you mean to make a POST request"


class N8nControlError(Exception):
    """A failure the command reports in one line; `exit_code` 2 for configuration."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class Webhook:
    method: str
    path: str


@dataclass(frozen=True)
class Workflow:
    """A workflow as the public API lists it, with the webhooks it serves when active."""

    id: str
    name: str
    active: bool
    archived: bool = False
    webhooks: tuple[Webhook, ...] = ()

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Workflow:
        # A published workflow serves its active version's nodes, which may differ from the
        # draft in `nodes` (n8n 2.x); older answers have only `nodes`.
        version = raw.get("activeVersion")
        nodes = raw.get("nodes") or []
        if raw.get("active") and isinstance(version, Mapping) and version.get("nodes"):
            nodes = version["nodes"]
        hooks = []
        for node in nodes:
            if not isinstance(node, Mapping) or node.get("type") != WEBHOOK_NODE:
                continue
            if node.get("disabled"):
                continue
            params = node.get("parameters") or {}
            path = str(params.get("path") or node.get("webhookId") or "").strip("/")
            # The Webhook node's default method is GET.
            method = str(params.get("httpMethod") or "GET").upper()
            if path:
                hooks.append(Webhook(method, path))
        return cls(
            id=str(raw.get("id", "")),
            name=str(raw.get("name", "")),
            active=bool(raw.get("active")),
            archived=bool(raw.get("isArchived")),
            webhooks=tuple(hooks),
        )

    def paths(self) -> str:
        return ", ".join(f"{h.method} {h.path}" for h in self.webhooks) or "-"


@dataclass(frozen=True)
class KpiProblem:
    """A registry KPI that no active workflow serves, and why."""

    kpi_id: str
    webhook: str
    reason: str


def _hide(text: str, secret: str | None) -> str:
    return text.replace(secret, "****") if secret else text


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or "(empty body)"
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"][:200]
    return str(body)[:200]


@dataclass
class N8nApi:
    """n8n's public API at `base_url` with an API key (held, never shown)."""

    base_url: str
    api_key: str = field(repr=False)
    timeout_s: float = TIMEOUT_S

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            headers={API_KEY_HEADER: self.api_key, "Accept": "application/json"},
            timeout=self.timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> N8nApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"{self.base_url}/api/v1{path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            detail = _hide(str(exc) or type(exc).__name__, self.api_key)
            raise N8nControlError(
                f"n8n's API at {where} did not answer ({type(exc).__name__}: {detail})"
            ) from None
        if response.status_code in (401, 403):
            raise N8nControlError(
                f"n8n refused the API key (HTTP {response.status_code} from {where}: "
                f"{_hide(_message(response), self.api_key)}); check {API_KEY_ENV} "
                "(n8n: Settings > n8n API)",
                exit_code=2,
            )
        if response.status_code >= 400:
            raise N8nControlError(
                f"HTTP {response.status_code} from {where}: "
                f"{_hide(_message(response), self.api_key)}"
            )
        try:
            return response.json()
        except ValueError:
            raise N8nControlError(
                f"{where} answered HTTP {response.status_code} without JSON "
                f"(starts with {response.text[:60]!r}); is {BASE_URL_ENV} n8n's address?"
            ) from None

    def workflows(self) -> list[Workflow]:
        """Every workflow, page after page."""
        found: list[Workflow] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_LIMIT, "excludePinnedData": "true"}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", "/workflows", params=params)
            if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
                raise N8nControlError(
                    f"{self.base_url}/api/v1/workflows answered without a 'data' list"
                )
            found.extend(Workflow.from_api(raw) for raw in page["data"] if isinstance(raw, dict))
            cursor = page.get("nextCursor") or None
            if cursor is None:
                return found
            if cursor in seen:
                raise N8nControlError("n8n's API gave the same nextCursor twice; stopped")
            seen.add(cursor)
        raise N8nControlError(f"more than {MAX_PAGES} pages of workflows; stopped")

    def set_active(self, workflow_id: str, active: bool) -> Workflow:
        action = "activate" if active else "deactivate"
        raw = self._call("POST", f"/workflows/{workflow_id}/{action}")
        if not isinstance(raw, Mapping):
            raise N8nControlError(f"n8n's answer to {action} is not a workflow object")
        return Workflow.from_api(raw)


def find_workflow(workflows: Iterable[Workflow], ref: str) -> Workflow:
    """The workflow whose id is `ref`, else whose name is (exactly, then ignoring case).

    Raises:
        N8nControlError: none or several match (exit 2, the candidates named).
    """
    listed = list(workflows)
    for match in (
        lambda w: w.id == ref,
        lambda w: w.name == ref,
        lambda w: w.name.casefold() == ref.casefold(),
    ):
        hits = [w for w in listed if match(w)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            ids = ", ".join(f"{w.id} ({w.name})" for w in hits)
            raise N8nControlError(f"several workflows are named {ref!r}: {ids}; give the id", 2)
    known = ", ".join(f"{w.name!r} ({w.id})" for w in listed[:20]) or "none"
    raise N8nControlError(f"no workflow with the id or name {ref!r}; n8n has: {known}", 2)


def n8n_kpis(env: Mapping[str, str]) -> list[KpiSpec]:
    """The registry's enabled n8n KPIs that use the configured n8n (no own baseUrl)."""
    try:
        registry = load_registry(registry_path(env))
    except RegistryError as exc:
        raise N8nControlError(str(exc).splitlines()[0], exit_code=2) from None
    base = (env.get(BASE_URL_ENV) or "").rstrip("/")
    return [
        spec
        for spec in registry.enabled(dict(env))
        if spec.source.kind == "n8n"
        and (not spec.source.base_url or spec.source.base_url.rstrip("/") == base)
    ]


def _webhook_of(spec: KpiSpec) -> str:
    return str(spec.source.params.get("webhook") or "").strip("/")


def kpi_problems(kpis: Iterable[KpiSpec], workflows: Iterable[Workflow]) -> list[KpiProblem]:
    """The KPIs whose webhook path no active workflow serves with POST, and why."""
    listed = list(workflows)
    problems = []
    for spec in kpis:
        path = _webhook_of(spec)
        owners = [w for w in listed if any(h.path == path for h in w.webhooks)]
        serving = [
            w
            for w in owners
            if w.active and any(h.path == path and h.method == "POST" for h in w.webhooks)
        ]
        if serving:
            continue
        if not owners:
            reason = "no workflow has this webhook path (import and publish its workflow)"
        elif not any(w.active for w in owners):
            names = ", ".join(f"{w.name!r} ({w.id})" for w in owners)
            reason = f"its workflow is inactive: {names} (`daily-index n8n activate ID`)"
        else:
            methods = sorted({h.method for w in owners for h in w.webhooks if h.path == path})
            reason = f"the active workflow listens with {'/'.join(methods)}, not POST"
        problems.append(KpiProblem(spec.id, path, reason))
    return problems


def config(env: Mapping[str, str], *, need_key: bool = True) -> tuple[str, str | None]:
    """n8n's base URL and API key from the environment.

    Raises:
        N8nControlError: exit 2, naming the variable that is not set.
    """
    base = (env.get(BASE_URL_ENV) or "").strip().rstrip("/")
    if not base:
        raise N8nControlError(f"{BASE_URL_ENV} is not set: where is n8n?", exit_code=2)
    key = env.get(API_KEY_ENV) or None
    if need_key and not key:
        raise N8nControlError(
            f"{API_KEY_ENV} is not set: create an API key in n8n (Settings > n8n API)",
            exit_code=2,
        )
    return base, key


# What the doctor asks.


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's n8n check: `ok` True, False (a problem) or None (off)."""

    name: str
    ok: bool | None
    detail: str


def _health(client: httpx.Client, base: str) -> Finding:
    url = f"{base}/healthz"
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return Finding("n8n", False, f"{url}: no answer ({type(exc).__name__})")
    if response.status_code != 200:
        return Finding("n8n", False, f"{url}: HTTP {response.status_code}, n8n is not healthy")
    return Finding("n8n", True, f"{url}: healthy")


def _probe_webhooks(client: httpx.Client, base: str, kpis: list[KpiSpec]) -> list[Finding]:
    """Each KPI's webhook asked with a GET: n8n says whether a POST webhook serves it."""
    findings = []
    for path in sorted({_webhook_of(spec) for spec in kpis}):
        url = f"{base}/webhook/{path}"
        users = ", ".join(sorted(s.id for s in kpis if _webhook_of(s) == path))
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            findings.append(
                Finding("n8n webhook", False, f"{path} ({users}): no answer ({type(exc).__name__})")
            )
            continue
        said = _message(response)
        if response.status_code == 404 and SERVED_FOR_POST in said:
            findings.append(Finding("n8n webhook", True, f"POST {path} is registered ({users})"))
        elif response.status_code == 404:
            findings.append(
                Finding(
                    "n8n webhook",
                    False,
                    f"{path} ({users}): {said} (its workflow missing or inactive?)",
                )
            )
        else:
            findings.append(
                Finding(
                    "n8n webhook",
                    False,
                    f"{path} ({users}): HTTP {response.status_code} to a GET, expected n8n's "
                    f"404 for a POST-only webhook: {said}",
                )
            )
    return findings


def check_n8n(env: Mapping[str, str]) -> list[Finding]:
    """n8n as a run would meet it: healthy, and every registry n8n KPI served."""
    base = (env.get(BASE_URL_ENV) or "").strip().rstrip("/")
    if not base:
        return [Finding("n8n", None, f"not configured ({BASE_URL_ENV}); n8n KPIs off")]
    key = env.get(API_KEY_ENV) or None
    with httpx.Client(timeout=5.0) as client:
        health = _health(client, base)
        if not health.ok:
            return [health]
        try:
            kpis = n8n_kpis(env)
        except N8nControlError as exc:
            return [health, Finding("n8n KPIs", False, exc.message)]
        if key is None:
            return [health, *_probe_webhooks(client, base, kpis)]
    try:
        with N8nApi(base, key, timeout_s=5.0) as api:
            workflows = api.workflows()
    except N8nControlError as exc:
        return [health, Finding("n8n API", False, exc.message)]
    active = sum(w.active for w in workflows)
    findings = [
        health,
        Finding("n8n API", True, f"key accepted: {len(workflows)} workflows, {active} active"),
    ]
    problems = kpi_problems(kpis, workflows)
    for problem in problems:
        findings.append(
            Finding(
                "n8n webhook", False, f"{problem.kpi_id} (POST {problem.webhook}): {problem.reason}"
            )
        )
    if not problems:
        findings.append(
            Finding("n8n webhook", True, f"all {len(kpis)} n8n KPIs served by active workflows")
        )
    return findings


# The command.


def _console():
    from rich.console import Console

    return Console(soft_wrap=True)


def _fail(exc: N8nControlError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(exc.exit_code)


def _print_workflows(workflows: list[Workflow], base: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"n8n workflows at {escape(base)}")
    for column in ("name", "id", "active", "webhooks"):
        table.add_column(column)
    for wf in sorted(workflows, key=lambda w: w.name.casefold()):
        state = "yes" if wf.active else ("archived" if wf.archived else "no")
        table.add_row(escape(wf.name), escape(wf.id), state, escape(wf.paths()))
    _console().print(table)


@click.group("n8n")
def n8n_group() -> None:
    """n8n's workflows through its public API (key: DAILY_INDEX_N8N_API_KEY)."""


@n8n_group.command("status")
@click.argument("workflow", required=False)
def status_command(workflow: str | None) -> None:
    """List n8n's workflows, then the registry's n8n KPIs no active workflow serves.

    With WORKFLOW (an id or a name), only that workflow and the KPIs pointing at it. Exits 1
    when a KPI is not served, 2 for missing configuration or a refused key.
    """
    env = os.environ
    try:
        base, key = config(env)
        assert key is not None  # noqa: S101 - config() raised otherwise
        with N8nApi(base, key) as api:
            workflows = api.workflows()
        kpis = n8n_kpis(env)
        shown = workflows
        if workflow:
            chosen = find_workflow(workflows, workflow)
            shown = [chosen]
            paths = {h.path for h in chosen.webhooks}
            kpis = [k for k in kpis if _webhook_of(k) in paths]
    except N8nControlError as exc:
        _fail(exc)
        return
    _print_workflows(shown, base)
    problems = kpi_problems(kpis, workflows)
    if not problems:
        click.echo(f"{len(kpis)} n8n KPIs in the registry, all served by active workflows.")
        return
    click.echo(f"{len(problems)} of {len(kpis)} n8n KPIs are not served:")
    for problem in problems:
        click.echo(f"  {problem.kpi_id}: POST {problem.webhook}: {problem.reason}")
    sys.exit(1)


def _switch(workflow: str, active: bool) -> None:
    env = os.environ
    try:
        base, key = config(env)
        assert key is not None  # noqa: S101 - config() raised otherwise
        with N8nApi(base, key) as api:
            chosen = find_workflow(api.workflows(), workflow)
            if chosen.active == active:
                verb = "active" if active else "inactive"
                click.echo(f"{chosen.name} ({chosen.id}) is already {verb}; nothing done.")
                return
            done = api.set_active(chosen.id, active)
    except N8nControlError as exc:
        _fail(exc)
        return
    if done.active != active:
        click.echo(
            f"error: n8n answered but {done.name} ({done.id}) is still "
            f"{'inactive' if not done.active else 'active'}",
            err=True,
        )
        sys.exit(1)
    verb = "activated" if active else "deactivated"
    click.echo(f"{verb} {done.name} ({done.id}); webhooks: {done.paths()}")


@n8n_group.command("activate")
@click.argument("workflow")
def activate_command(workflow: str) -> None:
    """Activate (publish) WORKFLOW, an id or a name: its webhooks answer from now on."""
    _switch(workflow, True)


@n8n_group.command("deactivate")
@click.argument("workflow")
def deactivate_command(workflow: str) -> None:
    """Deactivate WORKFLOW, an id or a name: its webhooks answer 404 from now on."""
    _switch(workflow, False)
