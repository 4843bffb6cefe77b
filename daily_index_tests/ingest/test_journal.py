"""The local store's journal: what a killed server left is filed once, a torn line is not."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from daily_index.ingest.inbox import Inbox, Push
from daily_index.ingest.journal import JOURNAL_DIR, JournaledInbox, spool_segments
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.ingest.conftest import data_update, today


def _push(n: int) -> Push:
    day = today() - timedelta(days=n)
    return Push("data", f"msg_j{n}", "btc_price_push", day, time.time(), data_update(day=day))


def test_a_journal_is_filed_once_and_a_torn_last_line_skipped(tmp_path: Path) -> None:
    inbox = Inbox(LocalObjectStore(tmp_path))
    folder = tmp_path / JOURNAL_DIR
    folder.mkdir(parents=True)
    lines = b"".join(_push(n).to_bytes() + b"\n" for n in range(3))
    (folder / "1-1.jsonl").write_bytes(lines + _push(3).to_bytes()[:40])
    assert spool_segments(inbox, delete=False) == 3
    markers = inbox.pending()
    assert len(markers) == 3
    inbox.done(markers[0])  # materialised and cleared by the sensor
    # Filing the same journal again (the next tick, a restart) adds nothing back.
    assert spool_segments(inbox, delete=False) == 3
    assert inbox.pending() == markers[1:]
    # A server starting up files and removes what earlier runs left.
    journal = JournaledInbox(inbox)
    journal.start()
    assert [p.name for p in folder.glob("*.jsonl")] != ["1-1.jsonl"]
    assert inbox.pending() == markers[1:]
    # Repeats are answered from the inbox; a new push is durable in the journal at once.
    assert journal.accept(_push(1)).outcome == "duplicate"
    assert journal.accept(_push(5)).outcome == "accepted"
    [segment] = folder.glob("*.jsonl")
    assert b"msg_j5" in segment.read_bytes()
