"""The ledger counts right: every outcome once, through kills and resumes, against real receivers.

The receivers (see conftest) answer 200, 500 (`/fail/`), 410 (`/gone/`), hang until
released (`/hang/`) or stall past the client's read timeout (`/stall/`). A sender in a
subprocess is killed with SIGKILL half-way, then the delivery is resumed in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from daily_index.delivery import ReportPayload, Subscriber, deliver, read_ledger
from daily_index.delivery.ledger import Journal, Ledger, Outcome, now_utc
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.delivery.conftest import Receiver

DAY = date(2024, 5, 1)
N = 40
CONCURRENCY = 4
HANG = range(20, 20 + CONCURRENCY)


def path_of(i: int) -> str:
    """Endpoint i's receiver path: a mix of healthy, failing, gone, stalling and hanging."""
    if i in HANG:
        return f"hang/{i}"
    if i == 5:
        return f"stall/{i}"
    if i % 10 == 3:
        return f"fail/{i}"
    if i % 10 == 7:
        return f"gone/{i}"
    return f"ok/{i}"


def url_of(port: int, i: int) -> str:
    # Stalls outlast a 1 s read timeout; hangs are held by the receiver, not timed out.
    timeout = "?rto=1" if i == 5 else "?rto=60" if i in HANG else ""
    return f"json://127.0.0.1:{port}/{path_of(i)}{timeout}"


def subscribers(port: int) -> list[Subscriber]:
    return [
        Subscriber(id=f"s{i:02d}", name=f"S{i}", urls=(url_of(port, i),), receives="summary")
        for i in range(N)
    ]


CHILD = textwrap.dedent("""
    import sys
    from datetime import date
    from daily_index.delivery import ReportPayload, deliver
    from daily_index.storage.objectstore import LocalObjectStore
    from daily_index_tests.delivery.test_ledger import CONCURRENCY, subscribers

    deliver(day=date(2024, 5, 1), store=LocalObjectStore(sys.argv[1]),
            subscribers=subscribers(int(sys.argv[2])),
            payload=ReportPayload(title="T", body="B"), concurrency=CONCURRENCY, flush_every=3)
""")


def attempts(store: LocalObjectStore) -> dict[int, int]:
    ledger = read_ledger(store, DAY)
    return {int(e[1:3]): int(a) for e, a in zip(ledger.endpoint_id, ledger.attempts, strict=True)}


def requests(receiver: Receiver) -> dict[int, int]:
    return {i: receiver.count(path_of(i)) for i in range(N)}


def statuses(store: LocalObjectStore) -> dict[int, tuple[str, bool]]:
    ledger = read_ledger(store, DAY)
    return {
        int(e[1:3]): (s, bool(u))
        for e, s, u in zip(ledger.endpoint_id, ledger.status, ledger.uncertain, strict=True)
    }


def resume(store: LocalObjectStore, receiver: Receiver, **kw):
    return deliver(
        day=DAY,
        store=store,
        subscribers=subscribers(receiver.port),
        payload=ReportPayload(title="T", body="B"),
        concurrency=CONCURRENCY,
        flush_every=3,
        **kw,
    )


