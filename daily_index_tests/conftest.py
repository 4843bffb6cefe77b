"""Shared fixtures: an S3-compatible server (moto) on 127.0.0.1 and stores on both backends."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from daily_index.storage.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from daily_index.storage.s3 import R2S3Resource

S3_TEST_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def r2_client(endpoint_url: str, **overrides: object):
    """The client production builds (R2S3Resource), pointed at a local endpoint."""
    settings = {**S3_TEST_CREDENTIALS, "region_name": "auto", **overrides}
    return R2S3Resource(endpoint_url=endpoint_url, **settings).get_client()


def create_bucket(client, name: str | None = None) -> str:
    """A fresh bucket; region `auto` needs an explicit location constraint on moto."""
    bucket = name or f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "auto"})
    return bucket


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1, shared by the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str):
    return r2_client(moto_endpoint)


@pytest.fixture
def s3_store(s3_client, moto_endpoint: str) -> S3ObjectStore:
    """An S3ObjectStore on a fresh bucket of the moto server."""
    return S3ObjectStore(s3_client, create_bucket(s3_client), endpoint=moto_endpoint)


@pytest.fixture
def local_store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request) -> ObjectStore:
    """Each backend in turn: a local directory, then a bucket on the moto server."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def make_r2_client():
    """A factory for the production S3 client: call it with an endpoint URL and settings."""
    return r2_client


@pytest.fixture
def unused_port() -> int:
    return closed_port()
