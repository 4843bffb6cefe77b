"""`daily-index` end to end, as a user runs it, against the replay server on 127.0.0.1."""

import io
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from rich.console import Console

from daily_index.cli import _kpi_table, demo_environment
from daily_index.replay import DEMO_DAY, Fault, ReplayServer
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow, record_fetch_status

CLI = [sys.executable, "-m", "daily_index.cli"]


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAILY_INDEX_") and k not in ("FRED_API_KEY", "DAGSTER_HOME")
    }


def _cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.fixture(scope="module")
def replay():
    with ReplayServer() as server:
        yield server


@pytest.fixture
def env(replay, tmp_path):
    replay.reset()
    environ = _clean_env() | demo_environment(replay, tmp_path, today=DEMO_DAY)
    environ.pop("DAILY_INDEX_DEMO")
    environ["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    environ["DAILY_INDEX_FETCH_MAX_ATTEMPTS"] = "1"
    environ["FRED_API_KEY"] = "fred-secret-value"
    environ["COLUMNS"] = "250"  # one line per KPI row, whatever the reasons' length
    return environ


def _pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The CLI's KPI table: name -> [value, 1-day change, status]."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 4 and cells[0] and cells[0] != "KPI":
            rows[cells[0]] = cells[1:]
    return rows


def test_run_does_the_whole_day(env, tmp_path):
    done = _cli("run", "--date", DEMO_DAY.isoformat(), "--history", "7", "--no-progress", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _table_rows(done.stdout)
    assert rows["Bitcoin price"][0] == "$97,338"
    pdf = tmp_path / "store" / "reports" / f"{DEMO_DAY}.pdf"
    assert str(pdf) in done.stdout.replace("\n", "")
    text = _pdf_text(pdf)
    assert "Bitcoin price" in text and "$97,338" in text
    # One formatter: every value and change the CLI prints is printed the same in the PDF.
    flat = re.sub(r"\s+", " ", text)
    assert len(rows) >= 10
    for name, (value, change, status) in rows.items():
        if status.startswith("gap"):  # "4.20% (as of 2026-11-20)" reads "4.20% as of ..."
            assert value.replace("(", "").replace(")", "") in flat, (name, value)
        else:
            assert f"{value} {change}" in flat, (name, value, change)
    assert any(c.endswith(" pp") for _, c, _ in rows.values())
    assert any(c.endswith(" bp") for _, c, _ in rows.values())
    assert "partial" not in text.lower()
    sent = list((tmp_path / "outbox").rglob("*.pdf"))
    assert len(sent) == 1 and sent[0].read_bytes() == pdf.read_bytes()
    # The runs are in the instance `dagster dev` will read (DAGSTER_HOME).
    assert (tmp_path / "dagster_home" / "history").exists()


def test_a_failing_kpi_gives_exit_1_and_a_partial_report(env, replay, tmp_path):
    replay.inject(
        "/alternative_me", Fault(status=500, body="<html>oops</html>", content_type="text/html")
    )
    done = _cli("run", "--date", DEMO_DAY.isoformat(), "--no-progress", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout and "HTTP 500" in done.stdout
    text = _pdf_text(tmp_path / "store" / "reports" / f"{DEMO_DAY}.pdf")
    assert "partial" in text.lower()
    assert "Crypto Fear & Greed index" in text and "HTTP 500" in text


def test_a_rerun_whose_fetch_fails_shows_and_counts_the_failure(env, replay):
    first = _cli("run", "--date", DEMO_DAY.isoformat(), "--no-progress", "--kpis-only", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _table_rows(first.stdout)["Crypto Fear & Greed index"][2] == "ok"
    replay.inject(
        "/alternative_me", Fault(status=500, body="<html>oops</html>", content_type="text/html")
    )
    again = _cli("run", "--date", DEMO_DAY.isoformat(), "--no-progress", "--kpis-only", env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    rows = _table_rows(again.stdout)
    assert "Crypto Fear & Greed index" in rows, again.stdout
    value, _, status = rows["Crypto Fear & Greed index"]
    assert status.startswith("failed") and "HTTP 500" in again.stdout
    assert value.endswith("(earlier fetch)")
    assert "1 KPI(s) failed" in again.stderr
    assert "0 KPI(s) failed" not in again.stderr


def test_run_without_a_date_runs_daily_index_today(env):
    done = _cli("run", "--no-progress", "--kpis-only", "--kpi", "btc_price", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"KPIs for {DEMO_DAY}" in done.stdout
    assert _table_rows(done.stdout)["Bitcoin price"] == ["$97,338", "–", "ok"]


@pytest.mark.parametrize("bad", ["2026-13-01", "tomorrow"])
def test_a_bad_daily_index_today_is_a_usage_error(env, bad):
    done = _cli("run", "--no-progress", "--kpis-only", env=env | {"DAILY_INDEX_TODAY": bad})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "DAILY_INDEX_TODAY" in done.stderr and bad in done.stderr
    assert "Traceback" not in done.stderr


def _render(table) -> dict[str, list[str]]:
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(table)
    return _table_rows(out.getvalue())


def _store_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DAILY_INDEX_STORAGE": "local",
        "DAILY_INDEX_DATA_DIR": str(tmp_path / "store"),
        "FRED_API_KEY": "k",
    }


def _store_values(tmp_path: Path, kpi_id: str, points: dict[date, float]) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "store")
    now = datetime.now(UTC)
    KpiSeriesStore(store).upsert(
        kpi_id, [SeriesRow(d, v, None, "test", now, "t") for d, v in points.items()]
    )
    return store


def test_the_kpi_table_shows_an_expected_gap_with_its_reason_and_last_observation(tmp_path):
    friday, sunday = date(2026, 11, 27), date(2026, 11, 29)
    store = _store_values(tmp_path, "us_10y_yield", {friday: 4.16})
    _store_values(tmp_path, "btc_price", {sunday - timedelta(days=1): 90_000.0, sunday: 91_800.0})
    reason = "no observation expected: weekend (sunday; a business-day series)"
    record_fetch_status(
        store,
        sunday,
        {"us_10y_yield": {"status": "gap", "reason": reason}, "btc_price": {"status": "ok"}},
    )
    table, failures, gaps = _kpi_table(
        _store_env(tmp_path), sunday, ["us_10y_yield", "us_dollar_index", "btc_price"], "t"
    )
    rows = _render(table)
    assert (failures, gaps) == (0, 2)
    assert rows["US 10-year Treasury yield"] == ["4.16% (as of 2026-11-27)", "–", f"gap: {reason}"]
    # Nothing recorded, but a Sunday is outside its calendar: a gap too, never "missing".
    assert rows["US dollar index (broad)"][2].startswith("gap: no observation expected: weekend")
    assert rows["Bitcoin price"] == ["$91,800", "+2.0%", "ok"]


def test_the_kpi_table_counts_a_failed_refetch_over_a_stored_value(tmp_path):
    day = date(2026, 11, 24)
    store = _store_values(tmp_path, "btc_price", {day - timedelta(days=1): 90_000.0, day: 91_800.0})
    record_fetch_status(store, day, {"btc_price": {"status": "failed", "reason": "HTTP 503"}})
    table, failures, gaps = _kpi_table(_store_env(tmp_path), day, ["btc_price", "eth_price"], "t")
    rows = _render(table)
    assert (failures, gaps) == (2, 0)
    assert rows["Bitcoin price"] == ["$91,800 (earlier fetch)", "+2.0%", "failed: HTTP 503"]
    assert rows["Ether price"] == ["missing", "–", "missing: not fetched"]


def test_unreachable_storage_gives_exit_3_and_names_the_store(env):
    env |= {
        "DAILY_INDEX_STORAGE": "s3",
        "DAILY_INDEX_S3_BUCKET": "gone",
        "DAILY_INDEX_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "DAILY_INDEX_S3_ACCESS_KEY_ID": "a",
        "DAILY_INDEX_S3_SECRET_ACCESS_KEY": "s3-secret-value",
    }
    done = _cli("run", "--date", DEMO_DAY.isoformat(), "--no-progress", "--kpis-only", env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "S3 bucket 'gone'" in done.stdout + done.stderr
    assert "s3-secret-value" not in done.stdout + done.stderr


def test_kpis_validate_names_file_kpi_and_field(env, tmp_path):
    bad = tmp_path / "kpis.yaml"
    bad.write_text(
        "version: 1\nkpis:\n  - id: btc\n    name: B\n    description: d\n"
        "    type: price\n    source: {kind: nowhere}\n"
        "    metadata: {source: x, category: c}\n"
    )
    done = _cli("kpis", "validate", str(bad), env=env)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "'btc'" in done.stderr and "source.kind" in done.stderr
    ok = _cli("kpis", "validate", env=env)
    assert ok.returncode == 0 and "OK" in ok.stdout


def test_kpis_list_and_doctor_never_print_secrets(env):
    listing = _cli("kpis", "list", env=env)
    assert listing.returncode == 0 and "btc_price" in listing.stdout
    doctor = _cli(
        "doctor",
        env=env
        | {
            "DAILY_INDEX_N8N_AUTH_HEADER": "X-Auth",
            "DAILY_INDEX_N8N_AUTH_VALUE": "n8n-secret-value",
        },
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "reachable" in doctor.stdout
    for secret in ("fred-secret-value", "n8n-secret-value"):
        assert secret not in doctor.stdout + doctor.stderr


def test_bad_date_is_a_usage_error(env):
    done = _cli("run", "--date", "yesterday", env=env)
    assert done.returncode == 2 and "YYYY-MM-DD" in done.stderr


def test_demo_runs_on_recorded_data_and_says_so(tmp_path):
    env = _clean_env() | {"DAGSTER_HOME": str(tmp_path / "unused")}
    done = _cli("demo", "--history", "3", "--out", str(tmp_path / "demo"), "--no-progress", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("DEMO DATA") >= 3
    text = _pdf_text(tmp_path / "demo" / "store" / "reports" / f"{DEMO_DAY}.pdf")
    assert "DEMO DATA" in text
    # The browse hint works from a fresh shell, and the demo's UI never reaches a public API.
    hint = next(line for line in done.stdout.splitlines() if line.startswith("Browse the demo"))
    dagster = hint.rsplit(";", 1)[1].split()[0]
    assert Path(dagster).is_absolute() and Path(dagster).exists(), hint
    from daily_index.defs.resources import BASE_URL_ENV

    demo_env = dict(
        line.split("=", 1)
        for line in (tmp_path / "demo" / "demo.env").read_text().splitlines()
        if line
    )
    for variable in [*BASE_URL_ENV.values(), "DAILY_INDEX_N8N_BASE_URL"]:
        assert demo_env[variable].startswith("http://127.0.0.1:"), variable


def test_history_leaves_out_kpis_whose_source_keeps_no_history(env, replay, tmp_path):
    done = _cli(
        "run",
        "--date",
        DEMO_DAY.isoformat(),
        "--history",
        "2",
        "--kpis-only",
        "--no-progress",
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KPIs with history)" in done.stdout
    # CoinGecko's /global keeps no history: never asked for, never planned for past days.
    asked = [r.path for r in replay.requests if r.path.endswith("/global")]
    assert len(asked) == 1  # today's, shared by the three KPIs on /global
    store = LocalObjectStore(tmp_path / "store")
    from daily_index.storage.series import read_fetch_status

    past = read_fetch_status(store, DEMO_DAY - timedelta(days=1))
    assert "btc_price" in past and "btc_dominance" not in past


def test_run_with_a_bad_subscriber_file_is_a_configuration_error(env, replay, tmp_path):
    bad = tmp_path / "subscribers.csv"
    bad.write_text("id,urls\nalice,mailto://a@example.org\n", encoding="utf-8")  # no name
    env = env | {"DAILY_INDEX_SUBSCRIBERS_FILE": str(bad)}
    done = _cli("run", "--date", DEMO_DAY.isoformat(), "--no-progress", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "subscribers.csv" in done.stderr
    assert replay.requests == []  # nothing was fetched
