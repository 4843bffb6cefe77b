"""The one HTTP call every source makes: timeouts, bounded retries, readable failures.

Retries (exponential backoff with jitter, via tenacity) cover what a second try can fix:
connection errors, timeouts, 5xx and 429. A 429 or 5xx carrying `Retry-After` waits what the
server asked, and holds the source's other requests as long; a server asking for more than
`settings.retry_after_max_s`, or for more than is left of the batch's fetch budget, fails at
once with a reason naming the wait. Other 4xx fail at once: asking again with the same
request gets the same answer.

Every attempt first passes its source family's rate limiter and then the batch's
concurrency bound. Identical GETs of one batch are sent once and their answer shared
(`Batch.shared`); the decoded JSON is then read by several KPI-days, so sources never
modify it.

Bodies are read as a stream and refused past `settings.max_response_bytes`, decoded strictly
as UTF-8 (JSON's only encoding on the wire, RFC 8259), and their nesting depth is checked
before `json.loads`, whose recursion a deep body would otherwise exhaust.

Every failure becomes a `SourceError` whose reason names the host and path (never the query
string, where API keys live) and what went wrong, in words an operator can act on.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from daily_index.sources.base import (
    FETCH_BUDGET_ENV,
    RETRY_AFTER_MAX_ENV,
    SourceSettings,
    family_name,
)
from daily_index.sources.batch import Batch, BudgetExceeded

T = TypeVar("T")
_API_KEY_RE = re.compile(r"(api_key=)[^&\s'\"]*", re.IGNORECASE)
# A JSON string literal (unrolled loop: no backtracking), dropped before counting brackets.
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR_RE = re.compile(r"\[\]|\{\}")
# Error bodies are only mined for a message; a deeper one is described, not parsed.
_ERROR_BODY_DEPTH = 64
_ERROR_BODY_BYTES = 65_536
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = {b"\xff\xfe": "UTF-16 little-endian", b"\xfe\xff": "UTF-16 big-endian"}
MAX_RESPONSE_BYTES_ENV = "DAILY_INDEX_MAX_RESPONSE_BYTES"
MAX_JSON_DEPTH_ENV = "DAILY_INDEX_MAX_JSON_DEPTH"


class SourceError(Exception):
    """A per-KPI failure with a reason a person can act on; becomes a KPIErrorUpdate."""

    def __init__(self, reason: str, code: str, *, retryable: bool = False, **metadata: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retryable = retryable
        self.metadata = metadata
        # HTTP attempts and seconds waited before this failure (KPI-days may share them).
        self.attempts = 0
        self.waited_s = 0.0

    def copy(self) -> SourceError:
        """A fresh instance, so one KPI-day's edits never reach another's error."""
        twin = SourceError(self.reason, self.code, retryable=self.retryable, **self.metadata)
        twin.attempts = self.attempts
        twin.waited_s = self.waited_s
        return twin


class _Attempts(Exception):
    """A call's final SourceError with the attempts and waits it took (internal to `Http`)."""

    def __init__(self, tries: int, waited_s: float, error: SourceError) -> None:
        super().__init__(error.reason)
        self.tries = tries
        self.waited_s = waited_s
        self.error = error


class _RetryableError(Exception):
    """An attempt that failed in a way another attempt may fix (internal to the retry loop)."""

    def __init__(
        self,
        kind: str,
        *,
        response: httpx.Response | None = None,
        body: bytes = b"",
        detail: str = "",
    ):
        super().__init__(kind)
        self.kind = kind
        self.response = response
        self.body = body
        self.detail = detail


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove API keys from a URL or message: `api_key=` values and any known secret."""
    text = _API_KEY_RE.sub(r"\1***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def where(url: httpx.URL | str) -> str:
    """`host[:port]/path` of a URL: enough to find the endpoint, never the query string."""
    parsed = httpx.URL(str(url))
    host = parsed.host + (f":{parsed.port}" if parsed.port else "")
    return f"{host}{parsed.path}"


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds asked by a `Retry-After` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _seconds(value: float) -> str:
    return f"{value:g} s"


def describe_body(body: bytes) -> str:
    """A short, safe description of a body that is not the JSON we wanted."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return "the body is empty"
    head = text[:200].lower()
    if head.startswith("<!doctype html") or "<html" in head or "<body" in head:
        return "looks like an HTML page"
    snippet = text[:60].replace("\n", " ")
    return f"starts with {snippet!r}"


def _charset(response: httpx.Response) -> str | None:
    content_type = response.headers.get("content-type", "")
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip().strip('"')
    return None


