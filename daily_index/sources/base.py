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

# Requests per minute per source family, shared by every KPI of that family within a run
# (0: no limit). Each default stays within the API's own keyless (or per-key) limit:
DEFAULT_RATE_LIMITS: dict[str, float] = {
    # CoinGecko's keyless tier is rate limited per IP with no published figure (its docs,
    # "Errors & Rate Limits"; long quoted as 5 to 15 calls a minute); the keyed Demo plan
    # allows more. 10 keeps a history load within it.
    "coingecko": 10,
    # Binance spot: 6,000 request weight a minute per IP (exchangeInfo REQUEST_WEIGHT); a
    # klines call of up to 1,000 rows weighs 2. 600 leaves the weight to other clients.
    "binance_spot": 600,
    # Binance USD-M futures: /fapi/v1/fundingRate shares 500 calls per 5 minutes per IP
    # with /fapi/v1/fundingInfo (its endpoint documentation).
    "binance_futures": 100,
    # alternative.me's API page: 60 requests a minute over a 10-minute window.
    "alternative_me": 60,
    # DefiLlama publishes no keyless figure; a run asks for its chart once anyway.
    "defillama_stablecoins": 60,
    # FRED: 120 requests a minute per API key (FRED API documentation).
    "fred": 120,
    # Our own n8n: bounded by its concurrency (DEFAULT_FAMILY_CONCURRENCY), not by a rate.
    "n8n": 0,
}

# Requests in flight at once per source family, within the batch's overall concurrency
# (DAILY_INDEX_FETCH_CONCURRENCY) which bounds the families not listed. n8n on 2 cores runs
# 4-6 webhook executions a second: with 32 requests in flight some waited past a 15 s timeout
# and n8n kept executing the abandoned ones (331 executions for 200 KPIs); 8 was as fast
# with no timeout.
DEFAULT_FAMILY_CONCURRENCY: dict[str, int] = {"n8n": 8}

# How a family is named in reasons an operator reads.
FAMILY_NAMES: dict[str, str] = {
    "coingecko": "CoinGecko",
    "binance_spot": "Binance",
    "binance_futures": "Binance futures",
    "alternative_me": "alternative.me",
    "defillama_stablecoins": "DefiLlama",
    "fred": "FRED",
    "n8n": "n8n",
}

RETRY_AFTER_MAX_ENV = "DAILY_INDEX_RETRY_AFTER_MAX_S"
FETCH_BUDGET_ENV = "DAILY_INDEX_FETCH_BUDGET_S"
N8N_CONCURRENCY_ENV = "DAILY_INDEX_N8N_CONCURRENCY"
N8N_TIMEOUT_ENV = "DAILY_INDEX_N8N_TIMEOUT_S"
N8N_READY_WAIT_ENV = "DAILY_INDEX_N8N_READY_WAIT_S"


def rate_limit_env(family: str) -> str:
    """The environment variable setting a family's requests per minute."""
    return f"DAILY_INDEX_RATE_LIMIT_{family.upper()}"


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


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
    family_concurrency: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_FAMILY_CONCURRENCY)
    )
    # A webhook runs a whole workflow, whose own upstream calls may take about 10 s: a POST
    # waits longer than an API call, and one that timed out is not sent again (n8n keeps
    # executing it, so a second POST would double the work).
    n8n_timeout_s: float = 30.0
    # How long a run waits for a starting n8n (health check, then webhooks registered)
    # before failing its n8n KPIs; within the fetch budget (0: no wait, no start-up retries).
    n8n_ready_wait_s: float = 60.0
    rate_limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    # The longest Retry-After honoured; a server asking for more fails the KPI at once.
    retry_after_max_s: float = 120.0
    # The whole batch's time, waits included: a wait (Retry-After, rate limit, backoff) that
    # would end after it fails at once instead (0: no budget).
    fetch_budget_s: float = 600.0
    # The largest answer (decompressed) read before refusing it, and the deepest nesting
    # parsed: a bigger or deeper body is a broken or hostile far end, not data.
    max_response_bytes: int = 1_048_576
    max_json_depth: int = 64

    def concurrency_of(self, family: str) -> int | None:
        """The family's own bound on requests in flight, if it has one."""
        limit = self.family_concurrency.get(family)
        return max(1, limit) if limit else None

    def base_url(self, spec: KpiSpec, family: str) -> str:
        chosen = spec.source.base_url or self.base_urls.get(family) or DEFAULT_BASE_URLS[family]
        return chosen.rstrip("/")
