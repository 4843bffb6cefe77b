"""KPI series store: upsert/read windows and concurrent writers on both backends."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, date, datetime, timedelta

import pytest

from daily_index.storage.objectstore import LocalObjectStore, ObjectStore, StorageError
from daily_index.storage.series import (
    COLUMNS,
    KpiSeriesStore,
    SeriesRow,
    raw_key,
    series_key,
)

START = date(2024, 1, 1)


def row(day: date, value: float, trace: str = "t") -> SeriesRow:
    return SeriesRow(day, value, "USD", "test", datetime(2024, 6, 1, 12, tzinfo=UTC), trace)


def test_upsert_and_read_window(store: ObjectStore):
    series = KpiSeriesStore(store)
    days = [START + timedelta(days=i) for i in range(10)]
    assert series.upsert("btc_price", [row(d, 100.0 + i) for i, d in enumerate(days)]) == 10
    window = series.read("btc_price", days[2], days[4])
    assert list(window.columns) == COLUMNS
    assert list(window["date"]) == days[2:5]
    assert list(window["value"]) == [102.0, 103.0, 104.0]
    assert series.value_on("btc_price", days[9]) == 109.0
    assert series.value_on("btc_price", days[9] + timedelta(days=1)) is None


def test_upsert_replaces_by_date_and_keeps_order(store: ObjectStore):
    series = KpiSeriesStore(store)
    series.upsert("k", [row(START + timedelta(days=2), 3.0), row(START, 1.0)])
    assert series.upsert("k", [row(START, 10.0, "again"), row(START + timedelta(days=1), 2.0)]) == 3
    frame = series.read("k")
    assert list(frame["value"]) == [10.0, 2.0, 3.0]
    assert frame["trace_id"].iloc[0] == "again"


def test_read_missing_series_is_empty(store: ObjectStore):
    frame = KpiSeriesStore(store).read("never_written")
    assert frame.empty and list(frame.columns) == COLUMNS
    assert KpiSeriesStore(store).upsert("never_written", []) == 0


def test_archive_raw_keeps_the_payload(store: ObjectStore):
    KpiSeriesStore(store).archive_raw("btc_price", START, {"value": 1.5, "extra": [1]})
    assert store.list("raw/btc_price/") == [raw_key("btc_price", START)]
    assert b'"extra"' in store.read_bytes(raw_key("btc_price", START))


@pytest.mark.parametrize("corrupt", [b"PAR1 this is not parquet", b""], ids=["garbage", "empty"])
def test_corrupt_series_is_refused_and_left_alone(store: ObjectStore, corrupt: bytes):
    store.put(series_key("btc_price"), corrupt)
    series = KpiSeriesStore(store)
    with pytest.raises(StorageError, match="kpi/btc_price.parquet"):
        series.upsert("btc_price", [row(START, 1.0)])
    assert store.read_bytes(series_key("btc_price")) == corrupt
    with pytest.raises(StorageError, match="not readable Parquet"):
        series.read("btc_price")


def _upsert_days(series: KpiSeriesStore, days: list[date], tag: str) -> None:
    for day in days:
        series.upsert("btc_price", [row(day, float(day.toordinal()), tag)])


def test_two_writer_threads_keep_every_row(store: ObjectStore):
    """Two runs upsert different days of one KPI at the same time, 20 rounds each."""
    series = KpiSeriesStore(store)
    days = [START + timedelta(days=i) for i in range(40)]
    threads = [
        threading.Thread(target=_upsert_days, args=(series, days[0::2], "even")),
        threading.Thread(target=_upsert_days, args=(series, days[1::2], "odd")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    frame = series.read("btc_price")
    assert list(frame["date"]) == days
    assert list(frame["value"]) == [float(d.toordinal()) for d in days]


def _process_writer(root: str, offsets: list[int], go) -> None:
    series = KpiSeriesStore(LocalObjectStore(root))
    go.wait(timeout=60)  # both processes imported: start writing together
    _upsert_days(series, [START + timedelta(days=i) for i in offsets], "process")


def test_two_writer_processes_keep_every_row_locally(tmp_path):
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    workers = [
        context.Process(target=_process_writer, args=(root, list(range(0, 40, 2)), go)),
        context.Process(target=_process_writer, args=(root, list(range(1, 40, 2)), go)),
    ]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    frame = KpiSeriesStore(LocalObjectStore(root)).read("btc_price")
    assert list(frame["date"]) == [START + timedelta(days=i) for i in range(40)]


def test_a_gap_never_replaces_an_ok_status_but_a_failure_or_a_new_ok_does(tmp_path):
    from daily_index.storage.series import read_fetch_status, record_fetch_status

    store = LocalObjectStore(tmp_path)
    day = date(2026, 11, 24)
    # A pushed value landed (ok) while the KPI step ran; the step then records its gap.
    record_fetch_status(store, day, {"push_kpi": {"status": "ok"}, "other": {"status": "ok"}})
    record_fetch_status(
        store,
        day,
        {
            "push_kpi": {"status": "gap", "reason": "answered 202: pushed later"},
            "other": {"status": "failed", "reason": "HTTP 503"},
            "third": {"status": "gap", "reason": "weekend"},
        },
    )
    status = read_fetch_status(store, day)
    assert status["push_kpi"] == {"status": "ok"}
    assert status["other"]["status"] == "failed"
    assert status["third"]["status"] == "gap"
