"""`daily-index` end to end, as a user runs it, against the replay server on 127.0.0.1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader

from daily_index.cli import demo_environment
from daily_index.replay import DEMO_DAY, Fault, ReplayServer

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
    return environ


def _pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def test_run_does_the_whole_day(env, tmp_path):
    done = _cli("run", "--date", DEMO_DAY.isoformat(), "--history", "7", "--no-progress", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Bitcoin price" in done.stdout and "97,338 USD" in done.stdout
    pdf = tmp_path / "store" / "reports" / f"{DEMO_DAY}.pdf"
    assert str(pdf) in done.stdout.replace("\n", "")
    text = _pdf_text(pdf)
    assert "Bitcoin price" in text and "97,338" in text
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
