"""The delivery ledger: one row per (day, endpoint), kept at `delivery/<date>.parquet`.

A day can have further editions of its report (an amended report after a partial one):
each edition has its own ledger, `delivery/<date>.<edition>.parquet`, and its own journal,
so an endpoint already served the first edition still receives the next one, once.

Rows move pending → sent | failed | dead. The ledger is flushed to the object store every
few results and at the end; between flushes a local append-only journal records each
send as it starts and ends, so a run killed at any point loses nothing: the next run
replays the journal, and a send that started but never reported back is marked `failed`
with `uncertain=True` instead of being sent a second time.

Each outcome is applied once. Every flush checkpoints the journal (it keeps only the
sends the flushed ledger does not have yet), and an outcome no newer than its row's
`last_attempt_at` is already in the ledger and is not counted again: a kill between the
ledger write and the checkpoint cannot make a replay count an attempt twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from daily_index.storage.objectstore import ObjectStore

STATUSES = ("pending", "sent", "failed", "dead")
SKIP_REASONS = ("already sent", "dead", "outcome unknown", "no attempts left")
"""Why a run does not send to an endpoint: sent before; dead (410 Gone, or failed
`max_attempts` times); a killed run's send of unknown outcome; failed with no attempts
left under a lowered `max_attempts`. Each but the first is resent on request."""
UNCERTAIN_ERROR = (
    "run interrupted while sending: outcome unknown, not resent automatically "
    "(re-run with resend_failed=True to send again)"
)

SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("endpoint_id", pa.string()),
        ("subscriber_id", pa.string()),
        ("channel", pa.string()),
        ("kind", pa.string()),
        ("url", pa.string()),
        ("fallback_url", pa.string()),
        ("status", pa.string()),
        ("attempts", pa.int32()),
        ("last_error", pa.string()),
        ("first_attempt_at", pa.timestamp("us", tz="UTC")),
        ("last_attempt_at", pa.timestamp("us", tz="UTC")),
        ("sent_at", pa.timestamp("us", tz="UTC")),
        ("via_fallback", pa.bool_()),
        ("uncertain", pa.bool_()),
        ("delivered", pa.string()),
        ("link_expires_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""`delivered` is what the last attempt sent: `file` (the PDF attached), `link` (the
summary and a link), `no link` (the summary; neither the PDF nor a link could go) or
`summary` (asked for). `link_expires_at` is a presigned link's expiry (null: a base-URL
link, or no link). The link itself is never stored: a presigned one is a credential."""
COLUMNS = tuple(SCHEMA.names)


EDITION_PATTERN = re.compile(r"[a-z0-9-]{1,32}")


def validate_edition(edition: str | None) -> str | None:
    """The edition unchanged if it is None or a short slug (`[a-z0-9-]{1,32}`).

    Raises:
        ValueError: Anything else (the message names the value).
    """
    if edition is None:
        return None
    if not isinstance(edition, str) or not EDITION_PATTERN.fullmatch(edition):
        raise ValueError(
            f"invalid delivery edition {edition!r}: expected None or a short slug of "
            "1-32 characters a-z, 0-9 and '-' (e.g. 'amended')"
        )
    return edition


def _stem(day: date, edition: str | None) -> str:
    edition = validate_edition(edition)
    return day.isoformat() if edition is None else f"{day.isoformat()}.{edition}"


def ledger_key(day: date, edition: str | None = None) -> str:
    """`delivery/<date>.parquet`, or `delivery/<date>.<edition>.parquet` for an edition."""
    return f"delivery/{_stem(day, edition)}.parquet"


def delivered_pdf_key(day: date, edition: str | None = None) -> str:
    """The edition's delivered PDF: `reports/delivered/<date>[.<edition>].pdf`.

    Links point here, and it is written once, so a rebuilt `reports/<date>.pdf` never
    changes what an edition's subscribers were sent.
    """
    return f"reports/delivered/{_stem(day, edition)}.pdf"


def now_utc() -> datetime:
    return datetime.now(UTC)


def read_ledger(store: ObjectStore, day: date, edition: str | None = None) -> pd.DataFrame:
    """The ledger of the day's edition as a DataFrame (empty, with every column, if none)."""
    data = store.read_bytes(ledger_key(day, edition))
    if data is None:
        return SCHEMA.empty_table().to_pandas()
    return pq.read_table(io.BytesIO(data)).to_pandas()


