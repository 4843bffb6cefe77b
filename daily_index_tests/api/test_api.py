"""The read API against a real server on 127.0.0.1 over a real store: every endpoint."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from daily_index import exports
from daily_index.api import ApiConfigError, ApiSettings, report_key
from daily_index.cli import main
from daily_index.registry import current_registry
from daily_index.storage.series import KpiSeriesStore, series_key
from daily_index_tests.api.support import (
    AMENDED_PDF,
    BUILT_ONLY_DAY,
    BUILT_PDF,
    FIRST_DAY,
    KEY,
    MISSING_DAY,
    OTHER_KEY,
    PDF,
    REBUILT_PDF,
    REPORT_DAY,
    auth,
    btc_values,
    fear_greed_values,
    rows,
    serve,
)
from daily_index_tests.conftest import closed_port


def get(api, path: str, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers = {**auth(key), **headers}
    return httpx.get(api.url + path, headers=headers, timeout=10, **kwargs)


def test_health(api):
    response = get(api, "/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "registry_version": 1, "kpis": 3}


def test_kpi_list_has_every_registry_kpi_with_its_stored_span(api):
    listing = {k["id"]: k for k in get(api, "/v1/kpis").json()["kpis"]}
    assert list(listing) == ["btc_price", "fear_greed", "eth_btc"]
    btc = listing["btc_price"]
    assert btc == {
        "id": "btc_price",
        "name": "Bitcoin price",
        "unit": "USD",
        "type": "price",
        "category": "crypto_prices",
        "description": "Spot price of one bitcoin in US dollars.",
        "active": True,
        "first_day": "2026-01-01",
        "last_day": "2026-03-31",
        "observations": 89,
    }
    assert listing["fear_greed"]["last_day"] == "2026-03-30"
    assert listing["fear_greed"]["unit"] == ""
    # An inactive KPI without history is listed, with no span.
    assert listing["eth_btc"]["active"] is False
    assert listing["eth_btc"]["first_day"] is None
    assert listing["eth_btc"]["observations"] == 0


def test_json_series_is_the_stored_values_with_the_missing_day_null(api):
    response = get(api, "/v1/kpis/btc_price/series", params={"to": "2026-01-10"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["kpis"] == {"btc_price": {"name": "Bitcoin price", "unit": "USD"}}
    stored = btc_values()
    by_day = {date.fromisoformat(r["date"]): r["btc_price"] for r in body["rows"]}
    assert list(by_day) == [FIRST_DAY + timedelta(days=n) for n in range(10)]
    assert by_day.pop(MISSING_DAY) is None
    assert by_day == {d: v for d, v in stored.items() if d in by_day}  # exact floats


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_series_bytes_are_what_the_export_writes(api, fmt):
    response = get(
        api,
        "/v1/kpis/fear_greed/series",
        params={"from": "2026-01-02", "to": "2026-02-15", "format": fmt},
    )
    assert response.status_code == 200
    spec = current_registry(api.environ).get("fear_greed")
    data = exports.collect(
        KpiSeriesStore(api.store), [spec], start=date(2026, 1, 2), end=date(2026, 2, 15)
    )
    assert response.content == exports.render(data, fmt, "wide")


def test_csv_round_trip_equals_the_series(api):
    response = get(api, "/v1/kpis/btc_price/series", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="btc_price_2026-01-01_2026-03-31.csv"' in response.headers["content-disposition"]
    )
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["date", "btc_price [USD]"]
    read = {date.fromisoformat(d): v for d, v in table[1:]}
    assert read.pop(MISSING_DAY) == ""
    assert {d: float(v) for d, v in read.items()} == btc_values()


def test_parquet_round_trip_equals_the_series(api):
    response = get(api, "/v1/kpis/btc_price/series", params={"format": "parquet"})
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content)).to_pydict()
    assert list(table) == ["date", "btc_price [USD]"]
    read = dict(zip(table["date"], table["btc_price [USD]"], strict=True))
    assert read.pop(MISSING_DAY) is None
    assert read == btc_values()


def test_a_kpi_without_a_series_answers_an_empty_one(api):
    response = get(api, "/v1/kpis/eth_btc/series")
    assert response.status_code == 200
    assert response.json()["rows"] == []
    assert get(api, "/v1/kpis/eth_btc/series", params={"format": "csv"}).text == (
        "date,eth_btc [BTC]\n"
    )


def test_etag_gives_not_modified(api):
    first = get(api, "/v1/kpis/btc_price/series")
    again = get(api, "/v1/kpis/btc_price/series", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_report_is_the_delivered_copy_not_a_later_rebuild(api):
    response = get(api, f"/v1/reports/{REPORT_DAY}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["x-report-source"] == "delivered"
    assert response.content == PDF
    assert api.store.read_bytes(report_key(REPORT_DAY)) == REBUILT_PDF
    amended = get(api, f"/v1/reports/{REPORT_DAY}", params={"edition": "amended"})
    assert amended.content == AMENDED_PDF
    assert 'filename="daily-index-2026-03-31.amended.pdf"' in amended.headers["content-disposition"]
    etag = response.headers["etag"]
    cached = get(api, f"/v1/reports/{REPORT_DAY}", headers={"If-None-Match": etag})
    assert cached.status_code == 304


def test_report_without_a_delivered_copy_is_the_built_pdf(api):
    response = get(api, f"/v1/reports/{BUILT_ONLY_DAY}")
    assert response.content == BUILT_PDF
    assert response.headers["x-report-source"] == "built"
    missing = get(api, f"/v1/reports/{BUILT_ONLY_DAY}", params={"edition": "amended"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no amended edition of the report is stored for 2026-03-30"
    nothing = get(api, "/v1/reports/2026-03-29")
    assert nothing.status_code == 404
    assert nothing.json()["detail"] == "no report is stored for 2026-03-29"


BAD_REQUESTS = [
    ("/v1/kpis/btc_price/series?format=xml", 422, "format: expected one of json, csv, parquet"),
    ("/v1/kpis/btc_price/series?from=2026-02-30", 422, "from: '2026-02-30' is not a calendar"),
    ("/v1/kpis/btc_price/series?to=20260101", 422, "to: expected a date as YYYY-MM-DD"),
    ("/v1/kpis/btc_price/series?from=2026-03-02&to=2026-03-01", 422, "from (2026-03-02) is after"),
    ("/v1/kpis/btc_price/series?from=2026-01-01&from=2026-01-02", 422, "'from' is given 2 times"),
    ("/v1/kpis/btc_price/series?start=2026-01-01", 400, "unknown query parameter 'start'"),
    ("/v1/kpis/btc_price/series?from=0001-01-01", 422, "at most 20000"),
    ("/v1/kpis?limit=3", 400, "takes no query parameters"),
    ("/v1/reports/2026-13-01", 422, "date: '2026-13-01' is not a calendar date"),
    ("/v1/reports/latest", 422, "date: expected a date as YYYY-MM-DD, got 'latest'"),
    ("/v1/reports/2026-03-31?edition=../x", 422, "edition: expected a short name"),
    ("/v1/reports/2026-03-31?edition=AMENDED", 422, "edition: expected a short name"),
    ("/v1/reports/2026-03-31?copy=1", 400, "unknown query parameter 'copy' (known: edition)"),
]


@pytest.mark.parametrize(("path", "status", "reason"), BAD_REQUESTS)
def test_bad_parameters_are_4xx_naming_the_parameter(api, path, status, reason):
    response = httpx.get(api.url + path, headers=auth(), timeout=10)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"
    assert reason in response.json()["detail"]


def test_unknown_kpi_and_path_are_404_with_a_key(api):
    for path in ("/v1/kpis/nope/series", "/v1/kpis/NOT-AN-ID/series", "/v1/nothing"):
        response = get(api, path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
    ],
)
def test_without_a_valid_key_every_path_gets_the_same_401(api, headers):
    answers = {
        path: httpx.get(api.url + path, headers=headers, timeout=10)
        for path in (
            "/v1/health",
            "/v1/kpis",
            "/v1/kpis/btc_price/series",
            "/v1/kpis/nope/series",
            f"/v1/reports/{REPORT_DAY}",
            "/v1/reports/2020-01-01",
            "/v1/nothing",
        )
    }
    assert {r.status_code for r in answers.values()} == {401}
    assert len({r.content for r in answers.values()}) == 1
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in answers.values())


def test_both_key_headers_and_every_configured_key_work(api):
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
    ):
        assert httpx.get(api.url + "/v1/health", headers=headers, timeout=10).status_code == 200


def test_rate_limit_per_key_answers_429_with_retry_after(fresh_store, registry_env):
    with serve(fresh_store, registry_env, rate_limit=2, rate_window_s=60) as api:
        statuses = [get(api, "/v1/health").status_code for _ in range(3)]
        limited = get(api, "/v1/health")
        other = get(api, "/v1/health", key=OTHER_KEY)
        unauthenticated = get(api, "/v1/health", key=None)
    assert statuses == [200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "rate_limited"
    assert KEY not in limited.text
    assert other.status_code == 200  # each key has its own bucket
    assert unauthenticated.status_code == 401


WINDOW = {"from": "2026-01-05", "to": "2026-01-07"}
ONE_DAY = {"from": "2026-01-06", "to": "2026-01-06"}


def test_a_new_stored_value_is_served_at_once(fresh_store, registry_env):
    with serve(fresh_store, registry_env) as api:
        before = get(
            api, "/v1/kpis/btc_price/series", params={"from": "2026-01-05", "to": "2026-01-07"}
        )
        KpiSeriesStore(fresh_store).upsert("btc_price", rows({MISSING_DAY: 41_234.5}, "USD"))
        after = get(
            api, "/v1/kpis/btc_price/series", params={"from": "2026-01-05", "to": "2026-01-07"}
        )
        listing = get(api, "/v1/kpis").json()["kpis"][0]
    assert before.json()["rows"][1] == {"date": "2026-01-06", "btc_price": None}
    assert after.json()["rows"][1] == {"date": "2026-01-06", "btc_price": 41_234.5}
    assert before.headers["etag"] != after.headers["etag"]
    assert listing["observations"] == 90


def test_s3_store_changes_are_seen_through_the_etag(s3_store, registry_env):
    """On S3/R2 the cache asks the object's ETag (TTL 0 here: on every request)."""
    from daily_index_tests.api.support import fill_store

    fill_store(s3_store)
    with serve(s3_store, registry_env, cache_ttl_s=0) as api:
        before = get(
            api, "/v1/kpis/btc_price/series", params={"from": "2026-01-06", "to": "2026-01-06"}
        )
        KpiSeriesStore(s3_store).upsert("btc_price", rows({MISSING_DAY: 7.25}, "USD"))
        after = get(
            api, "/v1/kpis/btc_price/series", params={"from": "2026-01-06", "to": "2026-01-06"}
        )
        pdf = get(api, f"/v1/reports/{REPORT_DAY}")
    assert before.json()["rows"] == [{"date": "2026-01-06", "btc_price": None}]
    assert after.json()["rows"] == [{"date": "2026-01-06", "btc_price": 7.25}]
    assert pdf.content == PDF


