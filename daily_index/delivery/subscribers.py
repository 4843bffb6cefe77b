"""Who receives the daily report, read from a YAML or CSV subscriber file.

A bad entry (missing field, URL apprise cannot use, unknown `receives`) becomes a
`Problem` carrying its line number and is skipped; the rest load. URLs hold secrets
(passwords, bot tokens, webhook keys), so anything meant for people shows them only in
apprise's privacy form (`url(privacy=True)`) or scrubbed.
"""

from __future__ import annotations

import copy
import csv
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise
import yaml
from apprise.manager_plugins import NotificationManager

from daily_index.delivery.outbox import outbox_url
from daily_index.inputfiles import InputFileError, read_utf8

Receives = Literal["pdf", "link", "summary"]
RECEIVES: tuple[str, ...] = ("pdf", "link", "summary")

# One asset for every plugin we build. async_mode off and no service_timeout keep each
# send inline in the calling thread: with a timeout, apprise hands every call to its own
# shared pool of min(32, cpus + 4) workers, which capped us at 6 sends in flight on 2 cores
# whatever our own concurrency. Slow receivers are bounded by the plugins' socket
# timeouts instead (URL options cto= and rto=, 4 s each by default). Secure logging keeps
# apprise's own messages redacted.
ASSET = apprise.AppriseAsset(async_mode=False, secure_logging=True, service_timeout=0)


@dataclass(frozen=True)
class Subscriber:
    """One recipient of the report and the channels that reach them.

    `urls` are apprise URLs, each its own delivery endpoint; `fallback` is tried when a
    primary channel fails. The URLs are secret-bearing and kept out of `repr`.
    """

    id: str
    name: str
    urls: tuple[str, ...] = field(repr=False)
    fallback: str | None = field(default=None, repr=False)
    tags: tuple[str, ...] = ()
    receives: Receives = "pdf"


@dataclass(frozen=True)
class Problem:
    """A skipped subscriber entry: where it is and what is wrong (no secrets)."""

    line: int
    message: str
    subscriber_id: str | None = None

    def __str__(self) -> str:
        who = f" ({self.subscriber_id})" if self.subscriber_id else ""
        return f"line {self.line}{who}: {self.message}"


class SubscriberFileError(ValueError):
    """The subscriber file as a whole is unusable; the message names the file and why."""


@dataclass(frozen=True)
class SubscriberList:
    subscribers: list[Subscriber]
    problems: list[Problem]


PROBLEMS_LISTED = 20
"""Skipped entries listed by name in a summary; the rest are counted, with their lines."""


def line_ranges(lines: list[int]) -> str:
    """Line numbers as compact ranges: `3-7, 9, 12-40`."""
    ranges: list[list[int]] = []
    for line in sorted(set(lines)):
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def problems_summary(problems: list[Problem], *, listed: int = PROBLEMS_LISTED) -> dict[str, Any]:
    """Skipped entries in one record: how many, the first `listed`, and every line number.

    One record (one log event, one metadata entry), whatever the count: a file with tens
    of thousands of bad rows must not become tens of thousands of events.
    """
    return {
        "count": len(problems),
        "first": [str(p) for p in problems[:listed]],
        "lines": line_ranges([p.line for p in problems]),
    }


def problems_message(problems: list[Problem], *, file: str | Path) -> str:
    """The one warning that reports every skipped entry of a subscriber file."""
    summary = problems_summary(problems)
    shown = "\n".join(f"  {text}" for text in summary["first"])
    more = summary["count"] - len(summary["first"])
    tail = f"\n  ... and {more} more" if more else ""
    return (
        f"{summary['count']} subscriber entr{'y' if summary['count'] == 1 else 'ies'} of "
        f"{Path(file).name} skipped (lines {summary['lines']}):\n{shown}{tail}"
    )


# Apprise's registry of plugins (ours included): an unknown scheme is refused here in a
# dict lookup instead of by `instantiate`, which costs about 1 ms logging its warning
# (49,995 bad rows in one file took minutes).
_PLUGINS = NotificationManager()


