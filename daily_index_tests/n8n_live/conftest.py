"""A real n8n 2.40.7 (n8n/local.sh) for the session, calling an upstream imitation on 127.0.0.1.

`n8n_live` installs n8n (cached), starts it once on a free loopback port with a fresh
PostgreSQL database, the webhook credential and every workflow of n8n/workflows published,
and stops it at the end. The workflows read their upstream base URLs from KPI_* variables,
which point at `upstream`: the CoinGecko and alternative.me imitations of
daily_index_tests/sources/imitations.py, with `faults` to serve a broken answer instead.
n8n's public API key (`api_key`) counts executions.

The tests are skipped (with the reason) only when n8n cannot be installed here (no npm, no
registry) or there is no PostgreSQL on 127.0.0.1:5432; CI installs it first (.ci/run).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daily_index_tests.conftest import closed_port
from daily_index_tests.sources.imitations import PREFIXES, Imitations

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "n8n" / "local.sh"
AUTH_HEADER = "X-Daily-Index-Auth"
INSTALL_TIMEOUT_S = 1500
START_TIMEOUT_S = 400

# The n8n environment variables the workflows read their upstream base URL from, and the
# imitation's prefix each points at (the workflows append the API's whole path, /api/v3/...).
UPSTREAM_ENV = {
    "KPI_COINGECKO_BASE_URL": PREFIXES["coingecko"].removesuffix("/api/v3"),
    "KPI_ALTERNATIVE_ME_BASE_URL": PREFIXES["alternative_me"],
}


def _get_json(url: str, headers: dict[str, str]) -> dict:
    if not url.startswith("http://127.0.0.1:"):  # loopback only
        raise ValueError(url)
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read())


@dataclass
class LiveN8n:
    """A running n8n: where it is, its webhook auth, its API key and its upstream."""

    base_url: str
    auth_header: str
    auth_value: str
    api_key: str
    folder: Path
    upstream: Imitations

    def executions(self) -> int:
        """Every execution n8n has recorded, through its public API (pages of 250)."""
        count, cursor = 0, None
        for _ in range(1000):  # bounded: 250,000 executions
            url = f"{self.base_url}/api/v1/executions?limit=250"
            if cursor:
                url += f"&cursor={cursor}"
            page = _get_json(url, {"X-N8N-API-KEY": self.api_key})
            count += len(page["data"])
            cursor = page.get("nextCursor")
            if not cursor:
                return count
        raise AssertionError("more executions than the bounded count")

    def executions_after(self, before: int, expected: int, timeout_s: float = 60) -> int:
        """The executions since `before`, once `expected` are recorded or no more arrive.

        An execution is recorded when it ends, which may be just after its answer was sent.
        """
        deadline, seen, steady = time.monotonic() + timeout_s, -1, 0
        while time.monotonic() < deadline:
            now = self.executions() - before
            if now >= expected:
                time.sleep(1)  # a surplus (an abandoned request still running) shows too
                return self.executions() - before
            steady = steady + 1 if now == seen else 0
            if steady >= 10:
                return now
            seen = now
            time.sleep(0.5)
        return self.executions() - before

    def dagster_env(self, folder: Path, **changes: str) -> dict[str, str]:
        """The environment of a `daily-index` run against this n8n, storing under `folder`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DAILY_INDEX_", "KPI_")) and k not in ("DAGSTER_HOME",)
        }
        env |= {
            "DAILY_INDEX_STORAGE": "local",
            "DAILY_INDEX_DATA_DIR": str(folder / "store"),
            "DAILY_INDEX_OUTBOX_DIR": str(folder / "outbox"),
            "DAGSTER_HOME": str(folder / "dagster_home"),
            "DAILY_INDEX_N8N_BASE_URL": self.base_url,
            "DAILY_INDEX_N8N_AUTH_HEADER": self.auth_header,
            "DAILY_INDEX_N8N_AUTH_VALUE": self.auth_value,
            "DAILY_INDEX_TODAY": utc_today().isoformat(),
            # n8n does 4-6 executions per second on 2 cores: 8 in flight keeps every call
            # well inside its timeout (32 made abandoned requests run on).
            "DAILY_INDEX_FETCH_CONCURRENCY": "8",
            "DAILY_INDEX_FETCH_MAX_ATTEMPTS": "1",
            "COLUMNS": "250",
        }
        return env | changes


def utc_today():
    return datetime.now(UTC).date()


def _script_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment (its cache setting included) without its own n8n settings."""
    own = {"DAILY_INDEX_N8N_BASE_URL", "DAILY_INDEX_N8N_AUTH_HEADER", "DAILY_INDEX_N8N_AUTH_VALUE"}
    env = {k: v for k, v in os.environ.items() if k not in own and not k.startswith("KPI_")}
    return env | extra


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _postgres_ready() -> bool:
    if shutil.which("pg_isready") is None:
        return shutil.which("psql") is not None
    done = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],  # noqa: S607
        check=False,
        timeout=30,
    )
    return done.returncode == 0


@pytest.fixture(scope="session")
def upstream() -> Iterator[Imitations]:
    with Imitations(today=utc_today()) as imitations:
        yield imitations


@pytest.fixture(scope="session")
def n8n_live(upstream: Imitations, tmp_path_factory) -> Iterator[LiveN8n]:
    if not _postgres_ready():
        pytest.skip("live n8n tests: no PostgreSQL answers on 127.0.0.1:5432")
    install = subprocess.run(
        ["bash", str(SCRIPT), "install"],  # noqa: S607
        env=_script_env({}),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if install.returncode != 0:
        pytest.skip(f"live n8n tests: n8n could not be installed here:\n{_tail(install.stderr)}")
    folder = tmp_path_factory.mktemp("n8n")
    port = closed_port()
    auth_value = "live-" + secrets.token_hex(16)
    env = _script_env(
        {
            "DAILY_INDEX_N8N_AUTH_HEADER": AUTH_HEADER,
            "DAILY_INDEX_N8N_AUTH_VALUE": auth_value,
            **{name: upstream.server.url + prefix for name, prefix in UPSTREAM_ENV.items()},
        }
    )
    where = ["--port", str(port), "--dir", str(folder)]
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start", *where],  # noqa: S607
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        assert started.returncode == 0, (
            f"n8n/local.sh start failed:\n{_tail(started.stderr)}\n"
            f"n8n's log:\n{_tail((folder / 'n8n.log').read_text(errors='replace'), 40)}"
        )
        yield LiveN8n(
            base_url=f"http://127.0.0.1:{port}",
            auth_header=AUTH_HEADER,
            auth_value=auth_value,
            api_key=(folder / "api_key").read_text().strip(),
            folder=folder,
            upstream=upstream,
        )
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", *where],  # noqa: S607
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def live(n8n_live: LiveN8n) -> Iterator[LiveN8n]:
    """The session's n8n with the upstream's faults and missing days cleared before and after."""
    n8n_live.upstream.server.faults.clear()
    n8n_live.upstream.missing.clear()
    yield n8n_live
    n8n_live.upstream.server.faults.clear()
    n8n_live.upstream.missing.clear()