def test_an_unreadable_series_is_503_naming_the_kpi_not_the_store(fresh_store, registry_env):
    fresh_store.put(series_key("btc_price"), b"not parquet")
    with serve(fresh_store, registry_env) as api:
        broken = get(api, "/v1/kpis/btc_price/series")
        listing = get(api, "/v1/kpis")
        other = get(api, "/v1/kpis/fear_greed/series")
    assert broken.status_code == 503
    assert broken.json() == {
        "error": "storage_unavailable",
        "detail": "the stored series of 'btc_price' cannot be read",
    }
    assert str(fresh_store.root) not in broken.text
    assert listing.status_code == 503
    assert other.status_code == 200


def test_a_registry_broken_while_serving_keeps_the_last_good_one(fresh_store, tmp_path):
    registry = tmp_path / "kpis.yaml"
    from daily_index_tests.api.support import REGISTRY

    registry.write_text(REGISTRY, encoding="utf-8")
    env = {"DAILY_INDEX_KPIS_FILE": str(registry)}
    with serve(fresh_store, env) as api:
        registry.write_text("version: 1\nkpis: [{id: 'Bad'}]\n", encoding="utf-8")
        response = get(api, "/v1/kpis/btc_price/series", params={"to": "2026-01-01"})
    assert response.status_code == 200


