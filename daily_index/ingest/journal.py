"""Group commit for the local store: a push is durable once its line of the journal is fsync'd.

On a local disk an fsync costs milliseconds and the inbox layout needs several (record, id,
queue marker, each file and its folder): written one push at a time, that caps the server far
below what n8n can send. So on the local backend each accepted push is appended to a journal
segment (`ingest/journal/<start>-<pid>.jsonl` under the store root) by one writer thread that
fsyncs once per batch of waiting pushes and only then lets their 2xx go. A spooler thread then
files every journaled push into the inbox layout (`Inbox.spool`, idempotent); the sensor spools
whatever a killed server left in the journal before it reads the queue, and a server starting
up spools and deletes the segments of earlier runs. Filed copies are written atomically but
without an fsync each (the journal already made the push durable); a starting server flushes
them (`sync`) before it deletes the segments behind them.

Until a push is spooled, the server's own memory answers repeats of it (by webhook-id and by
KPI-day); whether a push was filed before is two `stat`s (its record, its id), so a new push
is told from a repeat without reading a file and without a list that grows. One server per
local store: two servers writing the same folder could each accept a different value for one
KPI-day in that short window. An S3/R2 store has no journal: its PUT is the durable write,
and the inbox writes there directly.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from daily_index.ingest.inbox import Inbox, Push, Receipt, id_key
from daily_index.storage.objectstore import StorageError

JOURNAL_DIR = "ingest/journal"
MAX_BATCH = 1000
SPOOLERS = 4
"""Threads filing journaled pushes: file creation waits on the disk, so several overlap."""


def journal_folder(inbox: Inbox) -> Path | None:
    """The journal's folder when the store is a local directory, else None."""
    return inbox.store.local_path(JOURNAL_DIR)


def read_segment(path: Path) -> list[Push]:
    """The pushes of a segment; a torn last line (a kill mid-write, never acked) is skipped."""
    pushes = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            pushes.append(Push.from_bytes(line, f"{path}"))
    return pushes


def spool_segments(inbox: Inbox, *, delete: bool) -> int:
    """File the pushes of every journal segment into the inbox; returns how many were read."""
    folder = journal_folder(inbox)
    if folder is None or not folder.is_dir():
        return 0
    filer = Inbox(inbox.store, durable=False)
    segments = sorted(folder.glob("*.jsonl"))
    count = 0
    for path in segments:
        pushes = read_segment(path)
        for push in pushes:
            filer.spool(push)
        count += len(pushes)
    if delete and segments:
        # The filed copies were written without an fsync each: flush them all once, and only
        # then drop the journal that made them durable.
        os.sync()
        for path in segments:
            path.unlink()
        _fsync_dir(folder)
    return count


class JournaledInbox:
    """`Inbox.accept` with one fsync per batch of concurrent pushes (local store only)."""

    def __init__(self, inbox: Inbox):
        folder = journal_folder(inbox)
        if folder is None:
            raise StorageError(f"{inbox.store.description}: a journal needs a local store")
        self.inbox = inbox
        # Filed without an fsync per file: the journal keeps them durable until a restart.
        self._filer = Inbox(inbox.store, durable=False)
        self.folder = folder
        self._lock = threading.Lock()
        self._by_key: dict[str, Push] = {}
        self._by_id: dict[str, str] = {}
        self._writes: queue.Queue[tuple[Push, Future]] = queue.Queue()
        self._spool: queue.Queue[Push] = queue.Queue()
        self._segment: Path | None = None
        self._handle = None
        # The store's folder, to tell a new push from a repeat by two `stat`s, reading nothing.
        self._root = folder.parent.parent

    def start(self) -> None:
        """Spool what earlier runs left, open a new segment, start the writer and the spooler."""
        self.folder.mkdir(parents=True, exist_ok=True)
        spool_segments(self.inbox, delete=True)
        self._segment = self.folder / f"{time.time_ns()}-{os.getpid()}.jsonl"
        self._handle = self._segment.open("ab")
        _fsync_dir(self.folder)
        threading.Thread(target=self._write_loop, name="ingest-journal", daemon=True).start()
        for number in range(SPOOLERS):
            threading.Thread(
                target=self._spool_loop, name=f"ingest-spooler-{number}", daemon=True
            ).start()

    def _filed(self, push: Push) -> bool:
        """Whether the inbox may hold this push already (its record or its id exists)."""
        return os.path.exists(self._root / push.key) or os.path.exists(
            self._root / id_key(push.webhook_id)
        )

    def _register(self, push: Push) -> Future:
        """Journal a new push (the lock is held); the future resolves once it is fsync'd."""
        self._by_key[push.key] = push
        self._by_id[push.webhook_id] = push.key
        done: Future = Future()
        self._writes.put((push, done))
        return done

    def _failed(self, push: Push) -> StorageError:
        with self._lock:
            self._forget(push)
        return StorageError(f"{self.inbox.store.description}: the journal cannot be written")

    def accept(self, push: Push) -> Receipt:
        """Decide against the journal and the inbox, then wait until a new push is durable."""
        with self._lock:
            receipt = self._decide(push)
            if receipt is not None:
                return receipt
            done = self._register(push)
        try:
            done.result(timeout=30)
        except Exception:
            raise self._failed(push) from None
        return Receipt("accepted", push)

    async def accept_async(self, push: Push) -> Receipt:
        """`accept` for the event loop, without a thread hop for a push that must be new.

        A possible repeat (its name is known) is decided on a worker thread, reading files.
        """
        with self._lock:
            new = not (
                push.key in self._by_key or push.webhook_id in self._by_id or self._filed(push)
            )
            done = self._register(push) if new else None
        if done is None:
            return await asyncio.to_thread(self.accept, push)
        try:
            await asyncio.wait_for(asyncio.wrap_future(done), timeout=30)
        except Exception:
            raise self._failed(push) from None
        return Receipt("accepted", push)

    def _decide(self, push: Push) -> Receipt | None:
        key = self._by_id.get(push.webhook_id)
        if key is not None:
            return Receipt("duplicate", self._by_key[key])
        journaled = self._by_key.get(push.key)
        if journaled is not None:
            same = journaled.fingerprint == push.fingerprint
            return Receipt("duplicate" if same else "conflict", journaled)
        return self.inbox.lookup(push) if self._filed(push) else None

    def _forget(self, push: Push) -> None:
        self._by_key.pop(push.key, None)
        if self._by_id.get(push.webhook_id) == push.key:
            del self._by_id[push.webhook_id]

    def _write_loop(self) -> None:
        while True:
            batch = [self._writes.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle.write(b"".join(push.to_bytes() + b"\n" for push, _ in batch))
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for push, done in batch:
                done.set_result(None)
                self._spool.put(push)

    def _spool_loop(self) -> None:
        while True:
            push = self._spool.get()
            while True:
                try:
                    self._filer.spool(push)
                    break
                except StorageError:
                    time.sleep(1.0)  # the push is safe in the journal; file it when we can
            with self._lock:
                self._forget(push)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
