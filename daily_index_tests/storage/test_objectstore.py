"""The object store contract, run against both backends (local directory, moto S3 server)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from daily_index.storage.objectstore import (
    LocalObjectStore,
    ObjectStore,
    PreconditionFailed,
    S3ObjectStore,
    StorageError,
)


def test_put_get_roundtrip(store: ObjectStore):
    etag = store.put("a/b/c.bin", b"\x00hello\xff", content_type="application/octet-stream")
    found = store.get("a/b/c.bin")
    assert found is not None
    assert found.data == b"\x00hello\xff"
    assert found.etag == etag
    assert store.read_bytes("a/b/c.bin") == b"\x00hello\xff"
    assert store.get("a/b/missing.bin") is None
    assert store.read_bytes("missing") is None


def test_overwrite_changes_version(store: ObjectStore):
    first = store.put("k.txt", b"one")
    second = store.put("k.txt", b"two")
    assert first != second
    assert store.get("k.txt").data == b"two"


def test_if_none_match_only_creates(store: ObjectStore):
    store.put("once.txt", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="once.txt"):
        store.put("once.txt", b"second", if_none_match=True)
    assert store.read_bytes("once.txt") == b"first"


def test_if_match_writes_only_over_the_version_read(store: ObjectStore):
    etag = store.put("v.txt", b"v1")
    newer = store.put("v.txt", b"v2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("v.txt", b"stale", if_match=etag)
    assert store.read_bytes("v.txt") == b"v2"
    assert store.get("v.txt").etag == newer


def test_if_match_on_a_deleted_object_is_a_lost_race(store: ObjectStore):
    etag = store.put("gone.txt", b"v1")
    store.delete("gone.txt")
    with pytest.raises(PreconditionFailed):
        store.put("gone.txt", b"v2", if_match=etag)
    assert store.get("gone.txt") is None


def test_list_with_prefix(store: ObjectStore):
    for key in ("a/1.txt", "a/2.txt", "a/sub/3.txt", "ab/4.txt", "b/5.txt"):
        store.put(key, key.encode())
    assert store.list("a/") == ["a/1.txt", "a/2.txt", "a/sub/3.txt"]
    assert store.list("a") == ["a/1.txt", "a/2.txt", "a/sub/3.txt", "ab/4.txt"]
    assert store.list("a/s") == ["a/sub/3.txt"]
    assert store.list("") == ["a/1.txt", "a/2.txt", "a/sub/3.txt", "ab/4.txt", "b/5.txt"]
    assert store.list("nothing/here/") == []


def test_delete(store: ObjectStore):
    store.put("d/x.txt", b"x")
    store.delete("d/x.txt")
    assert store.get("d/x.txt") is None
    assert store.list("d/") == []
    store.delete("d/x.txt")  # absent is fine


def test_check_passes_on_a_working_store(store: ObjectStore):
    store.check()


def _framed(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest() + payload


def _intact(blob: bytes) -> bool:
    return hashlib.sha256(blob[32:]).digest() == blob[:32]


def test_reader_never_sees_a_partial_object(store: ObjectStore):
    """A writer replaces a 2 MB object repeatedly; every read is one whole version."""
    key = "big/object.bin"
    store.put(key, _framed(os.urandom(2 << 20)))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for round_ in range(25):
                store.put(key, _framed(bytes([round_]) * (1 << 20) + os.urandom(1 << 20)))
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not stop.is_set() or reads < 5:
        blob = store.read_bytes(key)
        assert blob is not None and len(blob) == 32 + (2 << 20), "reader saw a partial object"
        assert _intact(blob), "reader saw a mix of two versions"
        reads += 1
        if reads > 2000:
            break
    thread.join(timeout=60)
    assert not errors, errors
    assert reads >= 5


def test_update_serialises_concurrent_read_modify_writes(store: ObjectStore):
    """Two threads increment one counter 20 times each through update(): no lost update."""
    key = "counter.json"

    def bump(current: bytes | None) -> bytes:
        count = json.loads(current)["n"] if current is not None else 0
        return json.dumps({"n": count + 1}).encode()

    def worker() -> None:
        for _ in range(20):
            store.update(key, bump, content_type="application/json")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert json.loads(store.read_bytes(key)) == {"n": 40}


def test_update_propagates_mutate_errors_and_leaves_object(store: ObjectStore):
    store.put("keep.txt", b"original")

    def refuse(current: bytes | None) -> bytes:
        raise StorageError("cannot merge")

    with pytest.raises(StorageError, match="cannot merge"):
        store.update("keep.txt", refuse)
    assert store.read_bytes("keep.txt") == b"original"


def test_local_key_cannot_escape_root(local_store: LocalObjectStore):
    with pytest.raises(StorageError, match="escapes the storage root"):
        local_store.put("../outside.txt", b"x")


def test_local_check_names_store_when_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    store = LocalObjectStore(blocker / "store")
    with pytest.raises(StorageError, match="local storage at .*a-file"):
        store.check()


def test_local_writes_leave_no_temp_files(local_store: LocalObjectStore):
    for i in range(5):
        local_store.put("x/y.txt", str(i).encode())
    local_store.update("x/y.txt", lambda old: old + b"!")
    leftovers = [p.name for p in (local_store.root / "x").iterdir()]
    assert leftovers == ["y.txt"]
    assert local_store.list("") == ["x/y.txt"]


def test_s3_check_unreachable_endpoint_names_the_store(make_r2_client, unused_port):
    endpoint = f"http://127.0.0.1:{unused_port}"
    client = make_r2_client(endpoint, max_attempts=1)
    store = S3ObjectStore(client, "reports", endpoint=endpoint)
    with pytest.raises(StorageError) as caught:
        store.check()
    message = str(caught.value)
    assert "S3 bucket 'reports'" in message and endpoint in message
    assert "test" not in message.replace("test-", "")  # no credential in the message
    with pytest.raises(StorageError, match="S3 bucket 'reports'"):
        store.get("kpi/x.parquet")


def test_s3_check_missing_bucket_names_the_store(s3_client, moto_endpoint):
    store = S3ObjectStore(s3_client, "no-such-bucket-here", endpoint=moto_endpoint)
    with pytest.raises(StorageError, match="S3 bucket 'no-such-bucket-here'"):
        store.check()


def test_s3_prefix_is_applied_and_hidden(s3_client, moto_endpoint, s3_store: S3ObjectStore):
    scoped = S3ObjectStore(s3_client, s3_store.bucket, prefix="/tenant/", endpoint=moto_endpoint)
    scoped.put("kpi/a.parquet", b"a")
    assert scoped.list("kpi/") == ["kpi/a.parquet"]
    assert s3_store.list("") == ["tenant/kpi/a.parquet"]


def test_orphaned_temp_files_older_than_a_day_go_with_the_next_write(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    folder = tmp_path / "store" / "kpi"
    folder.mkdir(parents=True)
    old = [folder / ".tmp-killed1", folder / ".tmp-killed2"]
    fresh = folder / ".tmp-in-progress"  # another writer's, still going
    day_ago = time.time() - LocalObjectStore.ORPHAN_AGE_S - 60
    for path in [*old, fresh]:
        path.write_bytes(b"half an object")
    for path in old:
        os.utime(path, (day_ago, day_ago))
    elsewhere = tmp_path / "store" / "raw" / ".tmp-killed3"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    os.utime(elsewhere, (day_ago, day_ago))

    store.put("kpi/btc_price.parquet", b"new")
    assert not any(p.exists() for p in old)
    assert fresh.exists() and store.get("kpi/btc_price.parquet").data == b"new"
    assert elsewhere.exists()  # only the folder written to is swept
    assert store.list("kpi/") == ["kpi/btc_price.parquet"]
    assert store.remove_orphans() == [elsewhere] and not elsewhere.exists()


def test_a_write_killed_mid_way_leaves_a_temp_file_the_next_run_removes(tmp_path):
    root = tmp_path / "store"
    script = (
        "import os, sys\n"
        "from daily_index.storage.objectstore import LocalObjectStore\n"
        "os.replace = lambda *a: os.kill(os.getpid(), 9)\n"
        "LocalObjectStore(sys.argv[1]).put('reports/2024-05-01.pdf', b'%PDF' * 1000)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(root)], check=False)
    assert done.returncode == -9
    [orphan] = (root / "reports").glob(".tmp-*")
    week_ago = time.time() - 7 * 86_400
    os.utime(orphan, (week_ago, week_ago))
    LocalObjectStore(root).put("reports/2024-05-02.pdf", b"%PDF")
    assert not orphan.exists()
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["2024-05-02.pdf"]