def test_a_registry_change_is_served_at_once(fresh_store, tmp_path):
    """The unit is part of the answer: a registry edit changes the answer for the same URL."""
    from daily_index_tests.api.support import REGISTRY

    registry = tmp_path / "kpis.yaml"
    registry.write_text(REGISTRY, encoding="utf-8")
    env = {"DAILY_INDEX_KPIS_FILE": str(registry)}
    query = {"to": "2026-01-02", "format": "csv"}
    with serve(fresh_store, env) as api:
        before = [get(api, "/v1/kpis/btc_price/series", params=query).text for _ in range(2)]
        registry.write_text(REGISTRY.replace("unit: USD", "unit: USDT"), encoding="utf-8")
        after = get(api, "/v1/kpis/btc_price/series", params=query).text
    assert before[0] == before[1]
    assert before[0].startswith("date,btc_price [USD]\n")
    assert after.startswith("date,btc_price [USDT]\n")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "DAILY_INDEX_API_KEYS is not set"),
        ("", "DAILY_INDEX_API_KEYS is not set"),
        (f"{KEY},short-key", "entry #2 is 9 characters long; a key needs at least 16"),
        (f"{KEY},,{OTHER_KEY}", "entry #2 is empty"),
        ("a key with spaces 012345", "entry #1 has characters other than printable ASCII"),
        (f"{KEY},{KEY}", "the same key is listed twice"),
    ],
)
def test_bad_key_settings_name_the_entry_never_the_key(value, reason):
    env = {} if value is None else {"DAILY_INDEX_API_KEYS": value}
    with pytest.raises(ApiConfigError) as caught:
        ApiSettings.from_env(env)
    assert reason in str(caught.value)
    assert KEY not in str(caught.value)
    assert "short-key" not in str(caught.value)


