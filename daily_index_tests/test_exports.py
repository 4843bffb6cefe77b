"""Export: values exactly as stored, missing days empty, units in the header; round trips."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from daily_index import exports, imports
from daily_index.defs.partitions import daily_partitions
from daily_index.registry import load_registry
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore, SeriesRow

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "daily_index.cli"]
REGISTRY = load_registry()
KPIS = {k.id: k for k in REGISTRY.enabled({})}
START = date(2024, 1, 1)
# Values whose decimal spelling needs all 17 digits, and a day missing in the middle.
BTC = {START + timedelta(days=n): 42000.1 + n / 3 for n in range(10) if n != 4}
ETH = {START + timedelta(days=n): 0.1 + 0.2 * n for n in range(1, 10)}


def _fill(store: LocalObjectStore) -> KpiSeriesStore:
    series = KpiSeriesStore(store)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    for kpi_id, values in (("btc_price", BTC), ("eth_price", ETH)):
        unit = KPIS[kpi_id].unit
        series.upsert(
            kpi_id, [SeriesRow(d, v, unit, "CoinGecko", at, "t") for d, v in values.items()]
        )
    return series


def _data(series: KpiSeriesStore, **window) -> exports.ExportData:
    return exports.collect(series, [KPIS["btc_price"], KPIS["eth_price"]], **window)


def test_wide_csv_has_units_in_the_header_and_empty_missing_days(tmp_path):
    text = exports.to_csv(_data(_fill(LocalObjectStore(tmp_path))), "wide")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["date", "btc_price [USD]", "eth_price [USD]"]
    assert len(rows) == 11  # every day of the window, one per row
    assert rows[1] == ["2024-01-01", repr(BTC[START]), ""]  # ETH starts a day later
    assert rows[5][1] == ""  # the missing BTC day: empty, never 0
    assert [float(r[1]) for r in rows[1:] if r[1]] == list(BTC.values())


def test_long_layout_and_json_carry_the_unit_and_exact_values(tmp_path):
    series = _fill(LocalObjectStore(tmp_path))
    long_rows = list(csv.DictReader(io.StringIO(exports.to_csv(_data(series), "long"))))
    assert {r["unit"] for r in long_rows} == {"USD"}
    assert len(long_rows) == len(BTC) + len(ETH)
    assert {float(r["value"]) for r in long_rows if r["kpi"] == "eth_price"} == set(ETH.values())
    body = json.loads(exports.to_json(_data(series, start=START, end=START + timedelta(4)), "wide"))
    assert body["kpis"]["btc_price"]["unit"] == "USD"
    assert body["rows"][4] == {
        "date": "2024-01-05",
        "btc_price": None,
        "eth_price": ETH[START + timedelta(4)],
    }
    assert body["rows"][0]["eth_price"] is None


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_parquet_keeps_the_floats_and_nulls(tmp_path, layout):
    table = pq.read_table(
        io.BytesIO(exports.to_parquet(_data(_fill(LocalObjectStore(tmp_path))), layout))
    )
    if layout == "wide":
        column = table.column("btc_price [USD]").to_pylist()
        assert column[4] is None
        assert [v for v in column if v is not None] == list(BTC.values())
    else:
        assert table.column_names == exports.LONG_COLUMNS
        assert table.num_rows == len(BTC) + len(ETH)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_export_imports_back_into_an_empty_store_as_the_same_series(tmp_path, fmt):
    source = _fill(LocalObjectStore(tmp_path / "source"))
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(exports.render(_data(source), fmt, "wide"))
    first, last = imports.partition_bounds(daily_partitions)
    imported = imports.read_import(path, kpis=list(KPIS.values()), first=first, last=last)
    target = KpiSeriesStore(LocalObjectStore(tmp_path / "empty"))
    imports.store_import(
        target, imported, imports.plan_store(target, imported), KPIS, overwrite=False
    )
    for kpi_id in ("btc_price", "eth_price"):
        before, after = source.rows(kpi_id), target.rows(kpi_id)
        assert {d: (r.value, r.unit) for d, r in after.items()} == {
            d: (r.value, r.unit) for d, r in before.items()
        }


def test_the_cli_round_trip_export_then_import_gives_identical_series(tmp_path):
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAILY_INDEX_") and k not in ("FRED_API_KEY", "DAGSTER_HOME")
    }
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source_env = environ | {
        "DAILY_INDEX_DATA_DIR": str(tmp_path / "source"),
        "DAGSTER_HOME": str(home),
    }
    source = _fill(LocalObjectStore(tmp_path / "source"))
    out = subprocess.run(
        [*CLI, "export", "--kpi", "btc_price", "--kpi", "eth_price", "--format", "csv"],
        env=source_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path / "exported.csv"
    path.write_text(out.stdout)
    target_env = source_env | {"DAILY_INDEX_DATA_DIR": str(tmp_path / "target")}
    result = subprocess.run(
        [*CLI, "import", str(path), "--no-progress"],
        env=target_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(BTC) + len(ETH)} KPI-day(s) recorded" in result.stdout
    target = KpiSeriesStore(LocalObjectStore(tmp_path / "target"))
    for kpi_id in ("btc_price", "eth_price"):
        assert {d: r.value for d, r in target.rows(kpi_id).items()} == {
            d: r.value for d, r in source.rows(kpi_id).items()
        }
        assert {r.source for r in target.rows(kpi_id).values()} == {"import:exported.csv"}
