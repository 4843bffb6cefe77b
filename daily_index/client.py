"""A small typed client of the read API (`daily-index serve-api`).

```python
from daily_index.client import DailyIndexClient

with DailyIndexClient("http://127.0.0.1:8788", api_key) as client:
    kpis = client.kpis()                        # list[KpiInfo]
    btc = client.series("btc_price", start="2026-01-01")   # pandas Series, DatetimeIndex
    pdf = client.report("2026-03-31")           # bytes
```

Requests are retried, a bounded number of times: after a 429 the client waits what
`Retry-After` asks (up to `max_wait_s`; a longer wait fails at once, naming it), after a
5xx or a connection error it backs off exponentially with jitter. Failures are exceptions
of `ApiError`'s family; their messages name the request and the server's reason, never
the key.
"""

from __future__ import annotations

import csv
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import quote

import httpx
import pandas as pd
import pyarrow.parquet as pq

SeriesFormat = Literal["parquet", "csv", "json"]


class ApiError(Exception):
    """A request to the read API failed; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthenticationError(ApiError):
    """The key was refused (401)."""


class NotFoundError(ApiError):
    """No such KPI, or no report stored for that day (404)."""


class InvalidRequestError(ApiError):
    """A parameter was refused (400/422); the message says which and why."""


class RateLimitedError(ApiError):
    """Still rate limited after the retries, or asked to wait longer than `max_wait_s`."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message, 429)
        self.retry_after = retry_after


class ServerError(ApiError):
    """The server kept failing (5xx) or could not be reached."""


@dataclass(frozen=True)
class KpiInfo:
    id: str
    name: str
    unit: str
    type: str
    category: str
    description: str
    active: bool
    first_day: date | None
    last_day: date | None
    observations: int


@dataclass(frozen=True)
class Retry:
    """One retry the client made: why (the status, or None for no answer) and the wait."""

    path: str
    status: int | None
    wait_s: float


