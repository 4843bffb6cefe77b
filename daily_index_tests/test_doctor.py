"""`daily-index doctor` and `daily-index deliver` as a user runs them, against real servers.

The store is a moto S3 server with the keys only in the environment (EnvVars, resolved as a
run resolves them), or a closed port; the sources a local HTTP stub, n8n an imitation of its
webhooks and public API; delivery goes to local receivers. No secret may appear in anything printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daily_index.defs.resources import BASE_URL_ENV
from daily_index.n8n_control import check_n8n
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.conftest import closed_port, create_bucket
from daily_index_tests.delivery.conftest import PDF_BYTES, Receiver
from daily_index_tests.n8n_imitation import N8nImitation, workflow

REPO = Path(__file__).resolve().parent.parent
S3_SECRET = "s3-secret-never-printed-4d1c"
FRED_SECRET = "fred-secret-never-printed-91aa"
N8N_SECRET = "n8n-secret-never-printed-77b2"
N8N_API_KEY = "n8n-api-key-never-printed-0c3f"
SECRETS = (S3_SECRET, FRED_SECRET, N8N_SECRET, N8N_API_KEY)
DAY = date(2024, 5, 1)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daily_index.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAILY_INDEX_") and k not in ("FRED_API_KEY", "DAGSTER_HOME")
    }
    return clean | {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DAILY_INDEX_DATA_DIR": str(tmp_path / "store"),
        "DAILY_INDEX_OUTBOX_DIR": str(tmp_path / "outbox"),
        "COLUMNS": "250",
    }


def _s3_env(env: dict[str, str], endpoint: str, bucket: str) -> dict[str, str]:
    return env | {
        "DAILY_INDEX_STORAGE": "r2",
        "DAILY_INDEX_S3_ENDPOINT_URL": endpoint,
        "DAILY_INDEX_S3_BUCKET": bucket,
        "DAILY_INDEX_S3_ACCESS_KEY_ID": "test",
        "DAILY_INDEX_S3_SECRET_ACCESS_KEY": S3_SECRET,
    }


def _printed(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def test_doctor_on_s3_resolves_the_envvars_and_probes_the_store(env, moto_endpoint, s3_client):
    bucket = create_bucket(s3_client)
    done = _cli("doctor", "--offline", env=_s3_env(env, moto_endpoint, bucket))
    out = _printed(done)
    assert done.returncode == 0, out
    assert "Attempted to directly retrieve" not in out
    assert f"S3 bucket '{bucket}' at {moto_endpoint} reachable" in out
    assert "probe object written, read back and deleted" in out
    assert "skipped (--offline)" in out
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert S3_SECRET not in out


def test_doctor_against_a_closed_port_is_a_clear_failure(env):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    done = _cli("doctor", "--offline", env=_s3_env(env, endpoint, "reports"))
    out = _printed(done)
    assert done.returncode == 1, out
    [line] = [line for line in out.splitlines() if "storage" in line]
    assert "problem" in line and "probe write failed" in line
    assert "EndpointConnectionError" in line and endpoint in line
    assert S3_SECRET not in out and "Traceback" not in out


class _Stub:
    """Answers every GET with 200 `{}` (401 for paths in `refuse`), counting requests."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.refuse: set[str] = set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                stub.seen.append((self.path, dict(self.headers)))
                status = 401 if any(self.path.startswith(p) for p in stub.refuse) else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _sources_env(env: dict[str, str], stub: _Stub, n8n: N8nImitation) -> dict[str, str]:
    urls = {var: f"{stub.url}/{family}" for family, var in BASE_URL_ENV.items()}
    return (
        env
        | urls
        | {
            "DAILY_INDEX_N8N_BASE_URL": n8n.url,
            "DAILY_INDEX_N8N_AUTH_HEADER": "X-N8N-Auth",
            "DAILY_INDEX_N8N_AUTH_VALUE": N8N_SECRET,
            "FRED_API_KEY": FRED_SECRET,
        }
    )


@pytest.fixture
def n8n() -> Iterator[N8nImitation]:
    """n8n serving the bundled registry's n8n KPI (usdt_dominance), public API keyed."""
    flows = [workflow("wfUsdt", "USDT dominance", ["kpi/usdt-dominance"])]
    with N8nImitation(flows, api_key=N8N_API_KEY) as server:
        yield server


def test_doctor_sends_one_request_per_source_and_asks_n8n(env, stub, n8n):
    done = _cli("doctor", env=_sources_env(env, stub, n8n))
    out = _printed(done)
    assert done.returncode == 0, out
    families = Counter(path.split("/")[1] for path, _ in stub.seen)
    assert families == {family: 1 for family in BASE_URL_ENV}
    [(fred_path, _)] = [(p, h) for p, h in stub.seen if p.startswith("/fred/")]
    assert f"api_key={FRED_SECRET}" in fred_path  # the key was really checked
    assert out.count("reachable, HTTP 200") == len(families)
    # n8n: its health check and the registry's webhook, asked without running a workflow.
    assert f"{n8n.url}/healthz: healthy" in out
    assert "POST kpi/usdt-dominance is registered (usdt_dominance)" in out
    assert n8n.gets == {"kpi/usdt-dominance": 1} and not n8n.posts
    assert not any(secret in out for secret in SECRETS)

    offline = _cli("doctor", "--offline", env=_sources_env(env, stub, n8n))
    assert offline.returncode == 0 and len(stub.seen) == len(families)
    assert "not asked (--offline)" in offline.stdout
    assert n8n.gets == {"kpi/usdt-dominance": 1}


def _n8n_env(n8n: N8nImitation | str, **extra: str) -> dict[str, str]:
    url = n8n if isinstance(n8n, str) else n8n.url
    return {"DAILY_INDEX_N8N_BASE_URL": url, **extra}