def decode_utf8(body: bytes, place: str, response: httpx.Response) -> str:
    """The body as text, strictly UTF-8 (a leading UTF-8 byte-order mark is dropped).

    Raises:
        SourceError: `invalid_encoding`, naming what the body looks like instead.
    """
    declared = _charset(response)
    said = f"; the server declares charset={declared}" if declared else ""
    for bom, name in _UTF16_BOMS.items():
        if body.startswith(bom):
            raise SourceError(
                f"response from {place} is {name} (byte-order mark); JSON must be UTF-8{said}",
                "invalid_encoding",
                status=response.status_code,
            )
    if b"\x00" in body[:4096]:
        # JSON text never holds a raw NUL byte; UTF-16/32 text is full of them.
        raise SourceError(
            f"response from {place} contains NUL bytes, so it looks like UTF-16 or UTF-32 "
            f"without a byte-order mark; JSON must be UTF-8{said}",
            "invalid_encoding",
            status=response.status_code,
        )
    content = body.removeprefix(_UTF8_BOM)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(body) - len(content)
        raise SourceError(
            f"response from {place} is not valid UTF-8 (byte 0x{content[exc.start]:02x} at "
            f"offset {offset}){said}; JSON must be UTF-8",
            "invalid_encoding",
            status=response.status_code,
        ) from None


def json_depth(text: str, limit: int) -> int:
    """How deep arrays and objects nest in a JSON text, counted up to `limit + 1`.

    Brackets inside strings do not count. Each pass drops the innermost empty pairs, so the
    number of passes is the depth, and a hostile body costs at most `limit + 1` passes.
    """
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    depth = 0
    while brackets and depth <= limit:
        reduced = _EMPTY_PAIR_RE.sub("", brackets)
        if reduced == brackets:
            break
        brackets = reduced
        depth += 1
    # What is left does not pair up (not JSON), yet json.loads would still recurse into each
    # opening bracket before noticing: count the open ones too.
    level = 0
    for char in brackets:
        level = level + 1 if char in "[{" else max(level - 1, 0)
        if depth + level > limit:
            return limit + 1
    return depth


def _api_message(body: bytes) -> str:
    """The API's own error text, from the usual fields of a JSON error body."""
    try:
        text = body.removeprefix(_UTF8_BOM).decode("utf-8")
        if json_depth(text, _ERROR_BODY_DEPTH) > _ERROR_BODY_DEPTH:
            return describe_body(body)
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return describe_body(body)
    if isinstance(parsed, dict):
        nested = parsed.get("status") if isinstance(parsed.get("status"), dict) else {}
        for key in ("error_message", "msg", "message", "error"):
            for holder in (parsed, nested):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value[:200]
    return json.dumps(parsed)[:120]


class _WaitRetryAfter(wait_base):
    """Wait what the server's Retry-After asked, else exponential backoff with jitter.

    A Retry-After beyond the cap or the budget never gets here: it failed the call at once.
    """

    def __init__(self, settings: SourceSettings) -> None:
        self._max = settings.backoff_max_s
        self._backoff = wait_exponential_jitter(
            multiplier=settings.backoff_base_s,
            max=settings.backoff_max_s,
            jitter=settings.backoff_base_s,
        )

    def __call__(self, retry_state: Any) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.response is not None:
            asked = retry_after_s(exc.response)
            if asked is not None:
                return asked
        return min(self._backoff(retry_state), self._max)


def _wait_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"


