"""One object-store interface, two backends: a local directory and S3-compatible (R2).

Every write is atomic (a reader sees the old object or the new one, never half of one).
`update` is the read-modify-write primitive behind the per-KPI series: optimistic
`If-Match` on S3/R2, a file lock on the local backend, so concurrent writers never lose
each other's rows.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock


class StorageError(RuntimeError):
    """The store could not be used; the message names the store and the key."""


class PreconditionFailed(StorageError):
    """A conditional write lost a race: the object changed since it was read."""


@dataclass(frozen=True)
class Versioned:
    data: bytes
    etag: str


class ObjectStore(ABC):
    """Keys are '/'-separated relative paths such as `kpi/btc_price.parquet`."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data lives, for messages (never contains a secret)."""

    @abstractmethod
    def get(self, key: str) -> Versioned | None:
        """The object and its version tag, or None when it does not exist."""

    def version(self, key: str) -> str | None:
        """The object's version tag (the one `get` gives), or None when it does not exist.

        This default reads the whole object; a backend that can ask for the tag alone
        overrides it.
        """
        found = self.get(key)
        return None if found is None else found.etag

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Write atomically and return the new version tag.

        `if_match` writes only over that version; `if_none_match` only when absent. A lost
        condition raises PreconditionFailed.
        """

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; absent is fine."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError when the store cannot be reached or written."""

    write_parallelism: int = 16
    """Writers worth running at once: remote stores wait on the network, so many help."""

    def read_bytes(self, key: str) -> bytes | None:
        found = self.get(key)
        return None if found is None else found.data

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the object when the backend has one (local), else None."""
        return None

    def presign(self, key: str, expires_in_s: int) -> str | None:
        """A URL anyone can GET the object from for `expires_in_s` seconds, or None.

        None when the backend cannot make one (the local directory). The URL carries a
        signature: treat it as a secret (never log or store it).
        """
        return None

    def update(
        self,
        key: str,
        mutate: Callable[[bytes | None], bytes],
        *,
        content_type: str | None = None,
        attempts: int = 12,
    ) -> bytes:
        """Read-modify-write `key` safely against concurrent writers; returns what was written."""
        for attempt in range(attempts):
            current = self.get(key)
            new = mutate(None if current is None else current.data)
            try:
                if current is None:
                    self.put(key, new, if_none_match=True, content_type=content_type)
                else:
                    self.put(key, new, if_match=current.etag, content_type=content_type)
                return new
            except PreconditionFailed:
                # R2 allows about one write per second per key: back off past that.
                time.sleep(min(2.0, 0.05 * 2**attempt) + random.uniform(0, 0.25))  # noqa: S311 (jitter)
        raise StorageError(
            f"{self.description}: gave up writing {key!r} after {attempts} conflicting attempts"
        )


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalObjectStore(ObjectStore):
    """A directory on disk; the embedded default. Writes go through a temp file + rename."""

    # Local writes are CPU-bound under the GIL: more threads only contend with the fetch loop.
    write_parallelism = 2

    ORPHAN_AGE_S = 86_400
    """A `.tmp-*` file older than this is the leftover of a killed write, not one in progress."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self._lock_dir = self.root / ".locks"
        self._swept: set[Path] = set()

    def remove_orphans(self, folder: Path | None = None) -> list[Path]:
        """Delete `.tmp-*` files older than a day under `folder` (default: the whole store).

        A process killed between creating its temporary file and renaming it leaves the
        file behind; readers never see it, but it would stay forever. Returns what went.
        """
        cutoff = time.time() - self.ORPHAN_AGE_S
        removed = []
        search = folder or self.root
        candidates = search.glob(".tmp-*") if folder else search.rglob(".tmp-*")
        for path in candidates:
            with suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
        return removed

    @property
    def description(self) -> str:
        return f"local storage at {self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"{self.description}: key {key!r} escapes the storage root")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def get(self, key: str) -> Versioned | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            detail = exc.strerror or exc
            raise StorageError(f"{self.description}: cannot read {key!r}: {detail}") from None
        return Versioned(data, _etag(data))

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in self._swept:
            # Once per folder and process: the next write after a kill cleans up after it.
            self._swept.add(path.parent)
            self.remove_orphans(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename is only durable once the directory entry is on disk too.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _key_lock(self, key: str) -> FileLock:
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return FileLock(str(self._lock_dir / f"{name}.lock"), timeout=60)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        path = self._path(key)
        try:
            if if_match is None and not if_none_match:
                self._write_atomic(path, data)
                return _etag(data)
            with self._key_lock(key):
                current = self.get(key)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"{self.description}: {key!r} already exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"{self.description}: {key!r} changed since read")
                self._write_atomic(path, data)
                return _etag(data)
        except OSError as exc:
            detail = exc.strerror or exc
            raise StorageError(f"{self.description}: cannot write {key!r}: {detail}") from None

    def update(
        self,
        key: str,
        mutate: Callable[[bytes | None], bytes],
        *,
        content_type: str | None = None,
        attempts: int = 12,
    ) -> bytes:
        # Locally a lock is cheaper and fairer than optimistic retries.
        try:
            with self._key_lock(key):
                current = self.get(key)
                new = mutate(None if current is None else current.data)
                self._write_atomic(self._path(key), new)
                return new
        except OSError as exc:
            detail = exc.strerror or exc
            raise StorageError(f"{self.description}: cannot write {key!r}: {detail}") from None

    def list(self, prefix: str) -> list[str]:
        # A prefix is a string prefix, as on S3: "a" matches "a/1" and "ab/2", so search the
        # directory holding the prefix's last (possibly partial) segment.
        head = prefix.rpartition("/")[0]
        search = self._path(head) if head else self.root
        if not search.is_dir():
            return []
        keys = []
        for path in search.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-") and ".locks" not in path.parts:
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self._path(key).unlink()

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".tmp-probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"{self.description}: not writable: {exc.strerror or exc}") from None


class S3ObjectStore(ObjectStore):
    """Any S3-compatible bucket (Cloudflare R2 first; MinIO and moto work the same way).

    The client must be built with checksum calculation "when_required" (see
    `resources.build_s3_client`): R2 rejects the CRC32 headers boto3 >= 1.36 sends otherwise.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "", endpoint: str | None = None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint

    @property
    def description(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3 bucket {self.bucket!r}{where}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = (
            getattr(exc, "response", {}).get("Error", {}).get("Code")
            if hasattr(exc, "response")
            else None
        )
        detail = code or type(exc).__name__
        return StorageError(f"{self.description}: cannot {action} {key!r}: {detail}")

    def get(self, key: str) -> Versioned | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return Versioned(response["Body"].read(), response["ETag"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("read", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from None

    def version(self, key: str) -> str | None:
        """The object's ETag from a HEAD request, without reading the object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("read", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from None
        return head.get("ETag", "")

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise PreconditionFailed(
                    f"{self.description}: {key!r} changed since read"
                ) from None
            if if_match is not None and (code in ("NoSuchKey", "NotFound") or status == 404):
                # S3 answers If-Match on a deleted object with 404: the version is gone too.
                raise PreconditionFailed(
                    f"{self.description}: {key!r} was deleted since read"
                ) from None
            raise self._fail("write", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("write", key, exc) from None
        return response.get("ETag", "")

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from None
        return sorted(keys)

    MAX_PRESIGN_S = 604_800
    """SigV4 presigned URLs live at most 7 days (S3 and R2 refuse longer ones)."""

    def presign(self, key: str, expires_in_s: int) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not 1 <= expires_in_s <= self.MAX_PRESIGN_S:
            raise ValueError(
                f"a presigned URL lives 1 to {self.MAX_PRESIGN_S} s (7 days), got {expires_in_s}"
            )
        try:
            # Signed locally with the client's credentials: no request is made.
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_in_s,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("presign", key, exc) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from None

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            code = (
                getattr(exc, "response", {}).get("Error", {}).get("Code")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            raise StorageError(f"{self.description}: not reachable ({code})") from None