def test_killed_delivery_resumed_counts_every_outcome_once(receiver, tmp_path) -> None:
    root = tmp_path / "store"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, str(script), str(root), str(receiver.port)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    # Kill once every worker is held at a hanging endpoint: each journaled start then has
    # its request at the receiver, and several ledger flushes (every 3 results) are behind.
    deadline = time.monotonic() + 120
    while receiver.hanging < CONCURRENCY and child.poll() is None:
        assert time.monotonic() < deadline, "the sender never reached the hanging endpoints"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    receiver.release.set()
    store = LocalObjectStore(root)
    journal = Journal.for_store(store, DAY).path
    assert journal.exists()
    served_before = sum(requests(receiver).values())
    assert served_before >= 20 and set(attempts(store).values()) >= {1}

    # Resumed: the journal's outcomes are applied once (some were already flushed).
    first = resume(store, receiver)
    assert attempts(store) == requests(receiver)
    state = statuses(store)
    for i in HANG:  # killed mid-send: outcome unknown, not resent automatically
        assert state[i] == ("failed", True)
    for i in range(N):
        if path_of(i).startswith("gone/"):
            assert state[i] == ("dead", False) and requests(receiver)[i] == 1
        if path_of(i).startswith("ok/"):
            assert state[i] == ("sent", False) and requests(receiver)[i] == 1
    fails = [i for i in range(N) if path_of(i).startswith(("fail/", "stall/"))]
    assert all(state[i] == ("failed", False) for i in fails)
    assert first.uncertain == CONCURRENCY
    assert first.skipped_by_reason["outcome unknown"] == CONCURRENCY
    assert first.unserved == CONCURRENCY + len(fails) + 4  # 4 gone endpoints

    # Two more runs use up the failing endpoints' attempts: dead after exactly 3 sends.
    resume(store, receiver)
    third = resume(store, receiver)
    assert attempts(store) == requests(receiver)
    assert all(requests(receiver)[i] == 3 and statuses(store)[i][0] == "dead" for i in fails)
    # Gone endpoints, and failing ones the killed run had already tried, are dead by now.
    assert set(third.skipped_by_reason) == {"already sent", "dead", "outcome unknown"}
    assert third.skipped_by_reason["already sent"] == N - CONCURRENCY - len(fails) - 4
    assert third.skipped_by_reason["outcome unknown"] == CONCURRENCY
    assert third.ledger["dead"] == len(fails) + 4 and third.unserved > 0

    # --resend-failed: the sends of unknown outcome go again; dead rows only on request.
    forced = resume(store, receiver, resend_failed=True)
    assert forced.sent == CONCURRENCY and forced.skipped_by_reason["dead"] == len(fails) + 4
    revived = resume(store, receiver, resend_failed=True, resend_dead=True)
    assert revived.sent == 0 and revived.dead == len(fails) + 4
    assert attempts(store) == requests(receiver)
    assert not journal.exists()


def test_journal_replayed_again_after_a_flush_counts_nothing_twice(store) -> None:
    # A kill between the ledger write and the journal's checkpoint leaves both holding the
    # same outcomes: the next run must not count them again.
    ledger = Ledger(store, DAY)
    for eid in ("a:primary", "b:primary"):
        ledger.ensure(
            endpoint_id=eid,
            subscriber_id=eid[0],
            channel="primary",
            kind="json",
            url="json://x",
            fallback_url=None,
        )
    journal = Journal.for_store(store, DAY)
    journal.open()
    begun = now_utc()
    for eid in ("a:primary", "b:primary"):
        journal.start(eid, begun)
    failed = Outcome("a:primary", ok=False, started_at=begun, finished_at=now_utc(), error="500")
    journal.finish(failed)
    ledger.apply(failed, max_attempts=3)
    ledger.flush()  # killed here, before the checkpoint
    journal.close(remove=False)

    for _ in range(2):  # and the replaying run is killed before its own checkpoint too
        again = Ledger(store, DAY)
        applied = [
            again.apply(o, max_attempts=3, replayed=True)
            for o in Journal.for_store(store, DAY).replay()
        ]
        again.flush()
        assert sorted(map(str, applied)) in (["None", "failed"], ["None", "None"])
    rows = {r["endpoint_id"]: r for r in read_ledger(store, DAY).to_dict("records")}
    assert rows["a:primary"]["attempts"] == 1 and rows["a:primary"]["status"] == "failed"
    assert rows["b:primary"]["attempts"] == 1 and rows["b:primary"]["uncertain"]


