"""The inbox of accepted pushes, on the object store (local directory or S3/R2).

Every key lives here:

- `ingest/data/<kpi>/<day>.json`: the accepted data push of a KPI-day, written create-only
  (the first accepted push of a KPI-day is the one kept: idempotent on (kpiId, day)).
- `ingest/error/<kpi>/<day>/<id-hash>.json`: an accepted error push (one per webhook-id).
- `ingest/ids/<id-hash>.json`: which record a `webhook-id` produced, create-only
  (idempotent on `webhook-id`, also across restarts).
- `ingest/queue/...`: a marker per record not yet materialised; the sensor removes it once
  the event log holds the materialisation (or observation) of that push.

The local backend writes through a temporary file, fsync and rename (then fsyncs the
folder); an S3/R2 PUT is durable when it returns. A 2xx is sent only after the record,
its id entry and its queue marker are all written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from daily_index.storage.objectstore import ObjectStore, PreconditionFailed, StorageError

PREFIX = "ingest/"
QUEUE = PREFIX + "queue/"
Kind = Literal["data", "error"]
Outcome = Literal["accepted", "duplicate", "conflict"]


def id_hash(webhook_id: str) -> str:
    """A fixed-length, path-safe name for a webhook-id (ids are chosen by the sender)."""
    return hashlib.sha256(webhook_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def record_key(kind: Kind, kpi_id: str, day: date, webhook_id: str) -> str:
    if kind == "data":
        return f"{PREFIX}data/{kpi_id}/{day.isoformat()}.json"
    return f"{PREFIX}error/{kpi_id}/{day.isoformat()}/{id_hash(webhook_id)}.json"


def id_key(webhook_id: str) -> str:
    return f"{PREFIX}ids/{id_hash(webhook_id)}.json"


def queue_key(record: str) -> str:
    return QUEUE + record[len(PREFIX) :]


def record_of(queue: str) -> str:
    return PREFIX + queue[len(QUEUE) :]


@dataclass(frozen=True)
class Push:
    """One accepted push as the inbox keeps it."""

    kind: Kind
    webhook_id: str
    kpi_id: str
    day: date
    received_at: float
    update: dict[str, Any]
    """The validated update in its wire form (camelCase, extras kept)."""

    @property
    def key(self) -> str:
        return record_key(self.kind, self.kpi_id, self.day, self.webhook_id)

    @property
    def fingerprint(self) -> str:
        """What makes two pushes of a KPI-day the same: the update without its trace."""
        same = {k: v for k, v in self.update.items() if k != "traceId"}
        return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "webhookId": self.webhook_id,
                "kpiId": self.kpi_id,
                "day": self.day.isoformat(),
                "receivedAt": self.received_at,
                "update": self.update,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Push:
        try:
            raw = json.loads(data)
            return cls(
                kind=raw["kind"],
                webhook_id=raw["webhookId"],
                kpi_id=raw["kpiId"],
                day=date.fromisoformat(raw["day"]),
                received_at=float(raw["receivedAt"]),
                update=dict(raw["update"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{where}: not an inbox record ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Receipt:
    """What the inbox did with a push: accepted now, a repeat, or a different value."""

    outcome: Outcome
    push: Push
    """The push the inbox holds for it (the earlier one for a repeat or a conflict)."""


class Inbox:
    """Accepted pushes on an object store; safe for concurrent writers and processes.

    `durable=False` is for filing pushes that are durable elsewhere already (the journal of
    daily_index/ingest/journal.py): on a local store the files are then written atomically
    (temporary file, then a link or rename) without an fsync each.
    """

    def __init__(self, store: ObjectStore, *, durable: bool = True):
        self.store = store
        self.durable = durable
        self._folders: set[Path] = set()

    def _folder(self, path: Path) -> None:
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)

    def _put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        path = None if self.durable else self.store.local_path(key)
        if path is None:
            self.store.put(key, data, if_none_match=create_only, content_type="application/json")
            return
        self._folder(path)
        if not data:
            # An empty marker has no content to tear: creating it is the atomic write.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if create_only:
                try:
                    os.link(tmp, path)  # fails when the key exists: create-only, atomically
                except FileExistsError:
                    raise PreconditionFailed(f"{self.store.description}: {key!r} exists") from None
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _read(self, key: str) -> Push | None:
        data = self.store.read_bytes(key)
        return None if data is None else Push.from_bytes(data, f"{self.store.description}, {key}")

    def lookup(self, push: Push) -> Receipt | None:
        """What the inbox already holds for this push (a repeat or a conflict), or None."""
        earlier_key = self.store.read_bytes(id_key(push.webhook_id))
        if earlier_key is not None:
            # The same webhook-id again: a sender's retry. Answer what the first one got.
            earlier = self._read(json.loads(earlier_key)["record"])
            if earlier is not None:
                return Receipt("duplicate", earlier)
        existing = self._read(push.key)
        if existing is None:
            return None
        same = existing.webhook_id == push.webhook_id or existing.fingerprint == push.fingerprint
        return Receipt("duplicate" if same else "conflict", existing)

    def accept(self, push: Push) -> Receipt:
        """Store a verified, validated push durably, unless the inbox already has it.

        The create-only write of the record decides between concurrent senders (also across
        processes); a repeat re-writes the queue marker in case an earlier attempt stopped
        between its writes.
        """
        found = self.lookup(push)
        if found is not None and found.outcome == "conflict":
            return found
        kept, outcome = (found.push, found.outcome) if found is not None else (push, "accepted")
        if found is None:
            try:
                self._put(push.key, push.to_bytes(), create_only=True)
            except PreconditionFailed:
                raced = self.lookup(push)
                if raced is None or raced.outcome == "conflict":
                    return raced or Receipt("conflict", push)
                kept, outcome = raced.push, "duplicate"
        self._remember(push.webhook_id, kept.key)
        self._enqueue(kept)
        return Receipt(outcome, kept)

    def spool(self, push: Push) -> None:
        """File an already-accepted (journaled) push into this layout; idempotent.

        The queue marker goes first: a record that exists has its marker written before it,
        so filing the same journal again (after a kill, by the sensor) adds nothing.
        """
        existing = self._read(push.key)
        if existing is None:
            self._enqueue(push)
            try:
                self._put(push.key, push.to_bytes(), create_only=True)
                existing = push
            except PreconditionFailed:
                existing = self._read(push.key)
        if existing is not None and (
            existing.webhook_id == push.webhook_id or existing.fingerprint == push.fingerprint
        ):
            self._remember(push.webhook_id, existing.key)

    def _remember(self, webhook_id: str, key: str) -> None:
        body = json.dumps({"record": key, "at": time.time()}).encode()
        try:
            self._put(id_key(webhook_id), body, create_only=True)
        except PreconditionFailed:
            pass  # another request with this id got there first: same record

    def _enqueue(self, push: Push) -> None:
        self._put(queue_key(push.key), b"")

    def pending(self, limit: int | None = None) -> list[str]:
        """Queue markers of pushes not yet materialised, oldest key order, at most `limit`."""
        keys = self.store.list(QUEUE)
        return keys if limit is None else keys[:limit]

    def load(self, queue: str) -> Push | None:
        """The push behind a queue marker (None: the record is missing)."""
        return self._read(record_of(queue))

    def done(self, queue: str) -> None:
        self.store.delete(queue)
