"""A server killed (SIGKILL) right after its 2xx loses nothing: the sensor still reports it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx

from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore
from daily_index_tests.ingest.conftest import (
    REGISTRY,
    SECRET,
    Sender,
    data_update,
    free_port,
    today,
)
from daily_index_tests.ingest.test_sensor import materialisations, tick


def _environ(tmp_path: Path, store_dir: Path) -> dict[str, str]:
    registry = tmp_path / "kpis.yaml"
    registry.write_text(REGISTRY, encoding="utf-8")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("DAILY_INDEX_")}
    return keep | {
        "DAILY_INDEX_INGEST_SECRETS": SECRET,
        "DAILY_INDEX_KPIS_FILE": str(registry),
        "DAILY_INDEX_STORAGE": "local",
        "DAILY_INDEX_DATA_DIR": str(store_dir),
    }


@contextmanager
def serve(environ: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "daily_index.cli", "serve-ingest", "--port", str(port)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve-ingest did not start: {process.stderr.read()!r}")
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stderr.close()


def test_a_push_acknowledged_before_a_kill_is_materialised(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    environ = _environ(tmp_path, store_dir)
    body = data_update(value=88888.5)
    with serve(environ) as (process, url):
        answer = Sender(url).post(body, msg_id="msg_before_kill")
        os.kill(process.pid, signal.SIGKILL)
        assert answer.status_code == 202, answer.text
        process.wait(timeout=10)
    with dg.instance_for_test() as instance:
        assert len(tick(instance, store_dir)) == 1
        assert len(materialisations(instance, "btc_price_push", today())) == 1
    assert KpiSeriesStore(LocalObjectStore(store_dir)).value_on("btc_price_push", today()) == (
        88888.5
    )
    # After a restart the sender's retry of the same message is a repeat, not a new push.
    with serve(environ) as (_, url):
        again = Sender(url).post(body, msg_id="msg_before_kill")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_bad_configuration_exits_2_without_the_secret(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from daily_index.cli import main

    environ = _environ(tmp_path, tmp_path / "store") | {
        "DAILY_INDEX_INGEST_SECRETS": "whsec_!!c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw",
    }
    done = CliRunner().invoke(main, ["serve-ingest", "--port", str(free_port())], env=environ)
    assert done.exit_code == 2, done.output
    assert "DAILY_INDEX_INGEST_SECRETS" in done.output and "secret #1" in done.output
    assert "c2VjcmV0" not in done.output
