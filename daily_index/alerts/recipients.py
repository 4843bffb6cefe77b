"""Who receives KPI alerts: a YAML or CSV recipients file, or the local outbox by default.

Each recipient has apprise URLs (each URL is its own channel and gets its own digest) and a
watchlist: the KPIs (`kpis`) and rules (`rules`: rule names or kinds) it wants; empty means
all. Unlike the subscriber file, a bad entry is an error naming the file, line and field:
an alert that silently goes nowhere is worse than a sensor that says why it stopped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daily_index.delivery.outbox import outbox_url
from daily_index.delivery.subscribers import as_list, instantiate, redact_url

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A recipient's lists also split on commas (one CSV cell: "btc_price, fear_greed").
_LIST_SEPARATORS = r"[\s;,]+"
FIELDS = ("id", "name", "urls", "kpis", "rules")


class RecipientsError(ValueError):
    """A recipients file that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Recipient:
    """One alert recipient; `urls` carry secrets and stay out of `repr`."""

    id: str
    name: str
    urls: tuple[str, ...] = field(repr=False)
    kpis: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()

    def wants(self, kpi_id: str | None, rule: str | None, kind: str | None) -> bool:
        """Whether the watchlist covers an alert of this KPI and rule (name or kind)."""
        if self.kpis and kpi_id not in self.kpis:
            return False
        return not self.rules or rule in self.rules or kind in self.rules

    def channels(self) -> list[tuple[str, str]]:
        """(channel id, apprise URL) per URL: `<id>:1`, `<id>:2`, ..."""
        return [(f"{self.id}:{n}", url) for n, url in enumerate(self.urls, start=1)]


def outbox_recipient(folder: str | Path) -> Recipient:
    """The default recipient: every alert, written as JSON into `folder`."""
    return Recipient(id="outbox", name="Local outbox", urls=(outbox_url(folder),))


def operator_recipient(urls: Collection[str], outbox_folder: str | Path) -> Recipient:
    """The operators: the given apprise URLs, else the outbox folder."""
    urls = tuple(urls) or (outbox_url(outbox_folder),)
    return Recipient(id="operators", name="Operators", urls=urls)


def parse_url_list(raw: str | None, *, variable: str) -> tuple[str, ...]:
    """Comma-separated apprise URLs (an environment variable); each must be usable."""
    urls = tuple(u.strip() for u in (raw or "").split(",") if u.strip())
    for number, url in enumerate(urls, start=1):
        if instantiate(url) is None:
            raise RecipientsError(
                f"{variable}: URL #{number} ({redact_url(url)}) is not a usable apprise URL"
            )
    return urls


def _yaml_entries(text: str) -> list[tuple[int, Any]]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode):
        root = next((v for k, v in root.value if k.value == "recipients"), None)
        data = data.get("recipients")
    if not isinstance(root, yaml.SequenceNode) or not isinstance(data, list):
        raise ValueError("expected a list of recipients (or a `recipients:` list)")
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, data, strict=True)]


def _csv_entries(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(text.splitlines(keepends=True), skipinitialspace=True)
    entries = []
    for row in reader:
        if not any(isinstance(v, str) and v.strip() for v in row.values()):
            continue
        entries.append(
            (
                reader.line_num,
                {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()},
            )
        )
    return entries


def _build(
    entry: Any,
    where: str,
    seen: set[str],
    known_kpis: Collection[str] | None,
    known_rules: Collection[str] | None,
) -> Recipient:
    def fail(field_name: str, message: str) -> RecipientsError:
        return RecipientsError(f"{where}, field {field_name!r}: {message}")

    if not isinstance(entry, dict):
        raise RecipientsError(f"{where}: entry is not a mapping of fields")
    unknown = sorted(set(entry) - set(FIELDS) - {"url"})
    if unknown:
        raise fail(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    rid = str(entry.get("id") or "").strip()
    if not rid:
        raise fail("id", "missing")
    if not _ID_RE.match(rid):
        raise fail("id", f"must be letters, digits, '_', '.', '-', got {rid[:40]!r}")
    if rid in seen:
        raise fail("id", f"duplicate recipient id {rid!r}")
    urls = as_list(entry.get("urls", entry.get("url")), _LIST_SEPARATORS)
    if not urls:
        raise fail("urls", "missing: at least one apprise URL")
    for number, url in enumerate(urls, start=1):
        if instantiate(url) is None:
            raise fail(
                "urls",
                f"URL #{number} ({redact_url(url)}) is not a usable apprise URL "
                "(unknown scheme or missing/invalid parts)",
            )
    kpis = as_list(entry.get("kpis"), _LIST_SEPARATORS)
    kpis = [] if kpis in (["*"], ["all"]) else kpis
    if known_kpis is not None:
        strange = [k for k in kpis if k not in known_kpis]
        if strange:
            raise fail("kpis", f"unknown KPI id(s): {', '.join(strange[:5])}")
    rules = as_list(entry.get("rules"), _LIST_SEPARATORS)
    rules = [] if rules in (["*"], ["all"]) else rules
    if known_rules is not None:
        strange = [r for r in rules if r not in known_rules]
        if strange:
            raise fail("rules", f"unknown rule name(s) or kind(s): {', '.join(strange[:5])}")
    seen.add(rid)
    return Recipient(
        id=rid,
        name=str(entry.get("name") or rid).strip(),
        urls=tuple(urls),
        kpis=frozenset(kpis),
        rules=frozenset(rules),
    )


def load_recipients(
    path: str | Path,
    *,
    known_kpis: Collection[str] | None = None,
    known_rules: Collection[str] | None = None,
) -> list[Recipient]:
    """Read a recipients file (`.yaml`/`.yml` or `.csv`; the suffix picks the format).

    Args:
        path: The file.
        known_kpis: KPI ids a watchlist may name (None: not checked).
        known_rules: Rule names and kinds a watchlist may name (None: not checked).

    Returns:
        The recipients, in file order.

    Raises:
        RecipientsError: The file or one of its entries cannot be used; the message names
            the file, the line and the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipientsError(f"{path}: cannot read the recipients file: {exc.strerror}") from None
    try:
        entries = _csv_entries(text) if path.suffix.lower() == ".csv" else _yaml_entries(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipientsError(f"{path}: not valid YAML{where}") from None
    except (ValueError, csv.Error) as exc:
        raise RecipientsError(f"{path}: {exc}") from None
    seen: set[str] = set()
    recipients = [
        _build(entry, f"{path}: line {line}", seen, known_kpis, known_rules)
        for line, entry in entries
    ]
    if not recipients:
        raise RecipientsError(f"{path}: no recipients in the file")
    return recipients
