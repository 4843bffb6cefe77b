"""Fetch RSS/Atom feeds and turn them into one day's deduplicated headlines.

Each feed is fetched with httpx under a size cap and a time limit (the whole body, not
only each read, so a server trickling bytes cannot hold the step), and parsed with
feedparser from the bytes we read (feedparser never touches the network here). A feed
that fails in any way (HTTP error, not XML, too large, too slow, not a feed) is recorded
with its reason and skipped; the other feeds are used.

A headline belongs to the UTC day it was published (or, without a published date, last
updated). A headline with neither date cannot be placed on a day: it is counted per feed
as `undated` and not stored, the same rule as a KPI value, which is only stored for the
day it was observed.
"""

from __future__ import annotations

import html
import re
import time
import xml.sax
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

ENV_FEEDS = "DAILY_INDEX_NEWS_FEEDS"
ENV_TIMEOUT = "DAILY_INDEX_NEWS_TIMEOUT_S"
ENV_MAX_BYTES = "DAILY_INDEX_NEWS_MAX_BYTES"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 2_000_000
"""A feed bigger than this is refused (real news feeds are tens to hundreds of kB)."""
TITLE_MAX = 300
SUMMARY_MAX = 600
MAX_FEEDS = 100

_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[^\w]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

FeedState = Literal["ok", "failed"]


class NewsConfigError(ValueError):
    """The news settings cannot be used; the message names the variable and the value."""


@dataclass(frozen=True)
class NewsSettings:
    feeds: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> NewsSettings:
        """Feeds from DAILY_INDEX_NEWS_FEEDS (comma-separated http(s) URLs; empty: none).

        Raises:
            NewsConfigError: a URL is not http(s), or the timeout or size is not a positive
                number (the message names the variable and the entry).
        """
        raw = environ.get(ENV_FEEDS, "") or ""
        feeds: list[str] = []
        for position, entry in enumerate(raw.split(","), start=1):
            url = entry.strip()
            if not url:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise NewsConfigError(
                    f"{ENV_FEEDS}: entry {position} ({url[:80]!r}) is not an http(s) URL"
                )
            if url not in feeds:
                feeds.append(url)
        if len(feeds) > MAX_FEEDS:
            raise NewsConfigError(f"{ENV_FEEDS}: {len(feeds)} feeds, at most {MAX_FEEDS}")
        return cls(
            feeds=tuple(feeds),
            timeout_s=_positive(environ, ENV_TIMEOUT, DEFAULT_TIMEOUT_S),
            max_bytes=int(_positive(environ, ENV_MAX_BYTES, DEFAULT_MAX_BYTES)),
        )


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise NewsConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class Headline:
    title: str
    link: str
    source: str
    published: datetime
    """UTC."""
    summary: str


@dataclass(frozen=True)
class FeedResult:
    """What one feed gave: its state, why it failed, and how many items went where."""

    url: str
    state: FeedState
    reason: str | None = None
    source: str | None = None
    items: int = 0
    of_the_day: int = 0
    undated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FeedFailure(Exception):
    pass


def _text(value: Any, limit: int) -> str:
    """Plain text: tags dropped, entities decoded, blanks collapsed, control chars gone."""
    if not isinstance(value, str):
        return ""
    text = _SPACES.sub(" ", _CONTROL.sub("", html.unescape(_TAGS.sub(" ", value)))).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(value: Any) -> str:
    """An http(s) link, else "" (a `javascript:` or relative link is never kept)."""
    if not isinstance(value, str):
        return ""
    link = value.strip()
    parts = urlsplit(link)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return link[:1000]


