"""The alert ledger: what was alerted, to which channel, with what outcome.

One JSON object in the store (`alerts/ledger.json` for KPI alerts, `alerts/operators.json`
for operator alerts), read-modify-written through `ObjectStore.update` (a file lock locally,
`If-Match` on S3/R2), so the sensor and `daily-index alerts check --send` can share it.

A notice is claimed in the ledger (channels marked `sending`) *before* anything is sent and
settled (`sent` / `failed` / `dead`) after: a crash between the two leaves `sending`, which is
never resent (at most once beats twice). A `failed` channel is retried on the next tick, up to
`max_attempts`, then `dead`. Only redacted URLs and scrubbed errors are stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from daily_index.storage.objectstore import ObjectStore, StorageError

KPI_LEDGER_KEY = "alerts/ledger.json"
OPERATOR_LEDGER_KEY = "alerts/operators.json"
LEDGER_VERSION = 1
KEEP_DAYS = 400
"""Entries older than this are dropped: longer than any cooldown, short enough to stay small."""

SENDING, SENT, FAILED, DEAD, DROPPED = "sending", "sent", "failed", "dead", "dropped"


@dataclass(frozen=True)
class Notice:
    """One thing to tell people about: a KPI alert or an operator alert, rendered as text."""

    key: str
    title: str
    text: str
    kpi_id: str | None = None
    day: date | None = None
    rule: str | None = None
    kind: str | None = None
    cooldown_days: int = 0


@dataclass(frozen=True)
class Claim:
    """What this caller may send now: per channel, the notices of its digest."""

    fresh: list[Notice]
    """Notices new to the ledger and not held back by a cooldown."""
    cooled: list[Notice]
    """Notices new to the ledger but inside a cooldown of the same rule: recorded, not sent."""
    by_channel: dict[str, list[str]] = field(default_factory=dict)
    """Channel id -> ledger keys to send to it (new notices and retries)."""
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Ledger key -> (title, text) for every key in `by_channel`."""


def now_iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


def _empty() -> dict[str, Any]:
    return {"version": LEDGER_VERSION, "entries": {}}


def _decode(data: bytes | None, where: str) -> dict[str, Any]:
    if data is None:
        return _empty()
    try:
        doc = json.loads(data)
    except ValueError:
        raise StorageError(f"{where}: the alert ledger is not JSON; fix or remove it") from None
    if not isinstance(doc, dict) or doc.get("version") != LEDGER_VERSION:
        raise StorageError(f"{where}: unknown alert ledger version {doc.get('version')!r}")
    doc.setdefault("entries", {})
    return doc


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def in_cooldown(entries: Mapping[str, Mapping[str, Any]], notice: Notice) -> bool:
    """A fired notice of the same KPI and rule lies within the notice's cooldown."""
    if not notice.cooldown_days or notice.day is None:
        return False
    for entry in entries.values():
        if (
            entry.get("kpi") == notice.kpi_id
            and entry.get("rule") == notice.rule
            and entry.get("suppressed") is None
            and entry.get("day")
            and abs((date.fromisoformat(entry["day"]) - notice.day).days) <= notice.cooldown_days
        ):
            return True
    return False


def _prune(entries: dict[str, Any], now: datetime) -> None:
    cutoff = (now - timedelta(days=KEEP_DAYS)).date()
    for key in [
        k
        for k, e in entries.items()
        if date.fromisoformat((e.get("day") or e["created_at"])[:10]) < cutoff
    ]:
        del entries[key]


class AlertLedger:
    """The ledger at one key of a store."""

    def __init__(self, store: ObjectStore, key: str = KPI_LEDGER_KEY) -> None:
        self.store = store
        self.key = key
        self.where = f"{store.description}, {key}"

    def read(self) -> dict[str, dict[str, Any]]:
        """Every entry by notice key."""
        return _decode(self.store.read_bytes(self.key), self.where)["entries"]

    def _update(self, mutate: Callable[[dict[str, Any]], None]) -> None:
        def apply(current: bytes | None) -> bytes:
            doc = _decode(current, self.where)
            mutate(doc["entries"])
            return _encode(doc)

        self.store.update(self.key, apply, content_type="application/json")

    def claim(
        self,
        notices: Sequence[Notice],
        channels: Callable[[str | None, str | None, str | None], Mapping[str, str]],
        *,
        now: datetime,
    ) -> Claim:
        """Record new notices and take the channels to send to now, in one write.

        Args:
            notices: What fired; those already in the ledger are left alone.
            channels: For a (KPI id, rule, kind) the channels that want it: channel id ->
                redacted URL.
            now: The time recorded.

        Returns:
            The claim: new, cooled-down, and per channel the keys to send.
        """
        fresh: list[Notice] = []
        cooled: list[Notice] = []
        by_channel: dict[str, list[str]] = {}
        texts: dict[str, tuple[str, str]] = {}
        stamp = now_iso(now)

        def mutate(entries: dict[str, Any]) -> None:
            fresh.clear()
            cooled.clear()
            by_channel.clear()
            texts.clear()
            # Retries first: a channel that failed last tick gets its old notices again.
            for key, entry in entries.items():
                wanted = channels(entry.get("kpi"), entry.get("rule"), entry.get("kind"))
                for channel_id, state in entry["channels"].items():
                    if state["status"] != FAILED:
                        continue
                    if channel_id not in wanted:
                        # The recipient left the file or no longer watches this: stop retrying.
                        state.update(status=DROPPED, updated_at=stamp)
                        continue
                    state.update(status=SENDING, attempts=state["attempts"] + 1, updated_at=stamp)
                    by_channel.setdefault(channel_id, []).append(key)
                    texts[key] = (entry["title"], entry["text"])
            for notice in sorted(notices, key=lambda n: (n.day or date.min, n.key)):
                if notice.key in entries:
                    continue
                suppressed = "cooldown" if in_cooldown(entries, notice) else None
                targets = (
                    {} if suppressed else dict(channels(notice.kpi_id, notice.rule, notice.kind))
                )
                entries[notice.key] = {
                    "kpi": notice.kpi_id,
                    "day": notice.day.isoformat() if notice.day else None,
                    "rule": notice.rule,
                    "kind": notice.kind,
                    "title": notice.title,
                    "text": notice.text,
                    "created_at": stamp,
                    "suppressed": suppressed,
                    "channels": {
                        channel_id: {
                            "url": url,
                            "status": SENDING,
                            "attempts": 1,
                            "error": None,
                            "updated_at": stamp,
                        }
                        for channel_id, url in targets.items()
                    },
                }
                (cooled if suppressed else fresh).append(notice)
                for channel_id in targets:
                    by_channel.setdefault(channel_id, []).append(notice.key)
                texts[notice.key] = (notice.title, notice.text)
            _prune(entries, now)

        self._update(mutate)
        return Claim(list(fresh), list(cooled), dict(by_channel), dict(texts))

    def settle(
        self,
        results: Mapping[str, str | None],
        by_channel: Mapping[str, Sequence[str]],
        *,
        now: datetime,
        max_attempts: int,
    ) -> None:
        """Record each channel's outcome (None: sent, else the scrubbed error)."""
        stamp = now_iso(now)

        def mutate(entries: dict[str, Any]) -> None:
            for channel_id, error in results.items():
                for key in by_channel.get(channel_id, ()):
                    state = entries.get(key, {}).get("channels", {}).get(channel_id)
                    if state is None:
                        continue
                    if error is None:
                        status = SENT
                    else:
                        status = DEAD if state["attempts"] >= max_attempts else FAILED
                    state.update(status=status, error=error, updated_at=stamp)

        self._update(mutate)
