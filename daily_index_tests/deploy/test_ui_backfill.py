"""A backfill of KPI partitions launched the way the Dagster UI launches one.

`dagster dev` (webserver, daemon and code server) runs as a subprocess on 127.0.0.1 with a
temporary DAGSTER_HOME holding the repository's dagster.yaml, every source pointed at the
local imitations of the APIs (daily_index_tests/sources/imitations.py, which log each
request). The test sends the GraphQL mutation the UI's "Materialize" dialog sends for a range
of partitions (`launchPartitionBackfill` with `assetSelection` and `partitionNames`), waits
for the backfill daemon to finish it, and checks what the UI would show and what was stored:
one run (single-run backfill policy), each day's own value, at most two requests per KPI, the
weekend of a business-day FRED series an expected gap (unmaterialised, with its reason),
every other partition materialised.

The backfill's own status is a known defect, kept as a strict xfail so it shows until fixed:
Dagster 1.13 marks every targeted partition that a finished run did not materialise as failed,
so the FRED weekend turns the backfill "completed with failures" though its run succeeded.

Bounded: the webserver must answer within 4 minutes, the backfill must finish within 5.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from daily_index.defs.kpis import kpi_key
from daily_index.defs.resources import BASE_URL_ENV
from daily_index.registry import load_registry
from daily_index.replay import DEMO_DAY
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore
from daily_index_tests.sources.imitations import (
    COINS,
    DAY_S,
    SERIES,
    SYMBOLS,
    Imitations,
    price,
    requests_of,
    unix,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Wednesday 11 to Friday 20 November 2026: ten days, the weekend of the 14th and 15th inside.
FIRST, LAST = DEMO_DAY - timedelta(days=13), DEMO_DAY - timedelta(days=4)
DAYS = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
WEEKEND = {d for d in DAYS if d.weekday() >= 5}
# One KPI per source family: CoinGecko's range chart, Binance's klines, a business-day FRED series.
KPI_IDS = ["btc_price", "btc_close_binance", "us_10y_yield"]
# The imitation's value of each day, by the source's own reading rules: CoinGecko's last hourly
# point of the day (a 10-day span comes hourly), Binance's daily close, FRED's 2-decimal value.
EXPECTED = {
    "btc_price": lambda day: price(COINS[("bitcoin", "usd")], unix(day) + 23 * 3600),
    "btc_close_binance": lambda day: price(SYMBOLS["BTCUSDT"], unix(day) + DAY_S - 1),
    "us_10y_yield": lambda day: round(price(SERIES["DGS10"], unix(day)), 2),
}

LAUNCH = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      runs { runId status tags { key value } }
      error { message }
    }
    ... on PythonError { message }
  }
}
"""
LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
PARTITION_STATS = """
query Stats($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionStats { numMaterialized numFailed numMaterializing }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    """`dagster dev` in its own process group, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-m", "daily_index.definitions"]
            + ["-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(  # noqa: S310 (a loopback URL built here)
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            payload = json.loads(answer.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def wait_loaded(self, timeout_s: float) -> None:
        """Until the webserver answers and the code location has loaded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dagster dev exited ({self.proc.returncode})\n{self.output()}")
            try:
                workspace = self.graphql(LOCATIONS)["workspaceOrError"]
            except (OSError, urllib.error.URLError):
                time.sleep(1)
                continue
            entries = workspace.get("locationEntries") or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [
                    e
                    for e in entries
                    if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"
                ]
                assert not errors, errors
                return
            time.sleep(1)
        pytest.fail(f"dagster dev not loaded within {timeout_s:.0f} s\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM to dagster dev and what it started (daemon, code server, run workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever outlived it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._out.close()


def _environment(apis: Imitations, folder: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAILY_INDEX_", "DAGSTER_")) and k != "FRED_API_KEY"
    }
    env.update({BASE_URL_ENV[family]: url for family, url in apis.base_urls().items()})
    home = folder / "dagster_home"
    home.mkdir()
    # What the README's `dagster dev` does: the repository's instance settings in DAGSTER_HOME.
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    now = datetime.now(UTC)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "DAILY_INDEX_STORAGE": "local",
            "DAILY_INDEX_DATA_DIR": str(folder / "store"),
            "DAILY_INDEX_OUTBOX_DIR": str(folder / "outbox"),
            "FRED_API_KEY": "imitation-key-not-secret",
            "DAILY_INDEX_TODAY": DEMO_DAY.isoformat(),
            # Nothing but the backfill runs: the schedule is hours away and the fan-in sensor
            # never re-requests KPIs (the days it watches have nothing stored on purpose).
            "DAILY_INDEX_SCHEDULE_CRON": f"0 {(now + timedelta(hours=12)).hour} * * *",
            "DAILY_INDEX_KPI_MAX_RETRIES": "0",
        }
    )
    return env


@dataclass
class Backfill:
    """The finished backfill as the webserver reports it, and what it was run against."""

    dev: DagsterDev
    apis: Imitations
    folder: Path
    instance: dg.DagsterInstance
    answer: dict[str, Any]


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfill]:
    """`dagster dev` up, the UI's backfill of 10 days x 3 KPIs sent and waited for (once)."""
    folder = tmp_path_factory.mktemp("ui-backfill")
    with Imitations() as apis, pytest.MonkeyPatch.context() as patch:
        env = _environment(apis, folder)
        patch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        dev = DagsterDev(env, folder / "dagster-dev.log")
        try:
            dev.wait_loaded(240)
            # What the UI's "Materialize" dialog sends for a range of partitions of the selection.
            launched = dev.graphql(
                LAUNCH,
                {
                    "backfillParams": {
                        "assetSelection": [{"path": list(kpi_key(i).path)} for i in KPI_IDS],
                        "partitionNames": [d.isoformat() for d in DAYS],
                        "fromFailure": False,
                        "tags": [],
                    }
                },
            )["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            answer = _wait_for_backfill(dev, launched["backfillId"], 300)
            with dg.DagsterInstance.get() as instance:
                yield Backfill(dev, apis, folder, instance, answer)
        finally:
            dev.stop()


def _wait_for_backfill(dev: DagsterDev, backfill_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    backfill: dict[str, Any] = {}
    while time.monotonic() < deadline:
        backfill = dev.graphql(BACKFILL, {"backfillId": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return backfill
        if dev.proc.poll() is not None:
            break
        time.sleep(2)
    pytest.fail(
        f"backfill {backfill_id} not finished within {timeout_s:.0f} s: {backfill}\n{dev.output()}"
    )


def _days_with_value(kpi_id: str) -> list[date]:
    """The days a KPI has an observation on: FRED's DGS10 has none at weekends."""
    return [d for d in DAYS if not (kpi_id == "us_10y_yield" and d in WEEKEND)]


def _run_errors(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's error and warning messages, to say why it did not succeed."""
    records = instance.all_logs(run_id)
    lines = [
        f"{r.dagster_event.event_type_value if r.dagster_event else r.level}: "
        f"{r.message or (r.dagster_event.message if r.dagster_event else '')}"
        for r in records
        if r.level >= 30 or (r.dagster_event and r.dagster_event.is_failure)
    ]
    return "\n".join(lines)[-6000:]


@pytest.mark.timeout(600)
def test_a_ui_backfill_of_ten_days_is_one_run_with_each_days_value(backfill: Backfill) -> None:
    registry = {k.id: k for k in load_registry().kpis}
    kpis = [registry[i] for i in KPI_IDS]
    assert registry["us_10y_yield"].calendar.kind == "business_days"
    assert len(DAYS) == 10 and len(WEEKEND) == 2
    instance = backfill.instance

    # ONE run for the whole range (single-run backfill policy), the range in its tags.
    assert backfill.answer["numPartitions"] == 10
    runs = backfill.answer["runs"]
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "SUCCESS", _run_errors(instance, run["runId"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == FIRST.isoformat()
    assert tags["dagster/asset_partition_range_end"] == LAST.isoformat()
    # ... and no other run started meanwhile (schedule, sensor retries).
    assert [r.run_id for r in instance.get_runs()] == [run["runId"]]

    # At most two requests per KPI (range fetches), nothing asked of any other source.
    requests = backfill.apis.requests
    per_kpi = {k.id: requests_of(k, requests) for k in kpis}
    assert all(1 <= n <= 2 for n in per_kpi.values()), per_kpi
    assert sum(per_kpi.values()) == len(requests), requests

    # Each day's own value in the series, every day for the crypto KPIs, weekdays for FRED.
    series = KpiSeriesStore(LocalObjectStore(backfill.folder / "store"))
    for kpi in kpis:
        frame = series.read(kpi.id)
        stored = dict(zip(frame["date"], frame["value"], strict=True))
        wanted = _days_with_value(kpi.id)
        assert sorted(stored) == wanted, kpi.id
        for day in wanted:
            assert stored[day] == pytest.approx(EXPECTED[kpi.id](day)), (kpi.id, day)
        # Every day with a value is a materialised partition; the gaps are not.
        materialized = instance.get_materialized_partitions(kpi_key(kpi.id))
        assert materialized == {d.isoformat() for d in wanted}, kpi.id

    # The weekend days of the business-day series carry the reason they have no value.
    gaps = instance.fetch_observations(
        dg.AssetRecordsFilter(
            asset_key=kpi_key("us_10y_yield"), asset_partitions=[d.isoformat() for d in WEEKEND]
        ),
        limit=10,
    ).records
    assert {r.partition_key for r in gaps} == {d.isoformat() for d in WEEKEND}
    assert {r.asset_observation.metadata["fetch_status"].value for r in gaps} == {"expected_gap"}


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Dagster 1.13's asset backfill marks every targeted partition its successful run did not "
        "materialise as failed ('no materialization status despite all runs being complete'): "
        "the FRED weekend, an expected gap, turns the backfill COMPLETED_FAILED. Fixed only when "
        "the backfill stops targeting those partitions (issue 11, Build 4)."
    ),
)
@pytest.mark.timeout(600)
def test_expected_gaps_leave_the_ui_backfill_green(backfill: Backfill) -> None:
    """The backfill's status and the asset pages' counts, as the UI shows them."""
    nodes = backfill.dev.graphql(
        PARTITION_STATS, {"keys": [{"path": list(kpi_key(i).path)} for i in KPI_IDS]}
    )
    stats = {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in nodes["assetNodes"]}
    for kpi_id in KPI_IDS:
        counts = stats[f"kpi/{kpi_id}"]
        assert counts["numMaterializing"] == 0, (kpi_id, counts)
        assert counts["numMaterialized"] == len(_days_with_value(kpi_id)), (kpi_id, counts)
        assert counts["numFailed"] == 0, (kpi_id, counts)
    assert backfill.answer["status"] == "COMPLETED_SUCCESS", backfill.answer
