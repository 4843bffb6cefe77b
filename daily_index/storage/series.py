"""Per-KPI daily series: one Parquet object per KPI (`kpi/<id>.parquet`, a row per date).

A partition write upserts its rows through `ObjectStore.update`, so two runs writing
different days of the same KPI both keep their rows. A reader gets a whole window in one
GET. The validated payload of every fetch is archived as `raw/<id>/<date>.json`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from daily_index.storage.objectstore import ObjectStore, StorageError

SERIES_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("source", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
        pa.field("trace_id", pa.string()),
    ]
)
COLUMNS = [f.name for f in SERIES_SCHEMA]


@dataclass(frozen=True)
class SeriesRow:
    day: date
    value: float
    unit: str | None
    source: str | None
    fetched_at: datetime
    trace_id: str


def series_key(kpi_id: str) -> str:
    return f"kpi/{kpi_id}.parquet"


def raw_key(kpi_id: str, day: date) -> str:
    return f"raw/{kpi_id}/{day.isoformat()}.json"


def _to_table(rows: dict[date, SeriesRow]) -> pa.Table:
    ordered = [rows[d] for d in sorted(rows)]
    return pa.table(
        {
            "date": [r.day for r in ordered],
            "value": [float(r.value) for r in ordered],
            "unit": [r.unit for r in ordered],
            "source": [r.source for r in ordered],
            "fetched_at": [r.fetched_at.astimezone(UTC) for r in ordered],
            "trace_id": [r.trace_id for r in ordered],
        },
        schema=SERIES_SCHEMA,
    )


def _from_bytes(data: bytes, where: str) -> dict[date, SeriesRow]:
    try:
        # A series is small: pyarrow's own thread pool would only fight our writer threads.
        table = pq.ParquetFile(io.BytesIO(data)).read(use_threads=False).cast(SERIES_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        # Refuse to overwrite what we cannot read: the operator must look at it first.
        raise StorageError(f"{where}: existing series is not readable Parquet ({exc})") from None
    cols = table.to_pydict()
    return {
        d: SeriesRow(d, v, u, s, f, t)
        for d, v, u, s, f, t in zip(
            cols["date"],
            cols["value"],
            cols["unit"],
            cols["source"],
            cols["fetched_at"],
            cols["trace_id"],
            strict=True,
        )
    }


def _to_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class KpiSeriesStore:
    """Reads and upserts KPI series on any ObjectStore."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def upsert(self, kpi_id: str, rows: Iterable[SeriesRow]) -> int:
        """Insert or replace rows by date; returns the series length afterwards."""
        return len(self.upsert_rows(kpi_id, rows))

    def upsert_rows(self, kpi_id: str, rows: Iterable[SeriesRow]) -> dict[date, SeriesRow]:
        """Insert or replace rows by date; returns the whole series as it was written.

        The KPI step checks each new value against the series it joined, so handing the
        merged rows back saves it a second GET per KPI.
        """
        incoming = {r.day: r for r in rows}
        if not incoming:
            return self.rows(kpi_id)
        key = series_key(kpi_id)
        where = f"{self.store.description}, {key}"
        written: dict[date, SeriesRow] = {}

        def merge(current: bytes | None) -> bytes:
            nonlocal written
            merged = _from_bytes(current, where) if current is not None else {}
            merged.update(incoming)
            written = merged
            return _to_bytes(_to_table(merged))

        self.store.update(key, merge, content_type="application/vnd.apache.parquet")
        return written

    def rows(self, kpi_id: str) -> dict[date, SeriesRow]:
        """The whole series by date, in one GET (empty when there is none)."""
        key = series_key(kpi_id)
        data = self.store.read_bytes(key)
        return {} if data is None else _from_bytes(data, f"{self.store.description}, {key}")

    def read(self, kpi_id: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """The series (one row per date, ascending) within [start, end], in one GET."""
        key = series_key(kpi_id)
        data = self.store.read_bytes(key)
        if data is None:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
        rows = _from_bytes(data, f"{self.store.description}, {key}")
        frame = _to_table(rows).to_pandas()
        frame["date"] = pd.to_datetime(frame["date"]).dt.date
        if start is not None:
            frame = frame[frame["date"] >= start]
        if end is not None:
            frame = frame[frame["date"] <= end]
        return frame.reset_index(drop=True)

    def value_on(self, kpi_id: str, day: date) -> float | None:
        frame = self.read(kpi_id, day, day)
        return None if frame.empty else float(frame["value"].iloc[0])

    def archive_raw(self, kpi_id: str, day: date, payload: dict) -> None:
        body = json.dumps(payload, sort_keys=True, indent=1).encode()
        self.store.put(raw_key(kpi_id, day), body, content_type="application/json")


def status_key(day: date) -> str:
    return f"status/{day.isoformat()}.json"


def record_fetch_status(store: ObjectStore, day: date, entries: dict[str, dict]) -> None:
    """Merge per-KPI fetch results of a day into `status/<date>.json` (ok or failed + reason).

    The report's data-quality section and the CLI read it to tell a KPI that failed (and
    why) from one that simply has not run yet. A gap never replaces an `ok`: a gap stores
    nothing, so the value that made the day `ok` (a pushed one that landed while the KPI
    step ran, say) is still in the series.
    """
    where = f"{store.description}, {status_key(day)}"

    def merge(current: bytes | None) -> bytes:
        merged: dict[str, dict] = {}
        if current is not None:
            try:
                merged = json.loads(current)
            except ValueError:
                raise StorageError(f"{where}: existing status is not JSON") from None
        for kpi_id, entry in entries.items():
            if entry.get("status") == "gap" and merged.get(kpi_id, {}).get("status") == "ok":
                continue
            merged[kpi_id] = entry
        return json.dumps(merged, sort_keys=True, indent=1).encode()

    store.update(status_key(day), merge, content_type="application/json")


def read_fetch_status(store: ObjectStore, day: date) -> dict[str, dict]:
    data = store.read_bytes(status_key(day))
    return json.loads(data) if data else {}
