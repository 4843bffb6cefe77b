"""R2 rejects boto3's default CRC32 checksum headers: our client must not send them.

A recording proxy on 127.0.0.1 forwards every request to the moto server and keeps its
headers, so the test sees exactly what would reach R2.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest

from daily_index.storage.objectstore import S3ObjectStore

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class RecordingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _forward(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append((self.command, self.path, headers))
        body = self.rfile.read(int(headers.get("content-length", 0) or 0))
        upstream = http.client.HTTPConnection(
            self.server.upstream.hostname, self.server.upstream.port, timeout=30
        )
        try:
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=forwarded)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[RecordingProxy]:
    server = RecordingProxy(moto_endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _checksum_headers(proxy: RecordingProxy) -> dict[str, list[str]]:
    """Per request (method + path), the checksum-related headers it carried."""
    found: dict[str, list[str]] = {}
    for method, path, headers in proxy.requests:
        names = [
            name
            for name in headers
            if name.startswith("x-amz-checksum-") or name == "x-amz-sdk-checksum-algorithm"
        ]
        if names:
            found[f"{method} {path}"] = names
    return found


def _exercise(client, proxy: RecordingProxy, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, endpoint=proxy.url)
    store.put("kpi/a.parquet", b"x" * 2048, content_type="application/vnd.apache.parquet")
    store.put("kpi/a.parquet", b"y" * 2048, if_match=store.get("kpi/a.parquet").etag)
    store.put("kpi/b.parquet", b"z", if_none_match=True)
    assert store.read_bytes("kpi/b.parquet") == b"z"
    assert store.list("kpi/") == ["kpi/a.parquet", "kpi/b.parquet"]
    store.check()
    store.delete("kpi/b.parquet")


def test_r2_client_sends_no_checksum_headers(proxy, make_r2_client, s3_client, s3_store):
    client = make_r2_client(proxy.url)
    _exercise(client, proxy, s3_store.bucket)
    methods = {method for method, _, _ in proxy.requests}
    assert {"PUT", "GET", "HEAD", "DELETE"} <= methods
    assert _checksum_headers(proxy) == {}


def test_default_boto3_client_does_send_them(proxy, s3_store):
    """The contrast: without our settings boto3 adds checksums, so the test above can fail."""
    plain = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="auto",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    plain.put_object(Bucket=s3_store.bucket, Key="k", Body=b"data")
    plain.get_object(Bucket=s3_store.bucket, Key="k")["Body"].read()
    sent = _checksum_headers(proxy)
    put = [names for request, names in sent.items() if request.startswith("PUT")]
    get = [names for request, names in sent.items() if request.startswith("GET")]
    assert put and any(n.startswith("x-amz-checksum-") for n in put[0]), sent
    assert get and "x-amz-checksum-mode" in get[0], sent