def _to_bytes(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@dataclass(frozen=True)
class Outcome:
    """What one attempt at one endpoint came to (built in a worker, applied by the ledger)."""

    endpoint_id: str
    ok: bool
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    via_fallback: bool = False
    uncertain: bool = False
    gone: bool = False
    """The endpoint answered 410 Gone: it is dead at once, whatever attempts are left."""
    delivered: str | None = None
    """What was sent (file, link, no link, summary); None when nothing could be tried."""
    link_expires_at: datetime | None = None


class Ledger:
    """The in-memory ledger of one day's edition, written through to the store on `flush`."""

    def __init__(self, store: ObjectStore, day: date, edition: str | None = None):
        self.store = store
        self.day = day
        self.edition = validate_edition(edition)
        self.key = ledger_key(day, edition)
        self.rows: dict[str, dict[str, Any]] = {
            row["endpoint_id"]: row for row in read_ledger(store, day, edition).to_dict("records")
        }
        for row in self.rows.values():
            # A ledger written before a column existed reads with it missing.
            for column in ("first_attempt_at", "last_attempt_at", "sent_at", "link_expires_at"):
                if pd.isna(row.get(column)):
                    row[column] = None
            for column in ("last_error", "fallback_url", "delivered"):
                if not isinstance(row.get(column), str):
                    row[column] = None

    def ensure(
        self,
        *,
        endpoint_id: str,
        subscriber_id: str,
        channel: str,
        kind: str,
        url: str,
        fallback_url: str | None,
    ) -> dict[str, Any]:
        row = self.rows.get(endpoint_id)
        if row is None:
            row = {
                "day": self.day.isoformat(),
                "endpoint_id": endpoint_id,
                "subscriber_id": subscriber_id,
                "channel": channel,
                "kind": kind,
                "status": "pending",
                "attempts": 0,
                "last_error": None,
                "first_attempt_at": None,
                "last_attempt_at": None,
                "sent_at": None,
                "via_fallback": False,
                "uncertain": False,
                "delivered": None,
                "link_expires_at": None,
            }
            self.rows[endpoint_id] = row
        # The subscriber file may have changed since the last run: keep the URLs current.
        row["url"], row["fallback_url"] = url, fallback_url
        return row

    def skip_reason(
        self,
        endpoint_id: str,
        *,
        max_attempts: int,
        resend_failed: bool,
        resend_dead: bool = False,
    ) -> str | None:
        """None when this run sends to the endpoint, else why not (one of `SKIP_REASONS`)."""
        row = self.rows[endpoint_id]
        status = row["status"]
        if status == "pending":
            return None
        if status == "sent":
            return "already sent"
        if status == "dead":
            return None if resend_dead else "dead"
        if row["uncertain"]:
            return None if resend_failed else "outcome unknown"
        if resend_failed or row["attempts"] < max_attempts:
            return None
        return "no attempts left"

    def apply(self, outcome: Outcome, *, max_attempts: int, replayed: bool = False) -> str | None:
        """Record one attempt; the row's new status, or None when there is nothing to record.

        None for an endpoint no longer subscribed, and for a `replayed` journal outcome the
        ledger already has (finished no later than the row's last attempt). A live
        outcome is always new, so a clock set back can never make it be dropped.
        """
        row = self.rows.get(outcome.endpoint_id)
        if row is None:
            return None
        last = row["last_attempt_at"]
        if replayed and last is not None and outcome.finished_at <= last:
            return None
        row["attempts"] = int(row["attempts"]) + 1
        row["first_attempt_at"] = row["first_attempt_at"] or outcome.started_at
        row["last_attempt_at"] = outcome.finished_at
        row["uncertain"] = outcome.uncertain
        if outcome.delivered is not None:
            row["delivered"] = outcome.delivered
            row["link_expires_at"] = outcome.link_expires_at
        if outcome.ok:
            row.update(
                status="sent",
                sent_at=outcome.finished_at,
                last_error=None,
                via_fallback=outcome.via_fallback,
            )
        else:
            dead = outcome.gone or (row["attempts"] >= max_attempts and not outcome.uncertain)
            row.update(status="dead" if dead else "failed", last_error=outcome.error)
        return row["status"]

    def flush(self) -> None:
        """Write the ledger, keeping rows another writer added meanwhile."""
        mine = self.rows

        def merge(current: bytes | None) -> bytes:
            rows = dict(mine)
            if current is not None:
                for row in pq.read_table(io.BytesIO(current)).to_pylist():
                    rows.setdefault(row["endpoint_id"], row)
            return _to_bytes(list(rows.values()))

        self.store.update(self.key, merge, content_type="application/vnd.apache.parquet")


class Journal:
    """A local append-only record of sends in flight, surviving a killed process.

    One JSON line when a send starts and one when it ends. Each line goes out in a single
    `write` on an O_APPEND descriptor, so lines never interleave and are in the kernel
    (hence kept if the process dies) before the send starts.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        # The lines of each send the store's ledger does not have yet, kept for `checkpoint`.
        self._unflushed: dict[str, list[bytes]] = {}

    @classmethod
    def for_store(cls, store: ObjectStore, day: date, edition: str | None = None) -> Journal:
        """The journal of the day's edition: `<date>.journal` or `<date>.<edition>.journal`."""
        name = f"{_stem(day, edition)}.journal"
        local = store.local_path(f"delivery/.{name}")
        if local is None:
            tag = hashlib.sha1(store.description.encode(), usedforsecurity=False).hexdigest()
            local = Path(tempfile.gettempdir()) / "daily_index_delivery" / tag[:16] / name
        return cls(local)

    def replay(self) -> list[Outcome]:
        """Outcomes of a previous, interrupted run that the ledger may not have yet."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        started: dict[str, datetime] = {}
        outcomes: list[Outcome] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            at = datetime.fromisoformat(entry["at"])
            if entry["event"] == "start":
                started[entry["endpoint_id"]] = at
            elif entry["endpoint_id"] in started:
                outcomes.append(
                    Outcome(
                        endpoint_id=entry["endpoint_id"],
                        ok=entry["event"] == "sent",
                        started_at=started.pop(entry["endpoint_id"]),
                        finished_at=at,
                        error=entry.get("error"),
                        via_fallback=entry.get("via_fallback", False),
                        gone=entry.get("gone", False),
                        delivered=entry.get("delivered"),
                        link_expires_at=(
                            datetime.fromisoformat(entry["link_expires_at"])
                            if entry.get("link_expires_at")
                            else None
                        ),
                    )
                )
        outcomes += [
            Outcome(
                endpoint_id=eid,
                ok=False,
                started_at=at,
                finished_at=at,
                error=UNCERTAIN_ERROR,
                uncertain=True,
            )
            for eid, at in started.items()
        ]
        return outcomes

    def open(self) -> None:
        """Start an empty journal (call once the replayed outcomes are in the stored ledger)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._unflushed.clear()
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600
            )

    def checkpoint(self, flushed: set[str]) -> None:
        """Forget the sends of `flushed` endpoints, whose outcomes the stored ledger now has.

        The journal is rewritten (temp file + rename, so a kill leaves the old or the new
        one) with only the lines of sends still in flight or not yet in the stored ledger.
        Workers wait on the lock meanwhile, so no line is lost.
        """
        with self._lock:
            if self._fd is None:
                return
            for endpoint_id in flushed:
                self._unflushed.pop(endpoint_id, None)
            tmp = self.path.with_name(self.path.name + ".checkpoint")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join(line for lines in self._unflushed.values() for line in lines))
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is not None:
                os.write(self._fd, line)
                self._unflushed.setdefault(entry["endpoint_id"], []).append(line)

    def start(self, endpoint_id: str, at: datetime) -> None:
        self._write({"event": "start", "endpoint_id": endpoint_id, "at": at.isoformat()})

    def finish(self, outcome: Outcome) -> None:
        self._write(
            {
                "event": "sent" if outcome.ok else "failed",
                "endpoint_id": outcome.endpoint_id,
                "at": outcome.finished_at.isoformat(),
                "error": outcome.error,
                "via_fallback": outcome.via_fallback,
                "gone": outcome.gone,
                "delivered": outcome.delivered,
                "link_expires_at": (
                    outcome.link_expires_at.isoformat() if outcome.link_expires_at else None
                ),
            }
        )

    def close(self, *, remove: bool) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)
