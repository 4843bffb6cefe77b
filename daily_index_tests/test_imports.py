"""Historical import: validation of every kind of bad line, then real imports through the CLI.

The CLI tests run `daily-index import` (and Dagster's own `dagster asset materialize`) as
subprocesses against a temporary store and DAGSTER_HOME, and read the instance back.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from daily_index import imports
from daily_index.defs.partitions import daily_partitions
from daily_index.registry import load_registry
from daily_index.storage.objectstore import LocalObjectStore
from daily_index.storage.series import KpiSeriesStore

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "daily_index.cli"]
REGISTRY = load_registry()
KPIS = REGISTRY.enabled({"FRED_API_KEY": "test-key"})
FIRST, LAST = imports.partition_bounds(daily_partitions)
BTC = dg.AssetKey(["kpi", "btc_price"])


def _days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(count)]


def _read(path: Path, kpi_id: str | None = None) -> imports.ImportFile:
    return imports.read_import(
        path,
        kpis=KPIS,
        known_ids=[k.id for k in REGISTRY.kpis],
        kpi_id=kpi_id,
        first=FIRST,
        last=LAST,
    )


def _problems(path: Path, kpi_id: str | None = None) -> list[imports.Problem]:
    with pytest.raises(imports.ImportValidationError) as caught:
        _read(path, kpi_id)
    return caught.value.problems


def _write(tmp_path: Path, text: str, name: str = "history.csv", encoding="utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- validation ---------------------------------------------------------------------------


def test_a_five_year_file_with_every_kind_of_bad_line_reports_each_with_its_line(tmp_path):
    start = date(2024, 1, 1)
    days = _days(start, 1826)  # 2024-01-01 .. 2028-12-30: the later days have no partition
    lines = ["date,btc_price,eth_price,us_10y_yield,btc_prise"]
    lines += [f"{d},{40000 + n},{2000 + n / 8},," for n, d in enumerate(days)]
    saturday = next(d for d in days if d.weekday() == 5)

    def put(line: int, text: str) -> None:
        lines[line - 1] = text

    put(5, "2024/01/04,40003,2000.5,,")
    put(10, "09/01/2024,40008,2001,,")
    put(20, "2024-01-19,abc,2002,,")
    put(30, "2024-01-29,-5,2003,,")
    put(40, "2024-02-08,40038,0,,")
    put(50, "2024-02-17,40048,2006,,")  # 2024-02-17 is already on line 49
    put(60, "2024-02-30,40058,2007,,")
    put(70, '2024-03-09,"1,234.5",2008,,')
    put(80, "2024-03-19,40078,,")
    put(90, "2024-03-29,nan,2010,,")
    saturday_line = (saturday - start).days + 2
    put(saturday_line, f"{saturday},{40000 + saturday_line},2001,4.2,")
    before = FIRST - timedelta(days=1)
    lines.insert(1, f"{before},39999,1999,,")  # before the first partition: every line moves
    lines.append("Total,123,456,,")
    path = _write(tmp_path, "\ufeff" + "\n".join(lines) + "\n")

    problems = _problems(path)
    found = {(p.line, p.column) for p in problems}
    shift = 1  # the inserted line
    expected = {
        (1, 5): "unknown KPI id 'btc_prise'; did you mean 'btc_price'?",
        (2, 1): f"{before} is before the first partition ({FIRST})",
        (5 + shift, 1): "mixed date formats: '2024/01/04' is YYYY/MM/DD, line 2 is YYYY-MM-DD",
        (10 + shift, 1): "mixed date formats: '09/01/2024' is DD/MM/YYYY or MM/DD/YYYY",
        (20 + shift, 2): "not a number: 'abc'",
        (30 + shift, 2): "-5 is out of range for btc_price (a price): expected above 0",
        (40 + shift, 3): "0 is out of range for eth_price (a price): expected above 0",
        (50 + shift, 1): f"duplicate date 2024-02-17 (also line {49 + shift})",
        (60 + shift, 1): "bad date '2024-02-30': day is out of range for month",
        (70 + shift, 2): "not a number: '1,234.5' (no thousands separators or units)",
        (80 + shift, None): "expected 5 columns as in the header (line 1), found 4",
        (90 + shift, 2): "not a finite number: 'nan'",
        (saturday_line + shift, 4): f"{saturday} is not in us_10y_yield's calendar",
        (len(lines), 1): "a stray total line ('Total'): a summary row, not a day",
    }
    by_place = {(p.line, p.column): str(p) for p in problems}
    for place, fragment in expected.items():
        assert place in by_place, f"no problem reported at {place}: {fragment}"
        assert fragment in by_place[place], by_place[place]
        assert by_place[place].startswith(f"history.csv, line {place[0]}")
    future = [n + 2 + shift for n, d in enumerate(days) if d > LAST]
    for line in future:
        assert (line, 1) in found
    assert f"after the last partition ({LAST}" in by_place[(future[0], 1)]
    # Nothing else: every problem is one of the planted ones.
    assert len(problems) == len(expected) + len(future)


@pytest.mark.parametrize(
    ("text", "encoding", "kpi_id", "message"),
    [
        ("2024-01-01,1\n2024-01-02,2\n", "utf-8", "btc_price", "missing header: the first line"),
        ("day,value\n2024-01-01,1\n", "utf-8", "btc_price", "the first column must be 'date'"),
        ("date,value\n2024-01-01,1\n", "utf-8", None, "needs --kpi ID"),
        ("date;value\n2024-01-01;1\n", "utf-8", "btc_price", "separated by ';'"),
        ("date,value\n2024-01-01,1\n", "utf-16", "btc_price", "UTF-16 LE"),
        ("date,value\n2024-01-01,1\n", "utf-16-be", "btc_price", "UTF-16 BE"),
        ("date,value\n2024-01-01,1\n# Zürich,1\n", "cp1252", "btc_price", "Windows-1252"),
        ("date,nope\n2024-01-01,1\n", "utf-8", None, "unknown KPI id 'nope'"),
        ("date,value\n2024-01-01,1\n", "utf-8", "usdt_dominance", "is not enabled"),
        (
            "date,btc_volatility_30d\n2024-01-01,1\n",
            "utf-8",
            None,
            "'btc_volatility_30d' is derived (computed from btc_price): import its inputs",
        ),
        ("date,btc_price [EUR]\n2024-01-01,1\n", "utf-8", None, "differs from the registry"),
        ("date,value\n", "utf-8", "btc_price", "no values"),
        ("date,value\n2024-01-01,\n", "utf-8", "btc_price", "missing value"),
        ("date,value\n2024-01-01,101\n", "utf-8", "btc_dominance", "expected from 0 to 100"),
    ],
)
def test_each_kind_of_bad_file_names_the_problem(tmp_path, text, encoding, kpi_id, message):
    problems = _problems(_write(tmp_path, text, encoding=encoding), kpi_id)
    assert any(message in str(p) for p in problems), [str(p) for p in problems]
    assert all(str(p).startswith("history.csv, line ") for p in problems)


def test_a_bom_is_accepted_and_a_wide_file_reads_every_column(tmp_path):
    text = "date,btc_price [USD],eth_price\n2024-01-01,42000.5,2300\n2024-01-02,,2301\n"
    path = tmp_path / "wide.csv"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    imported = _read(path)
    assert imported.values == {
        "btc_price": {date(2024, 1, 1): 42000.5},
        "eth_price": {date(2024, 1, 1): 2300.0, date(2024, 1, 2): 2301.0},
    }
    assert imported.shape == "wide CSV"
    assert any("BOM" in note for note in imported.notes)
    assert imported.source == "import:wide.csv"


def test_parquet_rows_are_validated_like_csv_lines(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "history.parquet"
    table = pa.table(
        {
            "date": [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 2)],
            "btc_price": [42000.0, None, -1.0],
        }
    )
    pq.write_table(table, path)
    problems = {str(p) for p in _problems(path)}
    assert "history.parquet, row 3, column 1 (date): duplicate date 2024-01-02 (also row 2)" in (
        problems
    )
    pq.write_table(table.slice(0, 2), path)
    assert _read(path).values == {"btc_price": {date(2024, 1, 1): 42000.0}}


# --- the CLI, against a real store and instance --------------------------------------------


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAILY_INDEX_") and k not in ("FRED_API_KEY", "DAGSTER_HOME")
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    environ["DAGSTER_HOME"] = str(home)
    environ["DAILY_INDEX_DATA_DIR"] = str(tmp_path / "data")
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    return environ


def _cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=600, cwd=cwd or ROOT
    )


def _series(env: dict[str, str], kpi_id: str = "btc_price"):
    return KpiSeriesStore(LocalObjectStore(Path(env["DAILY_INDEX_DATA_DIR"]))).rows(kpi_id)


def _instance(env: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _history(tmp_path: Path, days: list[date], name: str = "btc.csv", base: float = 40000.0):
    path = tmp_path / name
    rows = [f"{d},{base + n * 0.25!r}" for n, d in enumerate(days)]
    path.write_text("date,value\n" + "\n".join(rows) + "\n")
    return path


def test_a_bad_file_stores_nothing_and_exits_2(tmp_path, env):
    path = _write(tmp_path, "date,value\n2024-01-01,1\n2024-01-02,x\nTotal,1\n")
    result = _cli("import", str(path), "--kpi", "btc_price", env=env)
    assert result.returncode == 2, result.stderr
    assert "history.csv, line 3, column 2 (value): not a number: 'x'" in result.stderr
    assert "history.csv, line 4, column 1: a stray total line" in result.stderr
    assert "2 problem(s); nothing stored" in result.stderr
    assert not Path(env["DAILY_INDEX_DATA_DIR"], "kpi").exists()
    assert _instance(env).get_runs_count() == 0


def test_the_whole_history_lands_in_one_run_and_reimport_and_overwrite(tmp_path, env):
    # Five years (1,826 days) up to yesterday.
    days = _days(LAST - timedelta(days=1826), 1826)
    assert days[0] >= FIRST
    path = _history(tmp_path, days)
    result = _cli("import", str(path), "--kpi", "btc_price", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert f"Imported btc.csv: {len(days)} KPI-day(s) recorded in run" in result.stdout
    instance = _instance(env)
    assert instance.get_runs_count() == 1
    assert len(instance.get_materialized_partitions(BTC)) == len(days) == 1826
    latest = instance.get_latest_materialization_event(BTC)
    metadata = latest.asset_materialization.metadata
    assert metadata["source"].value == "import:btc.csv"
    assert metadata["import_sha256"].value == imports.file_sha256(path.read_bytes())
    stored = _series(env)
    assert [stored[d].value for d in days] == [40000.0 + n * 0.25 for n in range(len(days))]

    again = _cli("import", str(path), "--kpi", "btc_price", env=env)
    assert again.returncode == 0, again.stderr
    assert "Nothing to do: btc.csv is already imported" in again.stdout
    assert instance.get_runs_count() == 1
    assert _series(env) == stored

    changed = [days[10], days[500]]
    fix = tmp_path / "fix.csv"
    fix.write_text(f"date,value\n{changed[0]},1.5\n{changed[1]},2.5\n{days[11]},{40002.75!r}\n")
    refused = _cli("import", str(fix), "--kpi", "btc_price", env=env)
    assert refused.returncode == 2
    assert "2 day(s) are already stored with other values" in refused.stderr
    assert _series(env) == stored
    replaced = _cli("import", str(fix), "--kpi", "btc_price", "--overwrite", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert "Imported fix.csv: 2 KPI-day(s) recorded" in replaced.stdout
    after = _series(env)
    assert {d for d in days if after[d] != stored[d]} == set(changed)
    assert [after[d].value for d in changed] == [1.5, 2.5]
    assert after[changed[0]].source == "import:fix.csv"
    assert after[days[11]].source == "import:btc.csv"  # same value: left as it was
    assert instance.get_runs_count() == 2


def test_an_import_killed_before_its_run_records_what_landed_on_the_next_try(tmp_path, env):
    days = _days(date(2024, 3, 1), 20)
    path = _history(tmp_path, days)
    series = KpiSeriesStore(LocalObjectStore(Path(env["DAILY_INDEX_DATA_DIR"])))
    imported = _read(path, "btc_price")
    # What the killed import left: the series written, nothing recorded in Dagster.
    plan = imports.plan_store(series, imported)
    imports.store_import(series, imported, plan, {k.id: k for k in KPIS}, overwrite=False)
    landed = series.rows("btc_price")

    result = _cli("import", str(path), "--kpi", "btc_price", env=env)
    assert result.returncode == 0, result.stderr
    assert "Series: 0 new, 0 to replace, 20 already stored" in result.stdout
    assert "recording the 20 day(s) not yet recorded" in result.stdout
    assert len(_instance(env).get_materialized_partitions(BTC)) == 20
    assert series.rows("btc_price") == landed  # not rewritten


def test_an_import_killed_during_its_run_resumes_without_recording_twice(tmp_path, env):
    days = _days(date(2024, 1, 1), 400)
    path = _history(tmp_path, days)
    # Batches of 20 events, so that the kill lands between two of them.
    process = subprocess.Popen(
        [*CLI, "import", str(path), "--kpi", "btc_price", "--no-progress"],
        env=env | {"DAGSTER_EVENT_BATCH_SIZE": "20"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    instance = _instance(env)
    deadline = time.monotonic() + 240
    try:
        while len(instance.get_materialized_partitions(BTC)) < 40:
            assert process.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = len(instance.get_materialized_partitions(BTC))
    assert 40 <= before < len(days)

    result = _cli("import", str(path), "--kpi", "btc_price", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    recorded = int(re.search(r"(\d+) KPI-day\(s\) recorded", result.stdout).group(1))
    assert recorded == len(days) - before
    assert len(instance.get_materialized_partitions(BTC)) == len(days)
    assert sorted(_series(env)) == days  # every row once, by date


def _readme_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^(dagster asset materialize .+)$", text, re.M)
    assert match, "README shows no `dagster asset materialize` command"
    return match.group(1)


def test_dagster_asset_materialize_imports_the_file_as_the_readme_shows(tmp_path, env):
    command = _readme_command()
    assert "--partition-range 2024-01-01...2024-01-31" in command
    work = tmp_path / "work"
    work.mkdir()
    days = _days(date(2024, 1, 1), 31)
    _history(work, days, name="btc_price.csv")
    result = subprocess.run(
        shlex.split(command), env=env, cwd=work, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    instance = _instance(env)
    assert len(instance.get_materialized_partitions(BTC)) == 31
    assert instance.get_runs_count() == 1
    latest = instance.get_latest_materialization_event(BTC)
    assert latest.asset_materialization.metadata["source"].value == "import:btc_price.csv"
    assert sorted(_series(env)) == days


def test_imported_recent_days_never_alert_but_count_as_landed(tmp_path):
    from daily_index_tests.alerts.conftest import kpi, ledger
    from daily_index_tests.alerts.test_kpi_alert_sensor import NOW, TODAY, Harness

    spec = kpi("btc_price", {"kind": "above", "threshold": 100_000}, {"kind": "no_data"})
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "home")) as instance:
        harness = Harness(instance, tmp_path, [spec], window=3)
        harness.now = NOW
        store = harness.store
        series = KpiSeriesStore(store)
        path = tmp_path / "recent.csv"
        path.write_text(f"date,value\n{TODAY - timedelta(days=1)},150000\n{TODAY},151000\n")
        imported = imports.read_import(
            path, kpis=[spec], kpi_id="btc_price", first=FIRST, last=TODAY
        )
        imports.store_import(
            series,
            imported,
            imports.plan_store(series, imported),
            {"btc_price": spec},
            overwrite=False,
        )
        for day, value in imported.values["btc_price"].items():
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    BTC,
                    partition=day.isoformat(),
                    metadata={"value": value, "source": imported.source},
                )
            )
        result = harness.tick()
        assert harness.alert_messages() == []
        assert ledger(harness.store) == {}
        summary = result.skip_reason.skip_message
        assert "2 new KPI materialisation(s), 0 recent KPI day(s) judged" in summary
        # A fetched day over the threshold still alerts.
        harness.land("btc_price", {TODAY - timedelta(days=2): 152_000.0})
        harness.tick()
        assert len(harness.alert_messages()) == 1