def test_bad_rate_limit_setting_is_named():
    env = {"DAILY_INDEX_API_KEYS": KEY, "DAILY_INDEX_API_RATE_LIMIT": "ten"}
    with pytest.raises(ApiConfigError, match="DAILY_INDEX_API_RATE_LIMIT must be a whole number"):
        ApiSettings.from_env(env)
    settings = ApiSettings.from_env({**env, "DAILY_INDEX_API_RATE_LIMIT": "5"})
    assert settings.rate_limit == 5
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "DAILY_INDEX_API_KEYS is not set"),
        (
            {"DAILY_INDEX_API_KEYS": KEY, "DAILY_INDEX_STORAGE": "ftp"},
            "DAILY_INDEX_STORAGE must be",
        ),
        (
            {"DAILY_INDEX_API_KEYS": KEY, "DAILY_INDEX_API_RATE_WINDOW_S": "0"},
            "DAILY_INDEX_API_RATE_WINDOW_S must be at least",
        ),
    ],
)
def test_serve_api_with_a_bad_setting_exits_2(monkeypatch, tmp_path, env, reason):
    for name in ("DAILY_INDEX_API_KEYS", "DAILY_INDEX_STORAGE", "DAILY_INDEX_API_RATE_WINDOW_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAILY_INDEX_DATA_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["serve-api", "--port", "0"])
    assert result.exit_code == 2
    assert reason in result.output
    assert KEY not in result.output


def test_the_command_serves(fresh_store, registry_env):
    """`daily-index serve-api` itself, in a process of its own, on the configured store."""
    port = closed_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAILY_INDEX_")},
        **registry_env,
        "DAILY_INDEX_API_KEYS": f"{KEY},{OTHER_KEY}",
        "DAILY_INDEX_DATA_DIR": str(fresh_store.root),
    }
    command = [str(Path(sys.executable).with_name("daily-index")), "serve-api", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"{url}/v1/health", headers=auth(), timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "serve-api did not start"
                time.sleep(0.2)
        series = httpx.get(f"{url}/v1/kpis/btc_price/series?to=2026-01-01", headers=auth())
        refused = httpx.get(f"{url}/v1/kpis", timeout=5)
    finally:
        process.terminate()
        _, log = process.communicate(timeout=30)
    assert health.json()["status"] == "ok"
    assert series.json()["rows"] == [{"date": "2026-01-01", "btc_price": btc_values()[FIRST_DAY]}]
    assert "server" not in health.headers  # no server banner
    assert refused.status_code == 401
    assert f"Read API on http://127.0.0.1:{port}/v1/ (2 key(s), 600 requests per 60 s" in log
    assert KEY not in log and OTHER_KEY not in log


def test_report_key_is_where_the_report_io_manager_writes():
    import dagster as dg

    from daily_index.storage.io_manager import artifact_key

    assert report_key(REPORT_DAY) == artifact_key(dg.AssetKey(["report", "pdf"]), "2026-03-31")[0]


def test_json_answer_parses_as_the_spec_says(api):
    body = json.loads(get(api, "/v1/kpis/fear_greed/series", params={"to": "2026-01-03"}).content)
    assert body["rows"] == [
        {"date": "2026-01-01", "fear_greed": fear_greed_values()[FIRST_DAY]},
        {"date": "2026-01-02", "fear_greed": None},
        {"date": "2026-01-03", "fear_greed": fear_greed_values()[date(2026, 1, 3)]},
    ]