@dataclass
class Http:
    """One KPI-day's HTTP calls on the batch's shared client.

    Counts the attempts made and the seconds waited (Retry-After, backoff, rate limit) by
    the calls this KPI-day used, shared ones included.
    """

    client: httpx.AsyncClient
    settings: SourceSettings
    batch: Batch
    attempts: int = 0
    waited_s: float = 0.0
    secrets: tuple[str | None, ...] = field(default=())

    async def get_json(
        self,
        url: str,
        *,
        family: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """GET a JSON answer, sent once per batch for the same URL, query and headers."""
        key = (
            "GET",
            url,
            tuple(sorted((name, str(value)) for name, value in (params or {}).items())),
            tuple(sorted((headers or {}).items())),
        )
        return await self._counted(
            self.batch.shared(
                key,
                lambda: self._call("GET", url, family=family, params=params, headers=headers),
            ),
            shared=True,
        )

    async def shared(self, key: Any, make: Callable[[Http], Awaitable[T]]) -> T:
        """`make(http)` computed once per batch for `key` (e.g. every page of a range).

        `make` gets its own `Http`, whose attempts and waits are added to every KPI-day that
        needed the result, failure included.
        """

        async def run() -> tuple[T, int, float]:
            own = Http(
                client=self.client, settings=self.settings, batch=self.batch, secrets=self.secrets
            )
            try:
                return await make(own), own.attempts, own.waited_s
            except SourceError as exc:
                exc.attempts, exc.waited_s = own.attempts, own.waited_s
                raise

        return await self._counted(self.batch.shared(("shared", key), run), shared=True)

    async def post_json(
        self,
        url: str,
        body: Any,
        *,
        family: str,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        retry_timeouts: bool = True,
    ) -> Any:
        """POST a JSON body (never shared: each trigger is its own).

        `timeout_s` replaces the settings' timeout for this call; `retry_timeouts=False`
        sends nothing again after a timeout (a far end that keeps working on an abandoned
        request would do the work twice).
        """
        return await self._counted(
            self._call(
                "POST",
                url,
                family=family,
                json_body=body,
                headers=headers,
                timeout_s=timeout_s,
                retry_timeouts=retry_timeouts,
            ),
            shared=False,
        )

    async def _counted(self, call: Awaitable[tuple[T, int, float]], *, shared: bool) -> T:
        """Await `(result, attempts, waited_s)` and add its cost to this KPI-day, failure too.

        A shared call's error is raised as a copy: every KPI-day that needed it gets its own.
        """
        try:
            result, attempts, waited_s = await call
        except SourceError as exc:
            self.attempts += exc.attempts
            self.waited_s += exc.waited_s
            if shared:
                raise exc.copy() from None
            raise
        self.attempts += attempts
        self.waited_s += waited_s
        return result

    async def _call(
        self,
        method: str,
        url: str,
        *,
        family: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        retry_timeouts: bool = True,
    ) -> tuple[Any, int, float]:
        """Call the endpoint with retries: the decoded JSON body, attempts, seconds waited.

        Raises:
            SourceError: the call failed for good (after retries where they make sense), or
                the body is not JSON; its `attempts` and `waited_s` say what it cost.
        """
        try:
            return await self._request_json(
                method,
                url,
                family,
                params=params,
                json_body=json_body,
                headers=headers,
                timeout_s=timeout_s if timeout_s is not None else self.settings.timeout_s,
                retry_timeouts=retry_timeouts,
            )
        except _Attempts as counted:
            counted.error.attempts = counted.tries
            counted.error.waited_s = counted.waited_s
            raise counted.error from None

    async def _request_json(
        self,
        method: str,
        url: str,
        family: str,
        *,
        params: dict[str, Any] | None,
        json_body: Any,
        headers: dict[str, str] | None,
        timeout_s: float,
        retry_timeouts: bool,
    ) -> tuple[Any, int, float]:
        settings = self.settings
        batch = self.batch
        limiter = batch.limiter(family)
        # The per-attempt timeout comes from our settings even on a caller's client.
        request = self.client.build_request(
            method,
            url,
            params=params,
            json=json_body,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
        )
        place = where(request.url)
        tries = 0
        waited = 0.0

        async def sleep(seconds: float) -> None:
            nonlocal waited
            waited += seconds
            await asyncio.sleep(seconds)

        async def attempt() -> tuple[httpx.Response, bytes]:
            nonlocal tries, waited
            try:
                waited += await limiter.acquire(batch.deadline)
            except BudgetExceeded as exc:
                raise SourceError(
                    exc.reason, "budget_exceeded", retryable=True, waitS=round(exc.wait_s, 1)
                ) from None
            tries += 1
            batch.calls[family] += 1
            try:
                async with batch.slot(family):
                    response = await self.client.send(request, stream=True)
                    try:
                        body = await self._read_capped(response, place)
                    finally:
                        await response.aclose()
            except httpx.TimeoutException as exc:
                raise _RetryableError("timeout", detail=type(exc).__name__) from None
            except httpx.DecodingError as exc:
                raise SourceError(
                    f"response from {place} could not be decompressed "
                    f"(Content-Encoding {response.headers.get('content-encoding')!r}: {exc})",
                    "invalid_encoding",
                    status=response.status_code,
                ) from None
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise _RetryableError("connection", detail=detail) from None
            if response.status_code == 429 or response.status_code >= 500:
                asked = retry_after_s(response)
                if asked is not None:
                    self._refuse_long_wait(asked, family, place, response.status_code)
                    limiter.pause(asked)
                raise _RetryableError("status", response=response, body=body)
            return response, body

        def past_budget(retry_state: Any) -> bool:
            left = batch.left_s()
            return left is not None and retry_state.upcoming_sleep > left

        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, settings.max_attempts)) | past_budget,
            wait=_WaitRetryAfter(settings),
            retry=retry_if_exception(
                lambda exc: (
                    isinstance(exc, _RetryableError) and (retry_timeouts or exc.kind != "timeout")
                )
            ),
            sleep=sleep,
            reraise=True,
        )
        try:
            response, body = await retrying(attempt)
        except _RetryableError as exc:
            error = self._final_error(exc, place, tries, timeout_s, retry_timeouts)
            raise _Attempts(tries, waited, error) from None
        except SourceError as exc:
            raise _Attempts(tries, waited, exc) from None
        try:
            return self._decode(response, body, place), tries, waited
        except SourceError as exc:
            raise _Attempts(tries, waited, exc) from None

    def _refuse_long_wait(self, asked: float, family: str, place: str, status: int) -> None:
        """Fail at once when the server asks for a wait beyond the cap or the budget.

        Raises:
            SourceError: `rate_limited`, naming the wait asked for and the limit it passes.
        """
        cap = self.settings.retry_after_max_s
        wait = _wait_text(asked)
        left = self.batch.left_s()
        if asked > cap:
            limit = f"more than {RETRY_AFTER_MAX_ENV}={cap:g}"
        elif left is not None and asked > left:
            limit = (
                f"more than the {_wait_text(max(left, 0.0))} left of the fetch budget "
                f"({FETCH_BUDGET_ENV}={self.settings.fetch_budget_s:g})"
            )
        else:
            return
        raise SourceError(
            f"{family_name(family)} asked to wait {wait} (Retry-After), {limit}; HTTP {status} "
            f"from {place}, not retried",
            "rate_limited",
            retryable=True,
            status=status,
            retryAfterS=round(asked, 1),
        )

    def _decode(self, response: httpx.Response, body: bytes, place: str) -> Any:
        settings = self.settings
        if response.status_code >= 400:
            message = redact(_api_message(body), self.secrets)
            raise SourceError(
                f"HTTP {response.status_code} from {place}: {message}",
                "http_error",
                retryable=False,
                status=response.status_code,
            )
        text = decode_utf8(body, place, response)
        if json_depth(text, settings.max_json_depth) > settings.max_json_depth:
            raise SourceError(
                f"response from {place} nests more than {settings.max_json_depth} levels deep "
                f"(the limit, set by {MAX_JSON_DEPTH_ENV}); not parsed",
                "too_deep",
                status=response.status_code,
            )
        try:
            return json.loads(text)
        except ValueError:
            raise SourceError(
                f"response from {place} is not JSON ({describe_body(body)})",
                "invalid_json",
                retryable=False,
                status=response.status_code,
            ) from None

    async def _read_capped(self, response: httpx.Response, place: str) -> bytes:
        """The (decompressed) body, refused as soon as it passes the size cap.

        An error status's body is only read for its message: its head, never refused, so a
        503 with a big HTML page is still retried as a 503.
        """
        failed = response.status_code >= 400
        cap = _ERROR_BODY_BYTES if failed else self.settings.max_response_bytes
        too_large = SourceError(
            f"response from {place} is larger than {cap:,} bytes (the cap, set by "
            f"{MAX_RESPONSE_BYTES_ENV}); not read further",
            "too_large",
            status=response.status_code,
        )
        declared = response.headers.get("content-length", "")
        compressed = "content-encoding" in response.headers
        if not failed and declared.isdigit() and int(declared) > cap and not compressed:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                if failed:
                    chunks.append(chunk[: cap - size + len(chunk)])
                    break
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _final_error(
        self,
        exc: _RetryableError,
        place: str,
        tries: int,
        timeout_s: float,
        retry_timeouts: bool,
    ) -> SourceError:
        plural = "attempt" if tries == 1 else "attempts"
        if exc.kind == "timeout" and not retry_timeouts:
            plural += "; not sent again: the far end may still be working on it"
        elif tries < self.settings.max_attempts:
            plural += (
                f"; no more: the next wait would pass the fetch budget ({FETCH_BUDGET_ENV}="
                f"{self.settings.fetch_budget_s:g})"
            )
        if exc.kind == "timeout":
            return SourceError(
                f"timed out after {_seconds(timeout_s)} waiting for {place} ({tries} {plural})",
                "timeout",
                retryable=True,
            )
        if exc.kind == "connection":
            return SourceError(
                f"could not reach {place} after {tries} {plural} "
                f"({redact(exc.detail, self.secrets)})",
                "connection_error",
                retryable=True,
            )
        response = exc.response
        status = response.status_code if response is not None else 0
        label = " (rate limited)" if status == 429 else ""
        extra = ""
        if response is not None and describe_body(exc.body) == "looks like an HTML page":
            extra = "; the body looks like an HTML page"
        return SourceError(
            f"HTTP {status}{label} from {place} after {tries} {plural}{extra}",
            "rate_limited" if status == 429 else "http_error",
            retryable=True,
            status=status,
        )