@functools.lru_cache(maxsize=100_000)
def _parsed(url: str) -> Any | None:
    """The plugin for `url`, parsed once per process (a run checks, shows and sends it).

    The steps of `Apprise.instantiate(url)` without its log lines: it formats a masked
    copy of the URL, the parsed fields and the plugin's URL for them whether or not the
    log level shows them, about two thirds of the cost of parsing 5,000 endpoints.
    """
    schema = channel_kind(url)
    plugin_class = _PLUGINS[schema] if schema in _PLUGINS else None
    if plugin_class is None or not plugin_class.enabled:
        return None
    # As apprise does: a `/#channel` path segment is a channel, not a URL fragment.
    fields = plugin_class.parse_url(url.replace("/#", "/%23"))
    if not fields:
        return None
    try:
        plugin = plugin_class(**{**fields, "tag": set(), "asset": ASSET})
    except Exception:  # apprise's own rule: a URL its plugin refuses is unusable
        return None
    return plugin if plugin.enabled else None


def instantiate(url: str) -> Any | None:
    """The apprise plugin for `url` (a copy of its own), or None when apprise cannot use it."""
    plugin = _parsed(url)
    return None if plugin is None else copy.copy(plugin)


def _unusable_form(url: str) -> str:
    """What is shown of a URL apprise cannot parse: its scheme, never the rest."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return f"{scheme[:20]}://(redacted)" if scheme else "(redacted)"


# Query parameters whose value is hidden in every URL we store or show: apprise's header
# (`+Name=`) and payload (`-name=`) parameters carry API keys and bearer tokens, and any
# parameter named like a credential.
_SECRET_PARAM = re.compile(
    r"^[+-]|token|key|secret|pass|auth|sig|cred|session|cookie|bearer", re.IGNORECASE
)


def _redact_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(value and _SECRET_PARAM.search(name) for name, value in pairs):
        return url
    masked = [(n, "****" if v and _SECRET_PARAM.search(n) else v) for n, v in pairs]
    return urlunsplit(parts._replace(query=urlencode(masked, safe="*:/@")))


@functools.lru_cache(maxsize=100_000)
def redact_url(url: str) -> str:
    """A form of `url` safe for logs, errors and the ledger.

    Apprise's privacy form (`url(privacy=True)`) hides passwords and tokens in the path,
    but shows header and payload parameters (`json://host/?+X-Api-Key=...`) as given:
    their values, and those of credential-named parameters (`?token=`), are masked too.
    """
    plugin = _parsed(url)
    if plugin is not None:
        return _redact_query(plugin.url(privacy=True))
    # Apprise cannot parse it, so we cannot tell secrets from the rest: keep the scheme.
    return _unusable_form(url)


def channel_kind(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "unknown"


_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")


def scrub(text: str, urls: list[str | None] | tuple[str | None, ...]) -> str:
    """Remove anything secret-looking from `urls` that appears verbatim in `text`.

    Every URL fragment of 6+ characters that the privacy URL does not show (passwords,
    tokens, webhook keys) is masked.
    """
    for url in urls:
        if not url:
            continue
        shown = redact_url(url)
        parts = urlsplit(url) if "://" in url else None
        secrets = {p for p in _SPLIT.split(url) if len(p) >= 6 and p not in shown}
        if parts is not None and parts.password:
            secrets.add(parts.password)
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
    return text


def as_list(value: Any, separators: str = r"[\s;]+") -> list[str]:
    """A YAML list, or a string split on `separators` (URLs may hold commas: not by default)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in re.split(separators, value.strip()) if v]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def _build(entry: Any, line: int, seen: set[str]) -> Subscriber | Problem:
    if not isinstance(entry, dict):
        return Problem(line, "entry is not a mapping of fields")
    sid = str(entry.get("id") or "").strip()
    name = str(entry.get("name") or "").strip()
    urls = as_list(entry.get("urls", entry.get("url")))
    fallback = str(entry.get("fallback") or "").strip() or None
    receives = str(entry.get("receives") or "pdf").strip().lower()
    missing = [f for f, v in (("id", sid), ("name", name), ("url", urls)) if not v]
    if missing:
        return Problem(line, f"missing field(s): {', '.join(missing)}", sid or None)
    if sid in seen:
        return Problem(line, f"duplicate subscriber id {sid!r}", sid)
    if receives not in RECEIVES:
        return Problem(
            line, f"receives must be one of {', '.join(RECEIVES)}, got {receives[:20]!r}", sid
        )
    for label, url in [*(("url", u) for u in urls), ("fallback", fallback)]:
        if url is not None and _parsed(url) is None:
            return Problem(
                line,
                f"{label} {_unusable_form(url)} is not a usable apprise URL "
                "(unknown scheme or missing/invalid parts)",
                sid,
            )
    seen.add(sid)
    return Subscriber(
        id=sid,
        name=name,
        urls=tuple(urls),
        fallback=fallback,
        tags=tuple(as_list(entry.get("tags"))),
        receives=receives,
    )  # type: ignore[arg-type]


