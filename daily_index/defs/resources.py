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

from daily_index.sources.base import DEFAULT_BASE_URLS, SourceSettings
from daily_index.storage.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from daily_index.storage.s3 import R2_ENDPOINT_TEMPLATE, R2S3Resource
from daily_index.storage.series import KpiSeriesStore

DEFAULT_DATA_DIR = ".data/store"


class ConfigurationError(RuntimeError):
    """The environment asks for a feature whose settings are incomplete."""


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
    """How KPI values are fetched: endpoints, credentials, timeouts, concurrency."""

    base_urls: dict[str, str] = Field(default_factory=dict)
    n8n_base_url: str | None = None
    n8n_auth_header: str | None = None
    n8n_auth_value: str | None = None
    fred_api_key: str | None = None
    timeout_s: float = 15.0
    max_attempts: int = 4
    concurrency: int = 32
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
        )

    def today_date(self) -> date | None:
        return date.fromisoformat(self.today) if self.today else None


def _secret(environ: Mapping[str, str], name: str) -> dg.EnvVar | None:
    """An EnvVar when the variable is set, so its value never lands in config or the UI."""
    return dg.EnvVar(name) if environ.get(name) else None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


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
        timeout_s=_float(environ, "DAILY_INDEX_FETCH_TIMEOUT_S", 15.0),
        max_attempts=_int(environ, "DAILY_INDEX_FETCH_MAX_ATTEMPTS", 4),
        concurrency=_int(environ, "DAILY_INDEX_FETCH_CONCURRENCY", 32),
        today=environ.get("DAILY_INDEX_TODAY") or None,
    )


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """All resources for the Definitions, from the environment (default: os.environ)."""
    env = os.environ if environ is None else environ
    return {
        "storage": storage_from_env(env),
        "sources": sources_from_env(env),
    }