def _day(value: date | str | None, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{name}: expected a date as YYYY-MM-DD, got {value!r}") from None


class DailyIndexClient:
    """The read API at `base_url`, with one API key.

    Args:
        base_url: where `daily-index serve-api` listens (`http://127.0.0.1:8788`).
        api_key: one of the server's `DAILY_INDEX_API_KEYS`.
        timeout_s: per request.
        max_attempts: attempts per call, the first included (429, 5xx, no answer).
        backoff_s: the first backoff after a 5xx or no answer; doubled each time.
        max_wait_s: the longest single wait: a `Retry-After` above it fails at once.
        on_retry: called with each `Retry` before its wait (e.g. to log it).
        transport: an httpx transport (tests, proxies); default httpx's own.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        on_retry: Callable[[Retry], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if not api_key:
            raise ValueError("an API key is needed (one of the server's DAILY_INDEX_API_KEYS)")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.on_retry = on_retry
        self.retries: list[Retry] = []
        """Every retry made so far, oldest first."""
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "daily-index-client"},
            timeout=timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"DailyIndexClient({str(self._http.base_url)!r})"

    def __enter__(self) -> DailyIndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict:
        return self._get("/v1/health").json()

    def kpis(self) -> list[KpiInfo]:
        """Every KPI of the server's registry, with its first and last stored day."""
        listing = self._get("/v1/kpis").json()["kpis"]
        return [
            KpiInfo(
                id=item["id"],
                name=item["name"],
                unit=item["unit"],
                type=item["type"],
                category=item["category"],
                description=item["description"],
                active=item["active"],
                first_day=date.fromisoformat(item["first_day"]) if item["first_day"] else None,
                last_day=date.fromisoformat(item["last_day"]) if item["last_day"] else None,
                observations=item["observations"],
            )
            for item in listing
        ]

    def series(
        self,
        kpi_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        format: SeriesFormat = "parquet",  # noqa: A002 (the API's own parameter name)
        dropna: bool = True,
    ) -> pd.Series:
        """The KPI's stored values from `start` to `end` (default: all of them).

        Returns:
            A float Series named `kpi_id` on a DatetimeIndex (ns) named `date`, with the unit
            in `attrs["unit"]`. With `dropna` (default) only the days with a value; without,
            a row per day of the window, NaN where nothing is stored (never 0).
        """
        params = {"format": format}
        if (first := _day(start, "start")) is not None:
            params["from"] = first
        if (last := _day(end, "end")) is not None:
            params["to"] = last
        response = self._get(f"/v1/kpis/{quote(kpi_id, safe='')}/series", params=params)
        if format == "json":
            body = response.json()
            unit = body["kpis"][kpi_id]["unit"]
            days = [row["date"] for row in body["rows"]]
            values = [row.get(kpi_id) for row in body["rows"]]
        elif format == "parquet":
            table = pq.read_table(io.BytesIO(response.content))
            column = table.column_names[1]
            days = [d.isoformat() for d in table.column("date").to_pylist()]
            values = table.column(column).to_pylist()
            unit = _unit(column, kpi_id)
        else:
            # Parsed by float(), not pandas: the CSV's shortest spellings come back as exactly
            # the stored floats.
            lines = list(csv.reader(io.StringIO(response.text)))
            column = lines[0][1]
            days = [line[0] for line in lines[1:]]
            values = [float(line[1]) if line[1] else None for line in lines[1:]]
            unit = _unit(column, kpi_id)
        index = pd.DatetimeIndex(pd.to_datetime(days, format="%Y-%m-%d"), name="date").as_unit("ns")
        result = pd.Series(
            [float("nan") if v is None else float(v) for v in values],
            index=index,
            name=kpi_id,
            dtype="float64",
        )
        result.attrs["unit"] = unit
        return result.dropna() if dropna else result

    def report(self, day: date | str, edition: str | None = None) -> bytes:
        """The day's PDF report as delivered (`edition="amended"`: its amended edition)."""
        params = {"edition": edition} if edition else None
        return self._get(f"/v1/reports/{_day(day, 'day')}", params=params).content

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                reason = f"no answer ({type(exc).__name__})"
                if last:
                    raise ServerError(
                        f"GET {path}: {reason} after {attempt} attempt(s)", None
                    ) from None
                self._wait(path, None, self._backoff(attempt))
                continue
            status = response.status_code
            if status < 400:
                return response
            detail = _detail(response)
            if status == 429:
                wait = _retry_after(response)
                if wait is not None and wait > self.max_wait_s:
                    raise RateLimitedError(
                        f"GET {path}: rate limited; the server asks to wait {wait:g} s, more "
                        f"than max_wait_s={self.max_wait_s:g}",
                        wait,
                    )
                if last:
                    raise RateLimitedError(
                        f"GET {path}: still rate limited after {attempt} attempt(s): {detail}",
                        wait,
                    )
                self._wait(path, status, self._backoff(attempt) if wait is None else wait)
                continue
            if status >= 500:
                if last:
                    raise ServerError(
                        f"GET {path}: HTTP {status} after {attempt} attempt(s): {detail}", status
                    )
                self._wait(path, status, self._backoff(attempt))
                continue
            kind = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError}.get(
                status, InvalidRequestError if status in (400, 422) else ApiError
            )
            raise kind(f"GET {path}: HTTP {status}: {detail}", status)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        base = self.backoff_s * 2 ** (attempt - 1)
        return min(self.max_wait_s, base + random.uniform(0, base / 2))  # noqa: S311 (jitter)

    def _wait(self, path: str, status: int | None, wait_s: float) -> None:
        retry = Retry(path, status, wait_s)
        self.retries.append(retry)
        if self.on_retry is not None:
            self.on_retry(retry)
        time.sleep(wait_s)


def _unit(column: str, kpi_id: str) -> str:
    """The unit from a column named `<id> [<unit>]` (no brackets: no unit)."""
    prefix = f"{kpi_id} ["
    return column[len(prefix) : -1] if column.startswith(prefix) and column.endswith("]") else ""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"][:500]
    return response.reason_phrase


def _retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