def _yaml_entries(text: str) -> list[tuple[int, Any]]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "subscribers":
                root = value
                break
        data = data.get("subscribers") if isinstance(data, dict) else None
    if not isinstance(root, yaml.SequenceNode) or not isinstance(data, list):
        raise ValueError("expected a list of subscribers (or a `subscribers:` list)")
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, data, strict=True)]


REQUIRED_COLUMNS = (("id",), ("name",), ("urls", "url"))


def _csv_entries(text: str, source: str) -> list[tuple[int, Any]]:
    entries = []
    reader = csv.DictReader(text.splitlines(keepends=True), skipinitialspace=True)
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    missing = [names for names in REQUIRED_COLUMNS if not any(n in header for n in names)]
    if missing:
        wanted = ", ".join(" or ".join(repr(n) for n in names) for names in missing)
        found = ", ".join(repr(h[:30]) for h in header) or "nothing"
        raise SubscriberFileError(
            f"{source}: the header row (line 1) has no {wanted} column; it has {found}. "
            "Expected: id,name,urls,fallback,tags,receives"
        )
    for row in reader:
        if not any(v.strip() for v in row.values() if isinstance(v, str)):
            continue
        clean = {
            (k or "").strip().lower(): (v.strip() if isinstance(v, str) else v)
            for k, v in row.items()
        }
        # line_num is the physical line the row ended on: the row's line for one-line rows.
        entries.append((reader.line_num, clean))
    return entries


def load_subscribers(path: str | Path) -> SubscriberList:
    """Read a subscriber file (`.yaml`/`.yml` or `.csv`, UTF-8), skipping bad entries.

    Args:
        path: The subscriber file; its suffix picks the format.

    Returns:
        The usable subscribers (at least one), and one `Problem` (with its line number)
        per skipped entry.

    Raises:
        SubscriberFileError: The file as a whole cannot be used: unreadable, not UTF-8,
            not valid YAML, a CSV without its `id`, `name` or `urls` column, or no usable
            subscriber at all (never a silent fallback to the outbox).
    """
    path = Path(path)
    try:
        text = read_utf8(path, what="subscriber file")
    except InputFileError as exc:
        raise SubscriberFileError(str(exc)) from None
    try:
        if path.suffix.lower() == ".csv":
            entries = _csv_entries(text, str(path))
        else:
            entries = _yaml_entries(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SubscriberFileError(f"{path}: not valid YAML{where}") from None
    except csv.Error as exc:
        raise SubscriberFileError(f"{path}: not a readable CSV file: {exc}") from None
    except SubscriberFileError:
        raise
    except ValueError as exc:
        raise SubscriberFileError(f"{path}: {exc}") from None
    subscribers: list[Subscriber] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, entry in entries:
        built = _build(entry, line, seen)
        (subscribers if isinstance(built, Subscriber) else problems).append(built)  # type: ignore[arg-type]
    if not subscribers:
        detail = f"; {problems_message(problems, file=path)}" if problems else " (no entries)"
        raise SubscriberFileError(f"{path}: no usable subscriber{detail}")
    return SubscriberList(subscribers, problems)


def outbox_subscriber(outbox_dir: str | Path) -> Subscriber:
    """The built-in subscriber used when no subscriber file is set.

    It "delivers" by writing each message (JSON) and the PDF into `outbox_dir`, through
    the same apprise path and ledger as every real channel.
    """
    return Subscriber(
        id="outbox",
        name="Local outbox",
        urls=(outbox_url(outbox_dir),),
        tags=("local",),
        receives="pdf",
    )