def test_the_n8n_check_finds_a_webhook_no_workflow_serves(n8n):
    n8n.workflows[0]["active"] = False
    findings = check_n8n(_n8n_env(n8n))
    assert [f.ok for f in findings] == [True, False]
    assert "usdt_dominance" in findings[1].detail and "is not registered" in findings[1].detail
    assert not n8n.posts


def test_the_n8n_check_uses_the_api_with_a_key(n8n):
    n8n.workflows[0]["active"] = False
    findings = check_n8n(_n8n_env(n8n, DAILY_INDEX_N8N_API_KEY=N8N_API_KEY))
    assert [f.name for f in findings] == ["n8n", "n8n API", "n8n webhook"]
    assert findings[1].ok and "1 workflows, 0 active" in findings[1].detail
    assert findings[2].ok is False and "its workflow is inactive" in findings[2].detail
    assert not n8n.gets and not n8n.posts
    assert not any(N8N_API_KEY in f.detail for f in findings)

    n8n.workflows[0]["active"] = True
    findings = check_n8n(_n8n_env(n8n, DAILY_INDEX_N8N_API_KEY=N8N_API_KEY))
    assert all(f.ok for f in findings) and "all 1 n8n KPIs served" in findings[2].detail

    refused = check_n8n(_n8n_env(n8n, DAILY_INDEX_N8N_API_KEY="wrong-key-1234"))
    assert refused[1].ok is False and "refused the API key (HTTP 401" in refused[1].detail


def test_the_n8n_check_reports_n8n_down():
    url = f"http://127.0.0.1:{closed_port()}"
    [finding] = check_n8n(_n8n_env(url))
    assert finding.ok is False and f"{url}/healthz: no answer (ConnectError)" in finding.detail


def test_doctor_reports_a_refused_key_without_showing_it(env, stub, n8n):
    stub.refuse = {"/fred/"}
    done = _cli("doctor", env=_sources_env(env, stub, n8n))
    out = _printed(done)
    assert done.returncode == 1, out
    [line] = [line for line in out.splitlines() if "source fred" in line]
    assert "problem" in line and "HTTP 401" in line and "rejected" in line
    assert not any(secret in out for secret in SECRETS)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()


def _report_env(env: dict[str, str], tmp_path: Path, subscribers: str, name: str) -> dict:
    store = LocalObjectStore(tmp_path / "store")
    store.put(f"analysis/{DAY}.json", json.dumps({"headline": "H", "summary": "S"}).encode())
    store.put(f"reports/{DAY}.pdf", PDF_BYTES)
    file = tmp_path / name
    file.write_text(subscribers, encoding="utf-8")
    return env | {"DAILY_INDEX_SUBSCRIBERS_FILE": str(file)}


def test_deliver_exit_codes_and_summary(env, tmp_path, receiver: Receiver):
    rows = [f"ok{i},Ok,{receiver.url(f'ok/{i}')},,,summary" for i in range(3)] + [
        f"fail,Fail,{receiver.url('fail/1')},,,summary",
        f"gone,Gone,{receiver.url('gone/1')},,,summary",
        "bad,,json://hooks.example.org/x,,,summary",
    ]
    csv = "\ufeffid,name,urls,fallback,tags,receives\n" + "\n".join(rows) + "\n"
    run_env = _report_env(env, tmp_path, csv, "subscribers.csv")
    first = _cli("deliver", "--date", DAY.isoformat(), "--no-progress", env=run_env)
    out = _printed(first)
    assert first.returncode == 1, out
    assert "this run 3 sent, 1 failed, 1 dead" in out
    assert "1 failed, 0 outcome unknown, 1 dead, 0 pending of 5 endpoints" in out
    assert "1 subscriber entries skipped (lines 7)" in out

    # Without the failing one, nothing is sent this run: the dead endpoint alone keeps 1.
    header = "id,name,urls,fallback,tags,receives\n"
    no_fail = _report_env(env, tmp_path, header + "\n".join(rows[:3] + rows[4:5]), "b.csv")
    again = _cli("deliver", "--date", DAY.isoformat(), "--no-progress", env=no_fail)
    out = _printed(again)
    assert again.returncode == 1, out
    assert "this run 0 sent, 0 failed, 0 dead; skipped: 3 already sent, 1 dead" in out
    assert receiver.count("gone/1") == 1 and receiver.count("fail/1") == 1

    healthy = _report_env(
        env, tmp_path, "id,name,urls\n" + rows[0].rsplit(",,,", 1)[0] + "\n", "ok.csv"
    )
    done = _cli("deliver", "--date", DAY.isoformat(), "--no-progress", env=healthy)
    assert done.returncode == 0, _printed(done)
    assert "skipped: 1 already sent" in done.stdout


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("subs.yaml", b"subscribers: [\n  - id: a\n", "not valid YAML at line"),
        ("subs.csv", "id,name,urls\na,Ä,json://h.example.org/a\n".encode("utf-16"), "UTF-16"),
        ("subs.csv", b"id,urls\na,json://h.example.org/a\n", "no 'name' column"),
        ("subs.csv", b"id,name,urls\n", "no usable subscriber"),
    ],
)
def test_deliver_with_an_unusable_subscriber_file_exits_2(env, tmp_path, name, content, words):
    file = tmp_path / name
    file.write_bytes(content)
    done = _cli(
        "deliver", "--date", DAY.isoformat(), env=env | {"DAILY_INDEX_SUBSCRIBERS_FILE": str(file)}
    )
    assert done.returncode == 2, _printed(done)
    assert words in done.stderr and str(file) in done.stderr.replace("\n", "")
    assert not (tmp_path / "outbox").exists()
