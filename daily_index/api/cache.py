"""The read API's caches: each KPI's series read once per stored version, each answer built once.

A cached series is used only while its object is unchanged. On the local backend the
object's version is its file's inode, modification time and size, read with one `stat`
per request (writes go through a rename, so every write brings a new inode). On S3/R2 it
is the object's ETag, asked with a HEAD at most once per `ttl_s` per object.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import date

from daily_index.storage.objectstore import (
    LocalObjectStore,
    ObjectStore,
    StorageError,
)
from daily_index.storage.series import KpiSeriesStore, SeriesRow, series_key

ABSENT = ("absent",)
"""The version of an object that does not exist."""


class ObjectVersions:
    """The current version tag of an object, as cheaply as the backend allows."""

    def __init__(self, store: ObjectStore, ttl_s: float = 2.0):
        self.store = store
        self.ttl_s = ttl_s
        self.local = isinstance(store, LocalObjectStore)
        """A version costs one `stat`: good enough to ask on every request."""
        self._remembered: dict[str, tuple[float, Hashable]] = {}
        self._paths: dict[str, str] = {}
        self._lock = threading.Lock()

    def is_cheap(self, key: str) -> bool:
        """Whether `version(key)` answers without waiting on the network."""
        if self.local:
            return True
        with self._lock:
            seen = self._remembered.get(key)
        return seen is not None and time.monotonic() - seen[0] < self.ttl_s

    def version(self, key: str) -> Hashable:
        if self.local:
            path = self._paths.get(key)
            if path is None:
                # Resolved once per key: resolving a path costs more than the stat itself.
                path = self._paths[key] = str(self.store.local_path(key))
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return ABSENT
            except OSError as exc:
                detail = exc.strerror or exc
                raise StorageError(
                    f"{self.store.description}: cannot read {key!r}: {detail}"
                ) from None
            return (info.st_ino, info.st_mtime_ns, info.st_size)
        now = time.monotonic()
        with self._lock:
            seen = self._remembered.get(key)
        if seen is not None and now - seen[0] < self.ttl_s:
            return seen[1]
        version = self._ask(key)
        with self._lock:
            self._remembered[key] = (now, version)
        return version

    def _ask(self, key: str) -> Hashable:
        # A HEAD on S3/R2; other backends read the object (hence the TTL).
        version = self.store.version(key)
        return ABSENT if version is None else version


@dataclass(frozen=True)
class CachedSeries:
    version: Hashable
    rows: dict[date, SeriesRow]
    first: date | None
    last: date | None

    @classmethod
    def of(cls, version: Hashable, rows: dict[date, SeriesRow]) -> CachedSeries:
        return cls(version, rows, min(rows, default=None), max(rows, default=None))


class SeriesCache(KpiSeriesStore):
    """A `KpiSeriesStore` whose reads come from memory while the stored object is unchanged.

    The export code reads series through `rows()`, so the API builds its answers with the
    same code as `daily-index export`, on cached rows.
    """

    def __init__(self, store: ObjectStore, ttl_s: float = 2.0):
        super().__init__(store)
        self.versions = ObjectVersions(store, ttl_s)
        self._series: dict[str, CachedSeries] = {}
        self._lock = threading.Lock()

    def is_cheap(self, kpi_id: str) -> bool:
        """Whether `get(kpi_id)` answers without the network (safe on an event loop).

        Locally always (a `stat`, and on a change one file read); remotely when the
        object's version is recent enough to trust and the series of that version is held.
        """
        if self.versions.local:
            return True
        key = series_key(kpi_id)
        if not self.versions.is_cheap(key):
            return False
        with self._lock:
            cached = self._series.get(kpi_id)
        return cached is not None and cached.version == self.versions.version(key)

    def get(self, kpi_id: str) -> CachedSeries:
        """The series as stored now (read again only when its object has changed)."""
        key = series_key(kpi_id)
        version = self.versions.version(key)
        with self._lock:
            cached = self._series.get(kpi_id)
        if cached is not None and cached.version == version:
            return cached
        # Tagged with the version seen before the read: a write landing in between leaves a
        # newer version behind, so the next request reads again.
        fresh = CachedSeries.of(version, {} if version == ABSENT else super().rows(kpi_id))
        with self._lock:
            self._series[kpi_id] = fresh
        return fresh

    def rows(self, kpi_id: str) -> dict[date, SeriesRow]:
        return self.get(kpi_id).rows


class ResponseCache:
    """Built answers by what was asked and the version they were built from.

    The least recently used go first once `max_entries` or `max_bytes` is reached.
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 64 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, body: bytes) -> tuple[bytes, str]:
        entry = (body, etag_of(body))
        if len(body) > self.max_bytes:
            return entry
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= len(previous[0])
            self._entries[key] = entry
            self._bytes += len(body)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return entry


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
