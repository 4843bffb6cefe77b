"""Export of KPI series: CSV, Parquet or JSON, one column per KPI (wide) or a row per value.

Values are the series' own floats, written so that they read back bit for bit (CSV and JSON
use Python's shortest round-trip spelling). A day without a value is empty (an empty CSV
cell, a Parquet or JSON null), never 0. The unit goes into the wide layout's header
(`btc_price [USD]`, which `daily-index import` reads back) and into a column of the long one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from daily_index.registry import KpiSpec
from daily_index.storage.series import KpiSeriesStore, SeriesRow

Format = Literal["csv", "parquet", "json"]
Layout = Literal["wide", "long"]
LONG_COLUMNS = ["date", "kpi", "value", "unit", "source"]


def wide_header(spec: KpiSpec) -> str:
    """A wide column's name: the KPI id, and its unit in brackets when it has one."""
    return f"{spec.id} [{spec.unit}]" if spec.unit else spec.id


@dataclass(frozen=True)
class ExportData:
    """The selected series within the window: KPI id -> day -> stored row."""

    kpis: list[KpiSpec]
    rows: dict[str, dict[date, SeriesRow]]
    first: date | None
    last: date | None

    def days(self) -> list[date]:
        if self.first is None or self.last is None:
            return []
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def collect(
    series: KpiSeriesStore,
    kpis: Sequence[KpiSpec],
    *,
    start: date | None = None,
    end: date | None = None,
) -> ExportData:
    """Read each KPI's series once; the window defaults to the first and last stored day."""
    rows: dict[str, dict[date, SeriesRow]] = {}
    for spec in kpis:
        stored = series.rows(spec.id)
        rows[spec.id] = {
            d: r
            for d, r in stored.items()
            if (start is None or d >= start) and (end is None or d <= end)
        }
    stored_days = [d for per_kpi in rows.values() for d in per_kpi]
    first = start or (min(stored_days) if stored_days else None)
    last = end or (max(stored_days) if stored_days else None)
    return ExportData(list(kpis), rows, first, last)


def _long_records(data: ExportData) -> list[dict]:
    return [
        {
            "date": day,
            "kpi": spec.id,
            "value": row.value,
            "unit": row.unit or spec.unit,
            "source": row.source,
        }
        for spec in data.kpis
        for day, row in sorted(data.rows[spec.id].items())
    ]


def _wide_columns(data: ExportData) -> dict[str, list]:
    days = data.days()
    columns: dict[str, list] = {"date": days}
    for spec in data.kpis:
        per_day = data.rows[spec.id]
        columns[wide_header(spec)] = [per_day[d].value if d in per_day else None for d in days]
    return columns


def to_csv(data: ExportData, layout: Layout) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if layout == "long":
        writer.writerow(LONG_COLUMNS)
        for record in _long_records(data):
            writer.writerow(
                [
                    record["date"].isoformat(),
                    record["kpi"],
                    repr(record["value"]),
                    record["unit"],
                    record["source"] or "",
                ]
            )
        return out.getvalue()
    columns = _wide_columns(data)
    names = list(columns)
    writer.writerow(names)
    for index, day in enumerate(columns["date"]):
        writer.writerow(
            [day.isoformat()]
            + ["" if (v := columns[n][index]) is None else repr(v) for n in names[1:]]
        )
    return out.getvalue()


def to_json(data: ExportData, layout: Layout) -> str:
    if layout == "long":
        records = [{**r, "date": r["date"].isoformat()} for r in _long_records(data)]
        return json.dumps(records, indent=1) + "\n"
    days = data.days()
    body = {
        "kpis": {spec.id: {"name": spec.name, "unit": spec.unit} for spec in data.kpis},
        "rows": [
            {"date": d.isoformat()}
            | {spec.id: getattr(data.rows[spec.id].get(d), "value", None) for spec in data.kpis}
            for d in days
        ],
    }
    return json.dumps(body, indent=1) + "\n"


def to_parquet(data: ExportData, layout: Layout) -> bytes:
    if layout == "long":
        records = _long_records(data)
        table = pa.table(
            {name: [r[name] for r in records] for name in LONG_COLUMNS},
            schema=pa.schema(
                [
                    pa.field("date", pa.date32(), nullable=False),
                    pa.field("kpi", pa.string(), nullable=False),
                    pa.field("value", pa.float64(), nullable=False),
                    pa.field("unit", pa.string()),
                    pa.field("source", pa.string()),
                ]
            ),
        )
    else:
        columns = _wide_columns(data)
        fields = [pa.field("date", pa.date32(), nullable=False)] + [
            pa.field(name, pa.float64()) for name in list(columns)[1:]
        ]
        table = pa.table(columns, schema=pa.schema(fields))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def render(data: ExportData, fmt: Format, layout: Layout) -> bytes:
    """The export as bytes, in the format and layout asked for."""
    if fmt == "parquet":
        return to_parquet(data, layout)
    text = to_csv(data, layout) if fmt == "csv" else to_json(data, layout)
    return text.encode("utf-8")
