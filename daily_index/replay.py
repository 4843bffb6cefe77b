"""A local HTTP server replaying recorded API responses, for the demo and the tests.

Every API family of `DEFAULT_BASE_URLS` lives under its own path prefix
(`/coingecko/api/v3/...`, `/binance_spot/api/v3/...`, ...), plus `/n8n/webhook/...` for the
n8n workflow of `usdt_dominance`, and `/news/<feed>.xml` for the recorded news feeds (RSS
and Atom, synthetic stories of the demo's days). History endpoints filter the recording by
the request's query like the real API does; "current" endpoints answer as of `DEMO_DAY`.

Tests steer the far end through `inject` (queued faults served first, in order),
`latency_s`, and read back `hits` and `requests` to check retries and headers.

Usage:
    with ReplayServer() as server:
        settings = SourceSettings(base_urls=server.base_urls(), n8n_base_url=server.n8n_base_url)
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from daily_index.sources.base import DEFAULT_BASE_URLS

DEMO_FIRST_DAY = date(2026, 8, 1)
DEMO_DAY = date(2026, 11, 24)
"""The last recorded day; "current" endpoints (`/simple/price`, `/global`) answer as of it."""

N8N_PREFIX = "/n8n"
NEWS_PREFIX = "/news"
NEWS_FEEDS = {"coin_wire.xml": "application/rss+xml", "macro_desk.xml": "application/atom+xml"}
API_PREFIXES = {
    "coingecko": "/coingecko/api/v3",
    "alternative_me": "/alternative_me",
    "binance_spot": "/binance_spot",
    "binance_futures": "/binance_futures",
    "defillama_stablecoins": "/defillama_stablecoins",
    "fred": "/fred",
}


def responses_dir() -> Path:
    """The folder of recorded responses bundled with the package."""
    return Path(str(resources.files("daily_index") / "demo_data" / "responses"))


@cache
def _recorded(name: str) -> Any:
    return json.loads((responses_dir() / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Fault:
    """One canned answer served instead of the recording (for tests)."""

    status: int = 200
    body: str | bytes | dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    content_type: str = "application/json"


class _NotFound(Exception):
    pass


def _query(raw: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _int(query: dict[str, str], name: str, default: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    return int(float(value))


def _error(status: int, message: str) -> _Answer:
    return _Answer(status, {"error": message})


# Each route takes (query, body) and answers like the real API would.


def _coingecko(rest: str, query: dict[str, str]) -> _Answer:
    if rest == "/simple/price":
        recorded = _recorded("coingecko/simple_price.json")
        ids = [i for i in query.get("ids", "").lower().split(",") if i]
        currencies = [c for c in query.get("vs_currencies", "").lower().split(",") if c]
        if not ids or not currencies:
            return _error(400, "Missing parameter ids or vs_currencies")
        with_time = query.get("include_last_updated_at", "").lower() == "true"
        answer = {}
        for coin in ids:
            quotes = {c: recorded[coin][c] for c in currencies if c in recorded.get(coin, {})}
            if quotes:
                if with_time:
                    quotes["last_updated_at"] = recorded[coin]["last_updated_at"]
                answer[coin] = quotes
        return _Answer(200, answer)
    if rest == "/global":
        return _Answer(200, _recorded("coingecko/global.json"))
    parts = rest.strip("/").split("/")
    if len(parts) == 4 and parts[0] == "coins" and parts[2:] == ["market_chart", "range"]:
        name = f"coingecko/market_chart/{parts[1]}_{query.get('vs_currency', '').lower()}.json"
        if not (responses_dir() / name).exists():
            return _Answer(404, {"error": "coin not found"})
        start, end = _int(query, "from"), _int(query, "to")
        if start is None or end is None:
            return _error(400, "Missing parameter from or to")
        chart = _recorded(name)
        return _Answer(
            200,
            {
                key: [p for p in points if start * 1000 <= p[0] <= end * 1000]
                for key, points in chart.items()
            },
        )
    raise _NotFound


def _alternative_me(rest: str, query: dict[str, str]) -> _Answer:
    if rest.rstrip("/") != "/fng":
        raise _NotFound
    recorded = _recorded("alternative_me/fng.json")
    limit = _int(query, "limit", 1) or len(recorded["data"])  # limit=0 means all
    return _Answer(200, {**recorded, "data": recorded["data"][:limit]})


def _between(rows: list, key: Any, query: dict[str, str]) -> list:
    start = _int(query, "startTime", 0)
    end = _int(query, "endTime", 2**62)
    return [row for row in rows if start <= row[key] <= end]


def _binance_spot(rest: str, query: dict[str, str]) -> _Answer:
    if rest != "/api/v3/klines":
        raise _NotFound
    name = f"binance_spot/klines_{query.get('symbol', '')}_{query.get('interval', '')}.json"
    if not (responses_dir() / name).exists():
        return _Answer(400, {"code": -1121, "msg": "Invalid symbol."})
    rows = _between(_recorded(name), 0, query)
    return _Answer(200, rows[: _int(query, "limit", 500)])


def _binance_futures(rest: str, query: dict[str, str]) -> _Answer:
    if rest != "/fapi/v1/fundingRate":
        raise _NotFound
    name = f"binance_futures/funding_{query.get('symbol', '')}.json"
    if not (responses_dir() / name).exists():
        return _Answer(400, {"code": -1121, "msg": "Invalid symbol."})
    rows = _between(_recorded(name), "fundingTime", query)
    return _Answer(200, rows[: _int(query, "limit", 100)])


def _defillama(rest: str, query: dict[str, str]) -> _Answer:
    if rest != "/stablecoincharts/all":
        raise _NotFound
    return _Answer(200, _recorded("defillama_stablecoins/stablecoincharts_all.json"))


def _fred(rest: str, query: dict[str, str]) -> _Answer:
    if rest != "/fred/series/observations":
        raise _NotFound
    if not query.get("api_key"):
        return _Answer(
            400,
            {
                "error_code": 400,
                "error_message": "Bad Request.  Variable api_key is not set.  Read "
                "https://fred.stlouisfed.org/docs/api/api_key.html for more information.",
            },
        )
    name = f"fred/{query.get('series_id', '')}.json"
    if not (responses_dir() / name).exists():
        return _Answer(
            400,
            {
                "error_code": 400,
                "error_message": "Bad Request.  The series does not exist.",
            },
        )
    recorded = _recorded(name)
    first = query.get("observation_start", "1600-01-01")
    last = query.get("observation_end", "9999-12-31")
    rows = [o for o in recorded["observations"] if first <= o["date"] <= last]
    return _Answer(
        200,
        {
            **recorded,
            "observation_start": first,
            "observation_end": last,
            "count": len(rows),
            "observations": rows,
        },
    )


def _n8n_get(rest: str) -> _Answer:
    """What n8n answers to a GET.

    Its health checks, and for a webhook that takes POST only the hint that `daily-index
    doctor` reads as "served".
    """
    if rest in ("/healthz", "/healthz/readiness"):
        return _Answer(200, {"status": "ok"})
    if rest == "/webhook/kpi/usdt-dominance":
        return _Answer(
            404,
            {
                "code": 404,
                "message": "This webhook is not registered for GET requests. Did you mean to "
                "make a POST request?",
            },
        )
    return _Answer(
        404,
        {
            "code": 404,
            "message": f'The requested webhook "GET {rest.removeprefix("/webhook/")}" '
            "is not registered.",
        },
    )


def _n8n(rest: str, body: bytes) -> _Answer:
    if rest != "/webhook/kpi/usdt-dominance":
        return _Answer(
            404,
            {
                "code": 404,
                "message": f'The requested webhook "POST {rest.removeprefix("/webhook/")}" '
                "is not registered.",
            },
        )
    try:
        trigger = json.loads(body)
        moment = datetime.fromisoformat(trigger["timestamp"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return _Answer(400, {"code": 400, "message": "expected an IndividualKPITrigger"})
    day = moment.astimezone(UTC).date().isoformat()
    answer = {
        "schemaVersion": 2,
        "traceId": trigger.get("traceId", "n8n"),
        "kpiId": trigger.get("kpiId", "usdt_dominance"),
        "timestamp": trigger["timestamp"],
    }
    value = _recorded("n8n/usdt_dominance.json").get(day)
    if value is None:
        # What the product owner's workflow answers when its inputs have no such day.
        return _Answer(
            200, {**answer, "error": f"no market data for {day}", "errorCode": "no_data"}
        )
    return _Answer(
        200,
        {**answer, "value": value, "unit": "%", "source": "n8n", "metadata": {"workflow": "demo"}},
    )


_ROUTES = {
    API_PREFIXES["coingecko"]: _coingecko,
    API_PREFIXES["alternative_me"]: _alternative_me,
    API_PREFIXES["binance_spot"]: _binance_spot,
    API_PREFIXES["binance_futures"]: _binance_futures,
    API_PREFIXES["defillama_stablecoins"]: _defillama,
    API_PREFIXES["fred"]: _fred,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Hundreds of clients connect at once; the default backlog of 5 would refuse some.
    request_queue_size = 1024

    def __init__(self, replay: ReplayServer) -> None:
        self.replay = replay
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the tests, not a server error.
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK adds
    # about 40 ms to every response.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        replay = self.server.replay
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        replay._record(
            RecordedRequest(
                method=method,
                path=split.path,
                query=_query(split.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        )
        try:
            fault = replay._next_fault(split.path)
            if replay.latency_s:
                time.sleep(replay.latency_s)
            if fault is not None:
                if fault.delay_s:
                    time.sleep(fault.delay_s)
                self._send(fault.status, fault.payload(), fault.content_type, fault.headers)
                return
            answer = _route(method, split.path, _query(split.query), body)
            payload = (
                answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            )
            self._send(answer.status, payload, answer.content_type)
        finally:
            replay._leave()

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _news(rest: str) -> _Answer:
    name = rest.lstrip("/")
    if name not in NEWS_FEEDS:
        raise _NotFound
    return _Answer(200, (responses_dir() / "news" / name).read_bytes(), NEWS_FEEDS[name])


def _route(method: str, path: str, query: dict[str, str], body: bytes) -> _Answer:
    try:
        if path.startswith(NEWS_PREFIX + "/"):
            return _news(path.removeprefix(NEWS_PREFIX))
        if path.startswith(N8N_PREFIX + "/"):
            if method != "POST":
                return _n8n_get(path.removeprefix(N8N_PREFIX))
            return _n8n(path.removeprefix(N8N_PREFIX), body)
        for prefix, handler in _ROUTES.items():
            if path.startswith(prefix + "/"):
                return handler(path.removeprefix(prefix), query)
        raise _NotFound
    except _NotFound:
        return _error(404, f"no recorded endpoint {path}")
    except (ValueError, KeyError) as exc:
        return _error(400, f"bad request: {type(exc).__name__}: {exc}")


class ReplayServer:
    """Recorded API responses on 127.0.0.1 (a free port), served from a background thread.

    Attributes:
        latency_s: added before every response (simulates a slow far end).
        hits: requests counted per path (no query string).
        requests: every request seen (method, path, query, lower-cased headers, body).
        max_in_flight: the most requests handled at the same time so far.
    """

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.hits: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> ReplayServer:
        if self._server is None:
            self._server = _Server(self)
            # A short poll interval keeps `stop()` (and each test's teardown) quick.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="replay-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the replay server is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def base_urls(self) -> dict[str, str]:
        """A base URL on this server for every API family of DEFAULT_BASE_URLS."""
        return {family: f"{self.url}{API_PREFIXES[family]}" for family in DEFAULT_BASE_URLS}

    @property
    def n8n_base_url(self) -> str:
        return f"{self.url}{N8N_PREFIX}"

    def news_feed_urls(self) -> list[str]:
        """The recorded news feeds (for DAILY_INDEX_NEWS_FEEDS)."""
        return [f"{self.url}{NEWS_PREFIX}/{name}" for name in NEWS_FEEDS]

    # test controls

    def inject(self, path_prefix: str, *faults: Fault) -> None:
        """Queue faults served, in order, to the next requests whose path starts with prefix."""
        with self._lock:
            self._faults.setdefault(path_prefix, deque()).extend(faults)

    def reset(self) -> None:
        """Forget queued faults, hits and recorded requests."""
        with self._lock:
            self._faults.clear()
            self.hits.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def headers_seen(self, path_prefix: str = "") -> list[dict[str, str]]:
        """The (lower-cased) headers of each request whose path starts with prefix."""
        with self._lock:
            return [r.headers for r in self.requests if r.path.startswith(path_prefix)]

    # called by the handler threads

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.hits[request.path] += 1
            self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for prefix, queue in self._faults.items():
                if queue and path.startswith(prefix):
                    return queue.popleft()
        return None
