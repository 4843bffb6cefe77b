"""The read API: the KPI list, each KPI's stored series, the day's PDF, a health check.

Every request needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`),
checked before anything else: without a valid one every path, existing or not, gets the
same 401, so the answer says nothing about which KPIs or reports exist. Each key has its
own token bucket (429 with `Retry-After` when it is empty). Bad parameters are a 400 or
422 naming the parameter; an unreadable store is a 503, never a 500 with a trace.

Series bodies are built by the export code (`daily_index.exports`), so an answer is the
same bytes `daily-index export --kpi ID --format F` writes for that window: values exactly
as stored, a day without a value empty (CSV), null (JSON, Parquet), never 0, and the unit
in the column name (`btc_price [USD]`) and the JSON's `kpis` block. A report is the copy
the delivery kept of what it sent, so a later rebuild never changes it.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from daily_index import exports
from daily_index.api.cache import ResponseCache, SeriesCache, etag_of
from daily_index.api.settings import ApiSettings, digest
from daily_index.delivery.ledger import EDITION_PATTERN, delivered_pdf_key
from daily_index.registry import KpiSpec, Registry, RegistryError, load_registry, registry_path
from daily_index.storage.objectstore import ObjectStore, StorageError
from daily_index.storage.series import series_key

log = logging.getLogger("daily_index.api")

FORMATS = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
SERIES_PARAMETERS = ("from", "to", "format")
MAX_WINDOW_DAYS = 20_000
"""The longest window a series request may cover (about 55 years): bounds an answer's size."""
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def report_key(day: date) -> str:
    """The day's built PDF, as the report's IO manager writes it (`reports/<date>.pdf`)."""
    return f"reports/{day.isoformat()}.pdf"


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None):
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class BadParameter(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class HotAnswer:
    """A built 200 answer and the versions (series object, registry file) it was built from."""

    __slots__ = ("key", "version", "registry_version", "headers", "body")

    def __init__(self, key: str, version: Any, registry_version: Any, response: Response):
        self.key = key
        self.version = version
        self.registry_version = registry_version
        self.headers = response.raw_headers
        self.body = response.body

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class HotAnswers:
    """Answers by exact URL (path and query string), at most `size` of them and `max_bytes`."""

    def __init__(self, size: int = 4096, max_bytes: int = 64 * 1024 * 1024):
        self.size = size
        self.max_bytes = max_bytes
        self._answers: dict[tuple[str, bytes], HotAnswer] = {}
        self._bytes = 0

    def get(self, url: tuple[str, bytes]) -> HotAnswer | None:
        return self._answers.get(url)

    def remember(self, url: tuple[str, bytes], answer: HotAnswer) -> None:
        if len(answer.body) > self.max_bytes:
            return
        previous = self._answers.pop(url, None)
        if previous is not None:
            self._bytes -= len(previous.body)
        self._answers[url] = answer
        self._bytes += len(answer.body)
        # Dropping the oldest is enough: an evicted answer is only rebuilt from the cache.
        while len(self._answers) > self.size or self._bytes > self.max_bytes:
            oldest = next(iter(self._answers))
            self._bytes -= len(self._answers.pop(oldest).body)


class RateLimiter:
    """A token bucket per key: `limit` requests per `window_s`, refilled continuously.

    Used from the event loop only (one thread), so it needs no lock.
    """

    def __init__(self, limit: int, window_s: float):
        self.limit = limit
        self.rate = limit / window_s if limit else math.inf
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key_index: int, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until it would."""
        if not self.limit:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(key_index, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_index] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_index] = (tokens, now)
        return (1.0 - tokens) / self.rate


class ApiKeyGate:
    """ASGI middleware: the key check and the rate limit, before routing (see module doc)."""

    def __init__(self, app: ASGIApp, settings: ApiSettings, api: ReadApi | None = None):
        self.app = app
        self.api = api
        self.digests = settings.key_digests
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_window_s)

    def key_index(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        presented = None
        api_key = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
            elif name == b"x-api-key":
                api_key = value.strip()
        presented = presented if presented is not None else api_key
        if not presented:
            return None
        # Compare digests (equal length) against every key, without stopping at a match:
        # the time taken says nothing about how much of a key was right, or which one.
        candidate = digest(presented)
        found = None
        for index, known in enumerate(self.digests):
            if hmac.compare_digest(candidate, known):
                found = index
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        index = self.key_index(scope["headers"])
        if index is None:
            response = _error(
                401,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key>, or X-API-Key)",
                {"WWW-Authenticate": 'Bearer realm="daily-index"'},
            )
            await response(scope, receive, send)
            return
        wait = self.limiter.take(index)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            response = _error(
                429,
                "rate_limited",
                f"this key's limit is {self.limiter.limit} requests per "
                f"{self.limiter.limit / self.limiter.rate:g} s; retry in {retry_after} s",
                {"Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        if self.api is not None:
            hot = self.api.hot_answer(scope)
            if hot is not None:
                await hot.send(send)
                return
        await self.app(scope, receive, send)


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadParameter(422, f"query parameter {name!r} is given {len(values)} times")
    return values[0] if values else None


def parse_day(value: str, where: str) -> date:
    """A date as YYYY-MM-DD (nothing else), or BadParameter naming `where`."""
    if not _DATE_RE.fullmatch(value):
        raise BadParameter(422, f"{where}: expected a date as YYYY-MM-DD, got {value[:40]!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadParameter(422, f"{where}: {value!r} is not a calendar date") from None


class ReadApi:
    """The endpoints, over one store and the registry in use."""

    def __init__(
        self,
        settings: ApiSettings,
        store: ObjectStore,
        environ: Mapping[str, str] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.environ = dict(environ) if environ is not None else None
        self.series = SeriesCache(store, settings.cache_ttl_s)
        self.answers = ResponseCache()
        self.hot = HotAnswers()
        self._registry_file = registry_path(self.environ)
        # The version is taken before the read: an edit in between is read on the next request.
        self._registry_version = self._registry_mtime()
        self._registry = load_registry(self._registry_file)
        self._specs = {spec.id: spec for spec in self._registry.kpis}

    def _registry_mtime(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._registry_file)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def registry(self) -> Registry:
        """The registry in use, read again when its file changes (one `stat` per request).

        A file made invalid while serving keeps the last good registry (and says so in the log).
        """
        version = self._registry_mtime()
        if version != self._registry_version:
            self._registry_version = version
            try:
                self._registry = load_registry(self._registry_file)
                self._specs = {spec.id: spec for spec in self._registry.kpis}
            except RegistryError as exc:
                log.warning("registry not reloaded, serving the last valid one: %s", exc)
        return self._registry

    def spec(self, kpi_id: str) -> KpiSpec | None:
        self.registry()
        return self._specs.get(kpi_id)

    async def _read(self, function: Callable[..., Any], *args: Any, cheap: bool) -> Any:
        # Reads that wait on the network go to a worker thread; a cache hit stays on the loop.
        return function(*args) if cheap else await run_in_threadpool(function, *args)

    async def health(self, request: Request) -> Response:
        registry = self.registry()
        try:
            await run_in_threadpool(self.store.list, "kpi/")
        except StorageError as exc:
            log.error("health: storage unreachable: %s", exc)
            return _error(503, "storage_unavailable", "the store cannot be read")
        return JSONResponse(
            {"status": "ok", "registry_version": registry.version, "kpis": len(registry.kpis)}
        )

    async def kpis(self, request: Request) -> Response:
        if request.query_params:
            raise BadParameter(400, "this endpoint takes no query parameters")
        specs = self.registry().kpis
        cheap = all(self.series.is_cheap(spec.id) for spec in specs)
        stored = await self._read(lambda: [self.series.get(spec.id) for spec in specs], cheap=cheap)
        listing = [
            {
                "id": spec.id,
                "name": spec.name,
                "unit": spec.unit,
                "type": spec.type,
                "category": spec.metadata.category,
                "description": spec.description,
                "active": spec.active,
                "first_day": series.first.isoformat() if series.first else None,
                "last_day": series.last.isoformat() if series.last else None,
                "observations": len(series.rows),
            }
            for spec, series in zip(specs, stored, strict=True)
        ]
        return JSONResponse({"kpis": listing})

    async def series_of(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - set(SERIES_PARAMETERS))
        if unknown:
            raise BadParameter(
                400,
                f"unknown query parameter {unknown[0][:40]!r} "
                f"(known: {', '.join(SERIES_PARAMETERS)})",
            )
        fmt = _one(request, "format") or "json"
        if fmt not in FORMATS:
            raise BadParameter(
                422, f"format: expected one of {', '.join(FORMATS)}, got {fmt[:40]!r}"
            )
        start_text, end_text = _one(request, "from"), _one(request, "to")
        start = parse_day(start_text, "from") if start_text is not None else None
        end = parse_day(end_text, "to") if end_text is not None else None
        if start and end and start > end:
            raise BadParameter(422, f"from ({start}) is after to ({end})")
        kpi_id = request.path_params["kpi_id"]
        spec = self.spec(kpi_id)
        if spec is None:
            return _error(404, "not_found", "no KPI with this id")
        try:
            stored = await self._read(self.series.get, spec.id, cheap=self.series.is_cheap(spec.id))
        except StorageError as exc:
            log.error("series %s: %s", spec.id, exc)
            return _error(
                503, "storage_unavailable", f"the stored series of {spec.id!r} cannot be read"
            )
        first, last = start or stored.first, end or stored.last
        if first and last and (last - first).days + 1 > MAX_WINDOW_DAYS:
            raise BadParameter(
                422,
                f"the window {first} to {last} is {(last - first).days + 1} days; "
                f"at most {MAX_WINDOW_DAYS} (narrow it with from and to)",
            )
        cache_key = (spec.id, stored.version, spec.name, spec.unit, start, end, fmt)
        answer = self.answers.get(cache_key)
        if answer is None:
            data = exports.collect(self.series, [spec], start=start, end=end)
            answer = self.answers.put(cache_key, exports.render(data, fmt, "wide"))  # type: ignore[arg-type]
        body, etag = answer
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if fmt != "json":
            window = f"{first or 'empty'}_{last or 'empty'}"
            headers["Content-Disposition"] = f'attachment; filename="{spec.id}_{window}.{fmt}"'
        if etag in _if_none_match(request):
            return Response(status_code=304, headers=headers)
        response = Response(body, media_type=FORMATS[fmt], headers=headers)
        self.hot.remember(
            (request.scope["path"], request.scope["query_string"]),
            HotAnswer(series_key(spec.id), stored.version, self._registry_version, response),
        )
        return response

    def hot_answer(self, scope: Scope) -> HotAnswer | None:
        """The answer already built for exactly this URL, if it still holds.

        It holds while the series object and the registry file are unchanged; a request
        with `If-None-Match`, or whose version check would wait on the network, takes the
        normal path. Skipping routing and parameter parsing is most of a request's cost.
        """
        if scope["method"] != "GET":
            return None
        found = self.hot.get((scope["path"], scope["query_string"]))
        if found is None or found.registry_version != self._registry_mtime():
            return None
        if any(name == b"if-none-match" for name, _ in scope["headers"]):
            return None
        versions = self.series.versions
        try:
            if not versions.is_cheap(found.key) or versions.version(found.key) != found.version:
                return None
        except StorageError:
            return None  # the normal path answers 503 and logs why
        return found

    async def report(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"edition"})
        if unknown:
            raise BadParameter(400, f"unknown query parameter {unknown[0][:40]!r} (known: edition)")
        day = parse_day(request.path_params["day"], "date")
        edition = _one(request, "edition")
        if edition is not None and not EDITION_PATTERN.fullmatch(edition):
            raise BadParameter(
                422,
                f"edition: expected a short name of a-z, 0-9 and '-' (e.g. amended), "
                f"got {edition[:40]!r}",
            )
        try:
            found = await run_in_threadpool(self._report, day, edition)
        except StorageError as exc:
            log.error("report %s: %s", day, exc)
            return _error(503, "storage_unavailable", f"the report of {day} cannot be read")
        if found is None:
            which = f"{edition} edition of the report" if edition else "report"
            return _error(404, "not_found", f"no {which} is stored for {day}")
        data, source = found
        etag = etag_of(data)
        headers = {
            "ETag": etag,
            "Cache-Control": "private, no-cache",
            "Content-Disposition": f'inline; filename="daily-index-{day}'
            + (f".{edition}" if edition else "")
            + '.pdf"',
            "X-Report-Source": source,
        }
        if etag in _if_none_match(request):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="application/pdf", headers=headers)

    def _report(self, day: date, edition: str | None) -> tuple[bytes, str] | None:
        """The delivered copy of the edition; for the day's first edition, else the built PDF.

        The delivery keeps each edition exactly as it was sent; a day delivered before those
        copies were kept (or not delivered yet) has only the built `reports/<date>.pdf`.
        """
        delivered = self.store.read_bytes(delivered_pdf_key(day, edition))
        if delivered is not None:
            return delivered, "delivered"
        if edition is not None:
            return None
        built = self.store.read_bytes(report_key(day))
        return None if built is None else (built, "built")


def _if_none_match(request: Request) -> set[str]:
    header = request.headers.get("if-none-match")
    return {tag.strip() for tag in header.split(",")} if header else set()


def _handle(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadParameter as exc:
            return _error(exc.status, "invalid_request", exc.detail)
        except StorageError as exc:
            # The store's message names paths and buckets: it goes to the log, not the client.
            log.error("%s: %s", request.url.path, exc)
            return _error(503, "storage_unavailable", "the store cannot be read")

    return wrapped


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return _error(500, "internal_error", "the server failed on this request; see its log")


def create_app(
    *,
    settings: ApiSettings,
    store: ObjectStore,
    environ: Mapping[str, str] | None = None,
) -> ASGIApp:
    """The ASGI application of `daily-index serve-api`.

    Args:
        settings: keys, rate limit and cache settings (`ApiSettings.from_env`).
        store: where the series and reports are read from.
        environ: where the registry's location is read (default: the process environment).

    Raises:
        RegistryError: the registry in use is not valid.
    """
    api = ReadApi(settings, store, environ)
    routes = [
        Route("/v1/health", _handle(api.health), methods=["GET"]),
        Route("/v1/kpis", _handle(api.kpis), methods=["GET"]),
        Route("/v1/kpis/{kpi_id}/series", _handle(api.series_of), methods=["GET"]),
        Route("/v1/reports/{day}", _handle(api.report), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    return ApiKeyGate(app, settings, api)
