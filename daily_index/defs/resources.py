"""Every resource, chosen in one place from the environment, with embedded defaults.

Nothing here is read at import time: `build_resources()` runs when the code location
loads. Secrets reach resources only as `dg.EnvVar`, so the UI shows the variable's name,
never its value. A feature whose secret is missing fails at start-up with the variable's
name; optional features (LLM, FRED) are simply off without their key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from daily_index.delivery.channels import (
    ATTACH_LIMITS_ENV,
    AttachLimitsError,
    AttachPolicy,
    parse_attach_limits,
)
from daily_index.report.analysis import ENV_API_KEY, PRESETS, LlmSettings
from daily_index.sources.base import (
    DEFAULT_BASE_URLS,
    DEFAULT_RATE_LIMITS,
    FETCH_BUDGET_ENV,
    N8N_CONCURRENCY_ENV,
    N8N_READY_WAIT_ENV,
    N8N_TIMEOUT_ENV,
    RETRY_AFTER_MAX_ENV,
    SourceSettings,
    rate_limit_env,
)
from daily_index.storage.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from daily_index.storage.series import KpiSeriesStore

DEFAULT_DATA_DIR = ".data/store"
R2_ENDPOINT_TEMPLATE = "https://{account_id}.r2.cloudflarestorage.com"
DEFAULT_OUTBOX_DIR = ".data/outbox"
DEFAULT_LINK_EXPIRY_S = 7 * 86_400
MAX_LINK_EXPIRY_S = 7 * 86_400
"""SigV4 presigned URLs (S3, R2) live at most 7 days."""


class ConfigurationError(ValueError):
    """The environment asks for a feature whose settings are incomplete or malformed."""


class StorageResource(dg.ConfigurableResource):
    """Where KPI series, raw payloads and report artefacts live.

    `backend="local"` (default) uses a directory; `backend="s3"` uses any S3-compatible
    bucket, Cloudflare R2 first, through dagster-aws's S3Resource.
    """

    backend: str = Field(default="local", description="local | s3")
    local_dir: str = Field(default=DEFAULT_DATA_DIR, description="Root of the local store.")
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str = "auto"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def get_store(self) -> ObjectStore:
        if self.backend == "local":
            return LocalObjectStore(self.local_dir)
        if self.backend != "s3":
            raise ConfigurationError(f"unknown storage backend {self.backend!r} (local | s3)")
        if not self.bucket:
            raise ConfigurationError("S3/R2 storage needs DAILY_INDEX_S3_BUCKET")
        # dagster-aws costs half a second to import: only when S3 is used.
        from daily_index.storage.s3 import R2S3Resource

        client = R2S3Resource(
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        ).get_client()
        return S3ObjectStore(client, self.bucket, self.prefix, endpoint=self.endpoint_url)

    def get_series(self) -> KpiSeriesStore:
        return KpiSeriesStore(self.get_store())


class KpiSourcesResource(dg.ConfigurableResource):
    """How KPI values are fetched: endpoints, credentials, timeouts, concurrency, rates."""

    base_urls: dict[str, str] = Field(default_factory=dict)
    n8n_base_url: str | None = None
    n8n_auth_header: str | None = None
    n8n_auth_value: str | None = None
    fred_api_key: str | None = None
    timeout_s: float = 15.0
    max_attempts: int = 4
    concurrency: int = 32
    n8n_concurrency: int = Field(default=8, description="n8n webhook calls in flight at once.")
    n8n_timeout_s: float = Field(default=30.0, description="Wait for one n8n webhook answer.")
    n8n_ready_wait_s: float = Field(
        default=60.0, description="Longest wait for a starting n8n (0: none), within the budget."
    )
    rate_limits: dict[str, float] = Field(
        default_factory=dict,
        description="Requests per minute per source family (0: none), over the defaults.",
    )
    retry_after_max_s: float = Field(
        default=120.0, description="Longest Retry-After honoured; a longer one fails at once."
    )
    fetch_budget_s: float = Field(
        default=600.0, description="Time of a run's fetches, waits included (0: none)."
    )
    max_response_bytes: int = Field(
        default=1_048_576, description="Largest API answer read, in bytes (decompressed)."
    )
    max_json_depth: int = Field(default=64, description="Deepest JSON nesting parsed.")
    today: str | None = Field(
        default=None,
        description="Pretend today is this date (demo on recorded data); default: the UTC date.",
    )

    def settings(self) -> SourceSettings:
        return SourceSettings(
            base_urls={**DEFAULT_BASE_URLS, **self.base_urls},
            n8n_base_url=self.n8n_base_url,
            n8n_auth_header=self.n8n_auth_header,
            n8n_auth_value=self.n8n_auth_value,
            fred_api_key=self.fred_api_key,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            concurrency=self.concurrency,
            family_concurrency={"n8n": self.n8n_concurrency},
            n8n_timeout_s=self.n8n_timeout_s,
            n8n_ready_wait_s=self.n8n_ready_wait_s,
            rate_limits={**DEFAULT_RATE_LIMITS, **self.rate_limits},
            retry_after_max_s=self.retry_after_max_s,
            fetch_budget_s=self.fetch_budget_s,
            max_response_bytes=self.max_response_bytes,
            max_json_depth=self.max_json_depth,
        )

    def today_date(self) -> date | None:
        return date.fromisoformat(self.today) if self.today else None


def _secret(environ: Mapping[str, str], name: str) -> dg.EnvVar | None:
    """An EnvVar when the variable is set, so its value never lands in config or the UI."""
    return dg.EnvVar(name) if environ.get(name) else None


def env_int(
    environ: Mapping[str, str], name: str, default: int, *, minimum: int | None = None
) -> int:
    """An integer setting; unset or empty gives the default, anything else must parse."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"true", "1", "yes", "on"}:
        return True
    if value in {"false", "0", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def storage_from_env(environ: Mapping[str, str]) -> StorageResource:
    backend = environ.get("DAILY_INDEX_STORAGE", "local").strip().lower()
    if backend == "r2":
        backend = "s3"
    if backend == "local":
        return StorageResource(
            backend="local",
            local_dir=str(Path(environ.get("DAILY_INDEX_DATA_DIR", DEFAULT_DATA_DIR))),
        )
    if backend != "s3":
        raise ConfigurationError(
            f"DAILY_INDEX_STORAGE must be 'local', 's3' or 'r2', got {backend!r}"
        )
    endpoint = environ.get("DAILY_INDEX_S3_ENDPOINT_URL")
    account = environ.get("DAILY_INDEX_R2_ACCOUNT_ID")
    if not endpoint and account:
        endpoint = R2_ENDPOINT_TEMPLATE.format(account_id=account)
    missing = [
        name
        for name in (
            "DAILY_INDEX_S3_BUCKET",
            "DAILY_INDEX_S3_ACCESS_KEY_ID",
            "DAILY_INDEX_S3_SECRET_ACCESS_KEY",
        )
        if not environ.get(name)
    ]
    if not endpoint:
        missing.append("DAILY_INDEX_S3_ENDPOINT_URL (or DAILY_INDEX_R2_ACCOUNT_ID)")
    if missing:
        raise ConfigurationError(
            "S3/R2 storage is selected (DAILY_INDEX_STORAGE) but these are not set: "
            + ", ".join(missing)
        )
    return StorageResource(
        backend="s3",
        bucket=environ["DAILY_INDEX_S3_BUCKET"],
        prefix=environ.get("DAILY_INDEX_S3_PREFIX", ""),
        endpoint_url=endpoint,
        region_name=environ.get("DAILY_INDEX_S3_REGION", "auto"),
        access_key_id=dg.EnvVar("DAILY_INDEX_S3_ACCESS_KEY_ID"),
        secret_access_key=dg.EnvVar("DAILY_INDEX_S3_SECRET_ACCESS_KEY"),
    )


BASE_URL_ENV = {family: f"DAILY_INDEX_{family.upper()}_URL" for family in DEFAULT_BASE_URLS}


def sources_from_env(environ: Mapping[str, str]) -> KpiSourcesResource:
    if environ.get("DAILY_INDEX_N8N_AUTH_VALUE") and not environ.get("DAILY_INDEX_N8N_AUTH_HEADER"):
        raise ConfigurationError(
            "DAILY_INDEX_N8N_AUTH_VALUE is set but DAILY_INDEX_N8N_AUTH_HEADER (its header name) "
            "is not"
        )
    return KpiSourcesResource(
        base_urls={f: environ[v] for f, v in BASE_URL_ENV.items() if environ.get(v)},
        n8n_base_url=environ.get("DAILY_INDEX_N8N_BASE_URL") or None,
        n8n_auth_header=environ.get("DAILY_INDEX_N8N_AUTH_HEADER") or None,
        n8n_auth_value=_secret(environ, "DAILY_INDEX_N8N_AUTH_VALUE"),
        fred_api_key=_secret(environ, "FRED_API_KEY"),
        timeout_s=env_float(environ, "DAILY_INDEX_FETCH_TIMEOUT_S", 15.0),
        max_attempts=env_int(environ, "DAILY_INDEX_FETCH_MAX_ATTEMPTS", 4),
        concurrency=env_int(environ, "DAILY_INDEX_FETCH_CONCURRENCY", 32),
        n8n_concurrency=env_int(environ, N8N_CONCURRENCY_ENV, 8, minimum=1),
        n8n_timeout_s=_positive(environ, N8N_TIMEOUT_ENV, 30.0),
        n8n_ready_wait_s=_non_negative(environ, N8N_READY_WAIT_ENV, 60.0),
        rate_limits=_rate_limits(environ),
        retry_after_max_s=_non_negative(environ, RETRY_AFTER_MAX_ENV, 120.0),
        fetch_budget_s=_non_negative(environ, FETCH_BUDGET_ENV, 600.0),
        max_response_bytes=env_int(environ, "DAILY_INDEX_MAX_RESPONSE_BYTES", 1_048_576, minimum=1),
        max_json_depth=env_int(environ, "DAILY_INDEX_MAX_JSON_DEPTH", 64, minimum=1),
        today=_env_date(environ, "DAILY_INDEX_TODAY"),
    )


def _non_negative(environ: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(environ, name, default)
    if value < 0:
        raise ConfigurationError(f"{name} must be >= 0, got {value:g}")
    return value


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(environ, name, default)
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value:g}")
    return value


def _rate_limits(environ: Mapping[str, str]) -> dict[str, float]:
    """DAILY_INDEX_RATE_LIMIT_<FAMILY> (requests per minute, 0: none) where set."""
    return {
        family: _non_negative(environ, rate_limit_env(family), default)
        for family, default in DEFAULT_RATE_LIMITS.items()
        if environ.get(rate_limit_env(family))
    }


def _env_date(environ: Mapping[str, str], name: str) -> str | None:
    """A YYYY-MM-DD setting (None when unset), checked when the definitions load."""
    raw = environ.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.strip()).isoformat()
    except ValueError:
        raise ConfigurationError(f"{name} must be a date as YYYY-MM-DD, got {raw!r}") from None