def safe_url(url: str) -> str:
    """The feed's URL as shown in metadata: no credentials, no query (it may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def link_key(link: str) -> str:
    """The link as compared for duplicates: lower-case host, no fragment or trailing slash."""
    parts = urlsplit(link)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def title_key(title: str) -> str:
    """The title as compared for duplicates: case-folded, words only."""
    return _NOT_WORD.sub(" ", title.casefold()).strip()


def _published(entry: Mapping[str, Any]) -> datetime | None:
    for name in ("published_parsed", "updated_parsed"):
        parsed = entry.get(name)
        if parsed:
            # feedparser normalises every date it understands to a UTC struct_time.
            return datetime(*parsed[:6], tzinfo=UTC)
    return None


def fetch_feed_bytes(client: httpx.Client, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
    """The feed's body, or `_FeedFailure` with a reason a person can act on."""
    deadline = time.monotonic() + timeout_s
    try:
        with client.stream("GET", url, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise _FeedFailure(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _FeedFailure(f"too large: {int(declared):,} bytes (limit {max_bytes:,})")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _FeedFailure(f"too large: more than {max_bytes:,} bytes")
                if time.monotonic() > deadline:
                    raise _FeedFailure(f"too slow: not complete within {timeout_s:g} s")
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise _FeedFailure(f"too slow: no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise _FeedFailure(f"cannot fetch ({type(exc).__name__})") from None
    return b"".join(chunks)


def parse_feed(url: str, data: bytes, day: date) -> tuple[list[Headline], FeedResult]:
    """The day's headlines of one feed body; `_FeedFailure` when it is not an RSS/Atom feed."""
    import feedparser

    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head != b"<":
        raise _FeedFailure("not XML (an RSS or Atom feed was expected)")
    parsed = feedparser.parse(data)
    version = parsed.get("version") or ""
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if isinstance(problem, xml.sax.SAXParseException):
        # feedparser's loose parser would read on; a broken feed is not half-trusted.
        raise _FeedFailure(
            f"not a valid RSS/Atom feed: XML not well-formed at line {problem.getLineNumber()}"
        )
    if problem is not None and not parsed.entries:
        raise _FeedFailure(f"not a valid RSS/Atom feed ({type(problem).__name__})")
    if not version and not parsed.entries:
        raise _FeedFailure("XML but not an RSS or Atom feed")
    source = _text(parsed.feed.get("title"), 120) or urlsplit(url).netloc
    headlines, undated = [], 0
    for entry in parsed.entries:
        title = _text(entry.get("title"), TITLE_MAX)
        if not title:
            continue
        moment = _published(entry)
        if moment is None:
            undated += 1
            continue
        if moment.date() != day:
            continue
        headlines.append(
            Headline(
                title=title,
                link=_link(entry.get("link")),
                source=source,
                published=moment,
                summary=_text(entry.get("summary"), SUMMARY_MAX),
            )
        )
    result = FeedResult(
        url=safe_url(url),
        state="ok",
        source=source,
        items=len(parsed.entries),
        of_the_day=len(headlines),
        undated=undated,
    )
    return headlines, result


def deduplicate(headlines: Sequence[Headline]) -> list[Headline]:
    """The first of each headline seen under the same link or the same normalised title."""
    links: set[str] = set()
    titles: set[str] = set()
    kept = []
    for headline in headlines:
        lkey = link_key(headline.link) if headline.link else None
        tkey = title_key(headline.title)
        if (lkey is not None and lkey in links) or tkey in titles:
            continue
        if lkey is not None:
            links.add(lkey)
        titles.add(tkey)
        kept.append(headline)
    return kept


def collect_headlines(
    settings: NewsSettings, day: date, *, transport: httpx.BaseTransport | None = None
) -> tuple[list[Headline], list[FeedResult]]:
    """Every configured feed's headlines of `day`, deduplicated, and each feed's result.

    Feeds are read one after another in the configured order (the first feed's copy of a
    duplicate is kept); a failed feed costs at most its timeout.
    """
    found: list[Headline] = []
    results: list[FeedResult] = []
    with httpx.Client(
        follow_redirects=True,
        max_redirects=3,
        headers={"User-Agent": "daily-index-tracker (news)", "Accept": "application/xml"},
        transport=transport,
    ) as client:
        for url in settings.feeds:
            try:
                data = fetch_feed_bytes(
                    client, url, timeout_s=settings.timeout_s, max_bytes=settings.max_bytes
                )
                headlines, result = parse_feed(url, data, day)
            except _FeedFailure as exc:
                results.append(FeedResult(url=safe_url(url), state="failed", reason=str(exc)))
                continue
            found.extend(headlines)
            results.append(result)
    return deduplicate(found), results
