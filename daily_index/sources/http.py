"""The one HTTP call every source makes: timeouts, bounded retries, readable failures.

Retries (exponential backoff with jitter, via tenacity) cover what a second try can fix:
connection errors, timeouts, 5xx and 429. A 429 or 503 carrying `Retry-After` waits what the
server asked, capped by `settings.backoff_max_s`. Other 4xx fail at once: asking again with
the same request gets the same answer.

Bodies are read as a stream and refused past `settings.max_response_bytes`, decoded strictly
as UTF-8 (JSON's only encoding on the wire, RFC 8259), and their nesting depth is checked
before `json.loads`, whose recursion a deep body would otherwise exhaust.

Every failure becomes a `SourceError` whose reason names the host and path (never the query
string, where API keys live) and what went wrong, in words an operator can act on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from daily_index.sources.base import SourceSettings

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
    """Honour the server's Retry-After when it sent one, else exponential backoff + jitter."""

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
                return min(asked, self._max)
        return min(self._backoff(retry_state), self._max)


@dataclass
class Http:
    """One KPI's HTTP calls on the batch's shared client; counts the attempts made."""

    client: httpx.AsyncClient
    settings: SourceSettings
    attempts: int = 0
    secrets: tuple[str | None, ...] = field(default=())

    async def get_json(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return await self.request_json("GET", url, params=params, headers=headers)

    async def post_json(self, url: str, body: Any, *, headers: dict[str, str] | None = None) -> Any:
        return await self.request_json("POST", url, json_body=body, headers=headers)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call the endpoint with retries and return the decoded JSON body.

        Raises:
            SourceError: the call failed for good (after retries where they make sense), or
                the body is not JSON.
        """
        settings = self.settings
        # The per-attempt timeout comes from our settings even on a caller's client.
        request = self.client.build_request(
            method,
            url,
            params=params,
            json=json_body,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
        )
        place = where(request.url)
        attempts_before = self.attempts

        async def attempt() -> tuple[httpx.Response, bytes]:
            self.attempts += 1
            try:
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
                raise _RetryableError("status", response=response, body=body)
            return response, body

        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, settings.max_attempts)),
            wait=_WaitRetryAfter(settings),
            retry=retry_if_exception(lambda exc: isinstance(exc, _RetryableError)),
            reraise=True,
        )
        try:
            response, body = await retrying(attempt)
        except _RetryableError as exc:
            tries = self.attempts - attempts_before
            raise self._final_error(exc, place, tries) from None

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

    def _final_error(self, exc: _RetryableError, place: str, tries: int) -> SourceError:
        plural = "attempt" if tries == 1 else "attempts"
        if exc.kind == "timeout":
            return SourceError(
                f"timed out after {_seconds(self.settings.timeout_s)} waiting for {place} "
                f"({tries} {plural})",
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