class AnalystResource(dg.ConfigurableResource):
    """Who writes the analysis: an OpenAI-compatible LLM, or the rule-based analyst.

    Without an API key nothing is sent anywhere and the rule-based analyst writes the
    report (the report says so).
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 30.0
    total_budget_s: float = 90.0

    def llm_settings(self) -> LlmSettings | None:
        if not self.api_key or not self.base_url or not self.model:
            return None
        return LlmSettings(
            api_key=self.api_key,
            base_url=self.base_url,
            model=self.model,
            timeout_s=self.timeout_s,
            total_budget_s=self.total_budget_s,
        )


class DeliveryResource(dg.ConfigurableResource):
    """Who receives the report, how fast we may send, and which channels get the PDF."""

    subscribers_file: str | None = None
    outbox_dir: str = DEFAULT_OUTBOX_DIR
    concurrency: int = 64
    max_attempts: int = 3
    report_link_base: str | None = Field(
        default=None,
        description="Public URL of the store's root (e.g. an R2 public bucket); links are "
        "<base>/reports/delivered/<date>.pdf. Takes precedence over presigned links.",
    )
    attach_limits: str | None = Field(
        default=None,
        description="Per-scheme attachment limits over the defaults, e.g. 'mailto=7MB,json=0'.",
    )
    link_expiry_s: int = Field(
        default=DEFAULT_LINK_EXPIRY_S, description="How long a presigned report link works."
    )

    def attach_policy(self) -> AttachPolicy:
        return AttachPolicy(parse_attach_limits(self.attach_limits))


class ReportSettingsResource(dg.ConfigurableResource):
    """How the report looks: chart window, demo labelling."""

    chart_window_days: int = 90
    chart_workers: int = 2
    demo: bool = False
    appendix: bool = Field(
        default=False,
        description="Add the full chart of every KPI to the PDF (the brief shows what moved).",
    )


def analyst_from_env(environ: Mapping[str, str]) -> AnalystResource:
    try:
        settings = LlmSettings.from_env(environ)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if settings is None:
        return AnalystResource()
    key_var = next(
        name
        for name in (ENV_API_KEY, *(p.key_env for p in PRESETS.values()))
        if environ.get(name, "").strip() and environ.get(name, "").strip() == settings.api_key
    )
    return AnalystResource(
        base_url=settings.base_url,
        model=settings.model,
        api_key=dg.EnvVar(key_var),
        timeout_s=settings.timeout_s,
        total_budget_s=env_float(environ, "DAILY_INDEX_LLM_BUDGET_S", 90.0),
    )


def delivery_from_env(environ: Mapping[str, str]) -> DeliveryResource:
    subscribers = environ.get("DAILY_INDEX_SUBSCRIBERS_FILE") or None
    if subscribers and not Path(subscribers).is_file():
        raise ConfigurationError(
            f"DAILY_INDEX_SUBSCRIBERS_FILE points at {subscribers!r}, which is not a file"
        )
    attach_limits = environ.get(ATTACH_LIMITS_ENV) or None
    try:
        parse_attach_limits(attach_limits)
    except AttachLimitsError as exc:
        raise ConfigurationError(str(exc)) from None
    expiry = env_int(environ, "DAILY_INDEX_REPORT_LINK_EXPIRY_S", DEFAULT_LINK_EXPIRY_S, minimum=1)
    if expiry > MAX_LINK_EXPIRY_S:
        raise ConfigurationError(
            f"DAILY_INDEX_REPORT_LINK_EXPIRY_S must be at most {MAX_LINK_EXPIRY_S} (7 days, the "
            f"longest a presigned S3/R2 URL lives), got {expiry}"
        )
    link_base = (environ.get("DAILY_INDEX_REPORT_LINK_BASE") or "").strip() or None
    if link_base and not link_base.startswith(("https://", "http://")):
        raise ConfigurationError(
            f"DAILY_INDEX_REPORT_LINK_BASE must be an http(s):// URL, got {link_base[:80]!r}"
        )
    return DeliveryResource(
        subscribers_file=subscribers,
        outbox_dir=environ.get("DAILY_INDEX_OUTBOX_DIR", DEFAULT_OUTBOX_DIR),
        concurrency=env_int(environ, "DAILY_INDEX_DELIVERY_CONCURRENCY", 64),
        max_attempts=env_int(environ, "DAILY_INDEX_DELIVERY_MAX_ATTEMPTS", 3),
        report_link_base=link_base,
        attach_limits=attach_limits,
        link_expiry_s=expiry,
    )


def report_settings_from_env(environ: Mapping[str, str]) -> ReportSettingsResource:
    return ReportSettingsResource(
        chart_window_days=env_int(environ, "DAILY_INDEX_CHART_WINDOW_DAYS", 90),
        chart_workers=env_int(environ, "DAILY_INDEX_CHART_WORKERS", 2),
        demo=environ.get("DAILY_INDEX_DEMO", "") in ("1", "true", "yes"),
        appendix=env_bool(environ, "DAILY_INDEX_REPORT_APPENDIX", False),
    )


DEFAULT_UI_BASE_URL = "http://127.0.0.1:3000"


class AlertsResource(dg.ConfigurableResource):
    """Who gets KPI alerts and operator alerts, and which days still alert.

    Without a recipients file every KPI alert goes to `<outbox_dir>/alerts/`; without
    operator URLs, run and check failures go to `<outbox_dir>/operators/`.
    """

    recipients_file: str | None = None
    outbox_dir: str = DEFAULT_OUTBOX_DIR
    operator_urls: str | None = Field(
        default=None, description="Comma-separated apprise URLs of the operators (a secret)."
    )
    ui_base_url: str = DEFAULT_UI_BASE_URL
    window_days: int = Field(
        default=3, description="Only days this recent alert (imports and backfills never do)."
    )
    max_attempts: int = Field(default=5, description="Sends per channel before it is dead.")

    def recipients(self, *, known_kpis=None, known_rules=None) -> list:
        """The KPI alert recipients (the file is read on each call, so edits apply)."""
        from daily_index.alerts.recipients import load_recipients, outbox_recipient

        if not self.recipients_file:
            return [outbox_recipient(Path(self.outbox_dir) / "alerts")]
        return load_recipients(self.recipients_file, known_kpis=known_kpis, known_rules=known_rules)

    def operators(self) -> list:
        from daily_index.alerts.recipients import operator_recipient, parse_url_list

        urls = parse_url_list(self.operator_urls, variable="DAILY_INDEX_OPERATOR_URLS")
        return [operator_recipient(urls, Path(self.outbox_dir) / "operators")]


def alerts_from_env(environ: Mapping[str, str]) -> AlertsResource:
    from daily_index.alerts.recipients import RecipientsError, parse_url_list

    recipients = environ.get("DAILY_INDEX_ALERT_RECIPIENTS_FILE") or None
    if recipients and not Path(recipients).is_file():
        raise ConfigurationError(
            f"DAILY_INDEX_ALERT_RECIPIENTS_FILE points at {recipients!r}, which is not a file"
        )
    try:
        parse_url_list(
            environ.get("DAILY_INDEX_OPERATOR_URLS"), variable="DAILY_INDEX_OPERATOR_URLS"
        )
    except RecipientsError as exc:
        raise ConfigurationError(str(exc)) from None
    return AlertsResource(
        recipients_file=recipients,
        outbox_dir=environ.get("DAILY_INDEX_OUTBOX_DIR", DEFAULT_OUTBOX_DIR),
        operator_urls=_secret(environ, "DAILY_INDEX_OPERATOR_URLS"),
        ui_base_url=environ.get("DAILY_INDEX_UI_BASE_URL") or DEFAULT_UI_BASE_URL,
        window_days=env_int(environ, "DAILY_INDEX_ALERT_WINDOW_DAYS", 3, minimum=1),
        max_attempts=env_int(environ, "DAILY_INDEX_ALERT_MAX_ATTEMPTS", 5, minimum=1),
    )


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """All resources for the Definitions, from the environment (default: os.environ)."""
    from daily_index.storage.io_manager import ArtifactIOManager

    env = os.environ if environ is None else environ
    storage = storage_from_env(env)
    return {
        "storage": storage,
        "sources": sources_from_env(env),
        "analyst": analyst_from_env(env),
        "delivery": delivery_from_env(env),
        "report_settings": report_settings_from_env(env),
        "alerts": alerts_from_env(env),
        "artifact_io_manager": ArtifactIOManager(storage=storage),
    }
