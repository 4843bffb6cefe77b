"""What every source shares: the request for one KPI-day and the settings of all sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from daily_index.registry import KpiSpec

# Public endpoints of the keyless APIs; each can be overridden (registry `baseUrl`, or the
# DAILY_INDEX_<KIND>_URL environment variable) to point at a proxy or a local test server.
DEFAULT_BASE_URLS: dict[str, str] = {
    "coingecko": "https://api.coingecko.com/api/v3",
    "alternative_me": "https://api.alternative.me",
    "binance_spot": "https://api.binance.com",
    "binance_futures": "https://fapi.binance.com",
    "defillama_stablecoins": "https://stablecoins.llama.fi",
    "fred": "https://api.stlouisfed.org",
}


@dataclass(frozen=True)
class FetchRequest:
    """One KPI for one day. `today` decides between a live quote and a historical one."""

    spec: KpiSpec
    day: date
    today: date
    trace_id: str
    timestamp: str

    @property
    def is_past(self) -> bool:
        return self.day < self.today


@dataclass(frozen=True)
class SourceSettings:
    """Everything sources need from configuration. Secrets are held, never printed."""

    base_urls: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS))
    n8n_base_url: str | None = None
    n8n_auth_header: str | None = None
    n8n_auth_value: str | None = field(default=None, repr=False)
    fred_api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 15.0
    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    concurrency: int = 32
    # The largest answer (decompressed) read before refusing it, and the deepest nesting
    # parsed: a bigger or deeper body is a broken or hostile far end, not data.
    max_response_bytes: int = 1_048_576
    max_json_depth: int = 64

    def base_url(self, spec: KpiSpec, family: str) -> str:
        chosen = spec.source.base_url or self.base_urls.get(family) or DEFAULT_BASE_URLS[family]
        return chosen.rstrip("/")
