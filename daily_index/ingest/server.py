"""The push-ingestion HTTP server: `POST /api/kpi-data`, `POST /api/kpi-error`, `GET /api/health`.

Each push passes, in this order: the per-client rate limit (429 with Retry-After), the body
limit (413), the Standard Webhooks signature over the raw bytes (401, before anything reads
the body), the content type (415), the data contract and the registry (422 with the
reason), and the inbox (202 accepted, 200 a repeat, 409 another value for the same KPI-day,
503 when the store cannot be written). docs/ingest.md and docs/ingest-openapi.yaml
describe it for senders.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate, parse_update, upgrade
from daily_index.defs.partitions import FIRST_DAY
from daily_index.ingest.inbox import Inbox, Kind, Push
from daily_index.ingest.journal import JournaledInbox, journal_folder
from daily_index.ingest.signing import SecretError, Verifier, decode_secret
from daily_index.registry import KpiSpec
from daily_index.storage.objectstore import ObjectStore, StorageError

SECRETS_ENV = "DAILY_INDEX_INGEST_SECRETS"
MAX_BODY_ENV = "DAILY_INDEX_INGEST_MAX_BODY_BYTES"
RATE_ENV = "DAILY_INDEX_INGEST_RATE_LIMIT"
BURST_ENV = "DAILY_INDEX_INGEST_RATE_BURST"
PUSH_KIND = "n8n"
"""Pushes are taken for the registry's n8n KPIs: a workflow either answers or pushes."""

UNAUTHORISED = {"error": "missing or invalid webhook signature"}


class IngestConfigError(ValueError):
    """The environment does not configure the server well enough to start (exit 2)."""


@dataclass(frozen=True)
class IngestSettings:
    """What the server needs; the secrets are held, never printed."""

    secrets: tuple[str, ...] = field(repr=False)
    max_body_bytes: int = 65_536
    rate_per_s: float = 50.0
    """Requests a second per client address (0: no limit)."""
    burst: int = 200
    """Requests a client may send at once before the rate applies (a day's KPIs together)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IngestSettings:
        raw = environ.get(SECRETS_ENV, "")
        secrets = tuple(s.strip() for s in raw.split(",") if s.strip())
        if not secrets:
            raise IngestConfigError(
                f"{SECRETS_ENV} is not set: give one or more comma-separated whsec_... secrets"
            )
        try:
            for position, secret in enumerate(secrets, start=1):
                decode_secret(secret, position=position)
        except SecretError as exc:
            raise IngestConfigError(f"{SECRETS_ENV}: {exc}") from None
        return cls(
            secrets=secrets,
            max_body_bytes=_number(environ, MAX_BODY_ENV, 65_536, int, minimum=256),
            rate_per_s=_number(environ, RATE_ENV, 50.0, float, minimum=0),
            burst=_number(environ, BURST_ENV, 200, int, minimum=1),
        )


def _number(environ: Mapping[str, str], name: str, default, kind, *, minimum):
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise IngestConfigError(f"{name} must be a {kind.__name__}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise IngestConfigError(f"{name} must be at least {minimum}, got {text!r}")
    return value


class RateLimiter:
    """A token bucket per client address; the oldest idle clients are forgotten first."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_for(self, client: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1 - tokens) / self.rate
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


class Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class IngestApp:
    """The server's behaviour, independent of how it is started (uvicorn, a test)."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        kpis: Sequence[KpiSpec],
        store: ObjectStore,
        today: date | None = None,
    ):
        self.settings = settings
        self.verifier = Verifier(settings.secrets)
        self.limiter = RateLimiter(settings.rate_per_s, settings.burst)
        self.kpis = {k.id: k for k in kpis if k.source.kind == PUSH_KIND}
        plain = Inbox(store)
        # A local disk gets group commit (one fsync per batch); S3/R2 PUTs are durable as is.
        self.journal = JournaledInbox(plain) if journal_folder(plain) is not None else None
        self.inbox: Inbox | JournaledInbox = self.journal or plain
        self.store = store
        self._today = today
        # Both forms of every secret: a push that carries one is refused, never stored.
        self._secret_texts = tuple(
            text for s in settings.secrets for text in (s, s.removeprefix("whsec_"))
        )

    def today(self) -> date:
        return self._today or datetime.now(UTC).date()

    # --- the steps, in order -----------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Rejected(413, f"body is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, f"body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _content_type(self, request: Request) -> None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise Rejected(415, f"content type must be application/json, got {media or 'none'!r}")

    def _decode(self, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise Rejected(422, f"body is not JSON: {type(exc).__name__}") from None
        if not isinstance(payload, dict):
            raise Rejected(422, f"body must be a JSON object, got {type(payload).__name__}")
        return payload

    def _validate(
        self, kind: Kind, payload: dict[str, Any]
    ) -> tuple[KpiSpec, KPIDataUpdate | KPIErrorUpdate]:
        body = upgrade(payload)
        for name in ("kpiId", "traceId", "timestamp"):
            if not isinstance(body.get(name), str) or not body[name]:
                got = "nothing" if name not in body else _describe(body[name])
                raise Rejected(422, f"field {name!r}: expected a non-empty string (got {got})")
        _check_timestamp(body["timestamp"])
        spec = self.kpis.get(body["kpiId"])
        if spec is None:
            raise Rejected(
                422,
                f"field 'kpiId': {_describe(body['kpiId'])} is not an active KPI of the registry "
                f"whose source kind is {PUSH_KIND!r}; only those take pushes",
            )
        has_error = "error" in body
        if kind == "data" and has_error:
            raise Rejected(422, "field 'error': an error update goes to /api/kpi-error")
        if kind == "error" and not has_error:
            raise Rejected(422, "field 'error': missing; a data update goes to /api/kpi-data")
        update = parse_update(
            payload,
            kpi_id=spec.id,
            trace_id=body["traceId"],
            timestamp=body["timestamp"],
            kpi_type=spec.type,
        )
        if kind == "data" and not isinstance(update, KPIDataUpdate):
            raise Rejected(422, f"KPI {spec.id!r}: {update.error}")
        if kind == "error":
            # parse_update turns an invalid error update into one of its own: tell them apart.
            try:
                KPIErrorUpdate.model_validate(body)
            except ValueError:
                raise Rejected(422, f"KPI {spec.id!r}: {update.error}") from None  # type: ignore[union-attr]
        day = _utc_day(update.timestamp)
        if day < date.fromisoformat(FIRST_DAY) or day > self.today():
            raise Rejected(
                422,
                f"KPI {spec.id!r}, field 'timestamp': day {day} is outside {FIRST_DAY} .. "
                f"{self.today()} (a value is stored only for a day that has been observed)",
            )
        wire = json.dumps(update.to_wire(), ensure_ascii=False)
        if any(secret in wire for secret in self._secret_texts):
            raise Rejected(422, f"KPI {spec.id!r}: the push contains a configured secret")
        return spec, update

    async def handle(self, request: Request, kind: Kind) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.wait_for(client)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return _json(429, {"error": "rate limit exceeded"}, {"Retry-After": str(retry)})
        try:
            body = await self._body(request)
            if not self.verifier.verify(body, request.headers):
                return _json(401, UNAUTHORISED)
            self._content_type(request)
            spec, update = self._validate(kind, self._decode(body))
        except Rejected as rejected:
            return _json(rejected.status, {"error": rejected.reason}, rejected.headers)
        except ClientDisconnect:
            return Response(status_code=400)
        push = Push(
            kind=kind,
            webhook_id=request.headers["webhook-id"],
            kpi_id=spec.id,
            day=_utc_day(update.timestamp),
            received_at=time.time(),
            update=update.to_wire(),
        )
        try:
            if self.journal is not None:
                receipt = await self.journal.accept_async(push)
            else:
                receipt = await run_in_threadpool(self.inbox.accept, push)
        except StorageError:
            # Nothing was acknowledged: the sender retries with the same webhook-id.
            return _json(
                503, {"error": "the inbox cannot be written now; retry"}, {"Retry-After": "5"}
            )
        kept = receipt.push
        answer = {
            "status": receipt.outcome,
            "kpiId": kept.kpi_id,
            "day": kept.day.isoformat(),
            "webhookId": kept.webhook_id,
        }
        if receipt.outcome == "conflict":
            answer["error"] = (
                f"KPI {kept.kpi_id!r} already has another value accepted for {kept.day} "
                f"(webhook-id {kept.webhook_id!r}); a KPI-day keeps its first push"
            )
            return _json(409, answer)
        return _json(202 if receipt.outcome == "accepted" else 200, answer)

    def health(self, request: Request) -> Response:
        return _json(200, {"status": "ok", "kpis": len(self.kpis)})

    def asgi(self) -> Starlette:
        async def kpi_data(request: Request) -> Response:
            return await self.handle(request, "data")

        async def kpi_error(request: Request) -> Response:
            return await self.handle(request, "error")

        async def health(request: Request) -> Response:
            return self.health(request)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette):
            if self.journal is not None:
                await run_in_threadpool(self.journal.start)
            yield

        return Starlette(
            lifespan=lifespan,
            routes=[
                Route("/api/kpi-data", kpi_data, methods=["POST"]),
                Route("/api/kpi-error", kpi_error, methods=["POST"]),
                Route("/api/health", health, methods=["GET"]),
            ],
        )


def _check_timestamp(value: str) -> None:
    """The contract's own timestamp rule, checked before parse_update builds any answer."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        ok = parsed.tzinfo is not None and parsed.astimezone(UTC) is not None
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        raise Rejected(
            422,
            f"field 'timestamp': expected an ISO 8601 timestamp in UTC such as "
            f"2026-01-31T12:00:00Z, got {_describe(value)}",
        )


def _utc_day(timestamp: str) -> date:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC).date()


def _json(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=headers)