def test_checkpoint_keeps_only_what_the_stored_ledger_lacks(store) -> None:
    journal = Journal.for_store(store, DAY)
    journal.open()
    at = now_utc()
    for eid in ("a", "b", "c"):
        journal.start(eid, at)
    journal.finish(Outcome("a", ok=True, started_at=at, finished_at=now_utc()))
    journal.finish(Outcome("b", ok=True, started_at=at, finished_at=now_utc()))
    journal.checkpoint({"a"})  # b finished but not yet applied; c still in flight
    replayed = {o.endpoint_id: o for o in journal.replay()}
    assert set(replayed) == {"b", "c"}
    assert replayed["b"].ok and replayed["c"].uncertain
    journal.start("d", at)  # writes after a checkpoint land in the new file
    assert {o.endpoint_id for o in journal.replay()} == {"b", "c", "d"}
    journal.close(remove=True)


def test_gone_endpoint_is_dead_at_once_and_a_fallback_still_serves(receiver, store) -> None:
    subs = [
        Subscriber(id="g", name="G", urls=(receiver.url("gone/1"),), receives="summary"),
        Subscriber(
            id="f",
            name="F",
            urls=(receiver.url("gone/2"),),
            fallback=receiver.url("ok/f"),
            receives="summary",
        ),
    ]
    summary = deliver(
        day=DAY, store=store, subscribers=subs, payload=ReportPayload(title="T", body="B")
    )
    assert (summary.sent, summary.dead, summary.failed) == (1, 1, 0)
    rows = {r["endpoint_id"]: r for r in read_ledger(store, DAY).to_dict("records")}
    assert rows["g:primary"]["status"] == "dead" and "410" in rows["g:primary"]["last_error"]
    assert rows["f:primary"]["status"] == "sent" and rows["f:primary"]["via_fallback"]
    again = deliver(
        day=DAY, store=store, subscribers=subs, payload=ReportPayload(title="T", body="B")
    )
    assert again.skipped_by_reason == {"dead": 1, "already sent": 1}
    assert receiver.count("gone/1") == 1 and again.unserved == 1


SECRET = "k3y-never-stored-7f2b"


@pytest.mark.parametrize(
    "url_tail",
    [
        f"?+X-Api-Key={SECRET}",
        f"?token={SECRET}",
        f"?-api_key={SECRET}",
        f"?+Authorization=Bearer%20{SECRET}",
    ],
)
def test_header_and_query_secrets_never_reach_the_ledger(receiver, store, url_tail) -> None:
    subs = [
        Subscriber(id="a", name="A", urls=(receiver.url("fail/a") + url_tail,), receives="summary"),
        Subscriber(
            id="b",
            name="B",
            urls=(receiver.url("ok/b"),),
            fallback=receiver.url("fail/b") + url_tail,
            receives="summary",
        ),
    ]
    summary = deliver(
        day=DAY, store=store, subscribers=subs, payload=ReportPayload(title="T", body="B")
    )
    assert (summary.sent, summary.failed) == (1, 1)
    raw = store.read_bytes("delivery/2024-05-01.parquet")
    assert raw is not None and SECRET.encode() not in raw
    ledger = read_ledger(store, DAY)
    assert not ledger.url.str.contains(SECRET).any()
    assert not ledger.fallback_url.fillna("").str.contains(SECRET).any()
    assert ledger.url.str.contains("127.0.0.1").all()


def test_summary_counts_the_whole_ledger(receiver, store) -> None:
    subs = [
        Subscriber(id=f"{kind}{i}", name="X", urls=(receiver.url(f"{kind}/{i}"),))
        for kind, count in (("ok", 3), ("fail", 2), ("gone", 1))
        for i in range(count)
    ]
    payload = ReportPayload(title="T", body="B")
    first = deliver(day=DAY, store=store, subscribers=subs, payload=payload)
    assert (first.sent, first.failed, first.dead, first.skipped) == (3, 2, 1, 0)
    assert first.ledger == {"sent": 3, "failed": 2, "dead": 1} and first.unserved == 3
    again = deliver(day=DAY, store=store, subscribers=subs, payload=payload, max_attempts=1)
    assert Counter(again.skipped_by_reason) == Counter(
        {"already sent": 3, "dead": 1, "no attempts left": 2}
    )
    assert (again.sent, again.failed, again.dead) == (0, 0, 0) and again.unserved == 3
