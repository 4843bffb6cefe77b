"""Historical import: a CSV or Parquet file of KPI values, validated, then stored and recorded.

Three shapes are read: a CSV per KPI (`date,value`, the KPI named by `--kpi`), a wide CSV
(`date` plus one column per KPI id, optionally `id [unit]` as the export writes it) and
Parquet with the same columns. Validation reads the whole file first and reports every
problem with its file, line (or row) and column; nothing is stored from a file with a
problem. Imported values join the same per-KPI series as fetched ones, with source
`import:<file name>` and a trace id naming the file's sha256, so a second import of the same
file finds nothing to write, and a killed import finds what already landed.

The Dagster side (materialising the covered partitions in one run) is the `kpis` asset's
`import_file` run config: `prepare_run` is what the asset calls.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from daily_index.calendars import calendar_gap
from daily_index.checks import bounds
from daily_index.registry import KpiSpec
from daily_index.storage.series import KpiSeriesStore, SeriesRow

SOURCE_PREFIX = "import:"
SHA_METADATA = "import_sha256"
# The value column's name in a one-KPI file, and the date column's in every file.
VALUE_COLUMN, DATE_COLUMN = "value", "date"

_HEADER_RE = re.compile(r"^(?P<id>[A-Za-z][A-Za-z0-9_]*)\s*(?:\[(?P<unit>[^\]]*)\])?$")
_TOTAL_RE = re.compile(r"^(grand\s+)?(total|sum|average|avg|mean|count|min|max)\b", re.I)
# Date spellings recognised so that an error can say what it saw; only ISO days are accepted.
_DATE_SHAPES = [
    ("YYYY-MM-DD", re.compile(r"^\d{4}-\d{2}-\d{2}$")),
    ("an ISO timestamp", re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")),
    ("YYYY/MM/DD", re.compile(r"^\d{4}/\d{1,2}/\d{1,2}$")),
    ("DD/MM/YYYY or MM/DD/YYYY", re.compile(r"^\d{1,2}/\d{1,2}/\d{2,4}$")),
    ("DD.MM.YYYY", re.compile(r"^\d{1,2}\.\d{1,2}\.\d{2,4}$")),
    ("DD-MM-YYYY", re.compile(r"^\d{1,2}-\d{1,2}-\d{4}$")),
    ("YYYYMMDD", re.compile(r"^\d{8}$")),
]
_BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "UTF-32 BE"),
    (codecs.BOM_UTF16_LE, "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "UTF-16 BE"),
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import file, where it is and what was expected."""

    file: str
    line: int
    column: int | None
    message: str
    column_name: str | None = None
    unit: str = "line"
    """`line` for CSV (physical lines, header = 1), `row` for Parquet (first data row = 1)."""

    def __str__(self) -> str:
        # Line 0: the file as a whole, or a Parquet file's column names.
        where = f"{self.file}, {self.unit} {self.line}" if self.line else self.file
        if self.column is not None:
            where += f", column {self.column}"
            if self.column_name:
                where += f" ({self.column_name})"
        return f"{where}: {self.message}"


class ImportValidationError(ValueError):
    """The file cannot be imported; `problems` lists every reason found."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{file}: {len(problems)} problem(s), nothing stored:\n{shown}{more}")


@dataclass(frozen=True)
class ImportFile:
    """A validated import: every value by KPI and day, and the file's identity."""

    path: Path
    sha256: str
    shape: str
    values: dict[str, dict[date, float]]
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def source(self) -> str:
        return f"{SOURCE_PREFIX}{self.name}"

    @property
    def trace_id(self) -> str:
        return f"{SOURCE_PREFIX}{self.sha256[:16]}"

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.values.values())

    def span(self) -> tuple[date, date] | None:
        days = [d for v in self.values.values() for d in v]
        return (min(days), max(days)) if days else None


@dataclass
class StorePlan:
    """What storing an import would change in the series, per KPI."""

    new: dict[str, list[date]] = field(default_factory=dict)
    changed: dict[str, list[tuple[date, float, float]]] = field(default_factory=dict)
    """KPI id -> (day, stored value, file value) where the file differs from the series."""
    unchanged: dict[str, int] = field(default_factory=dict)

    @property
    def new_count(self) -> int:
        return sum(len(v) for v in self.new.values())

    @property
    def changed_count(self) -> int:
        return sum(len(v) for v in self.changed.values())

    @property
    def unchanged_count(self) -> int:
        return sum(self.unchanged.values())

    def conflicts(self, limit: int = 10) -> list[str]:
        lines = [
            f"kpi/{kpi_id} {day}: stored {old!r}, file {new!r}"
            for kpi_id, items in sorted(self.changed.items())
            for day, old, new in items
        ]
        extra = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
        return lines[:limit] + extra


# --- reading and validating ---------------------------------------------------------------


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _line_col(data: bytes, position: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, position) + 1
    start = data.rfind(b"\n", 0, position) + 1
    return line, position - start + 1


def _decode(name: str, data: bytes) -> tuple[str | None, list[Problem], list[str]]:
    """The file's text (UTF-8, a BOM accepted), or the problem naming the encoding found."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return None, [_wrong_encoding(name, 1, 1, encoding, "its byte-order mark")], []
    notes = []
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        notes.append("a UTF-8 byte-order mark (BOM) was skipped")
    if b"\x00" in data[:200]:
        # UTF-16 without a BOM: every other byte of ASCII text is a NUL.
        zero = data.index(b"\x00")
        encoding = "UTF-16 LE" if zero % 2 else "UTF-16 BE"
        line, col = _line_col(data, zero)
        return None, [_wrong_encoding(name, line, col, encoding, "NUL bytes between letters")], []
    try:
        return data.decode("utf-8"), [], notes
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        bad = data[exc.start : exc.start + 1]
        try:
            data.decode("cp1252")
            found = "Windows-1252 (Latin-1)"
        except UnicodeDecodeError:
            found = "not UTF-8, and not Windows-1252 either"
        return None, [_wrong_encoding(name, line, col, found, f"byte 0x{bad.hex()}")], []


def _wrong_encoding(name: str, line: int, col: int, found: str, clue: str) -> Problem:
    return Problem(
        name,
        line,
        col,
        f"wrong encoding: the file looks like {found} ({clue}); expected UTF-8: save it as UTF-8",
    )


def _date_shape(text: str) -> str | None:
    for shape, pattern in _DATE_SHAPES:
        if pattern.match(text):
            return shape
    return None


@dataclass
class _Column:
    number: int
    header: str
    spec: KpiSpec


class _Validator:
    """Collects every problem of one file while reading its rows."""

    def __init__(
        self,
        name: str,
        *,
        kpis: Sequence[KpiSpec],
        known_ids: Collection[str],
        first: date,
        last: date,
        unit: str,
    ):
        self.name = name
        self.kpis = {k.id: k for k in kpis}
        self.known_ids = set(known_ids)
        self.first, self.last = first, last
        self.unit = unit
        self.problems: list[Problem] = []
        self.values: dict[str, dict[date, float]] = {}
        self.seen: dict[date, int] = {}
        self.date_shape: tuple[str, int] | None = None
        self.header_line = 0

    def problem(self, line: int, column: int | None, message: str, name: str | None = None):
        self.problems.append(Problem(self.name, line, column, message, name, self.unit))

    def columns(self, header: list[str], line: int, kpi_id: str | None) -> list[_Column] | None:
        """The KPI columns a header names, or None when the header is unusable."""
        cells = [c.strip() for c in header]
        if not cells or not any(cells):
            self.problem(line, None, "missing header: the file is empty")
            return None
        if _date_shape(cells[0]) or _is_number(cells[0]):
            self.problem(
                line,
                1,
                f"missing header: the first line is data ({','.join(cells)[:60]!r}); expected "
                f"'{DATE_COLUMN},{VALUE_COLUMN}' (with --kpi) or '{DATE_COLUMN},<kpi id>,...'",
            )
            return None
        if cells[0].lower() != DATE_COLUMN:
            self.problem(
                line, 1, f"the first column must be {DATE_COLUMN!r}, got {cells[0]!r}", cells[0]
            )
            return None
        if len(cells) == 1:
            self.problem(
                line, None, "the header names no value column ('value' or KPI ids after 'date')"
            )
            return None
        if len(cells) == 2 and cells[1].lower() == VALUE_COLUMN:
            if kpi_id is None:
                self.problem(
                    line, 2, "a 'date,value' file needs --kpi ID to say which KPI it holds"
                )
                return None
            spec = self._spec(kpi_id, line, 2, kpi_id)
            return [_Column(2, cells[1], spec)] if spec else None
        columns: list[_Column] = []
        seen: dict[str, int] = {}
        for number, cell in enumerate(cells[1:], start=2):
            match = _HEADER_RE.match(cell)
            if not match:
                self.problem(line, number, f"not a KPI id: {cell!r}", cell)
                continue
            column_id, unit = match["id"], match["unit"]
            if column_id in seen:
                self.problem(
                    line, number, f"duplicate column {column_id!r} (also column {seen[column_id]})"
                )
                continue
            seen[column_id] = number
            spec = self._spec(column_id, line, number, cell)
            if spec is None:
                continue
            if unit is not None and unit.strip() != spec.unit:
                self.problem(
                    line,
                    number,
                    f"unit {unit.strip()!r} differs from the registry's {spec.unit!r} for "
                    f"{column_id}",
                    cell,
                )
                continue
            if kpi_id is None or column_id == kpi_id:
                columns.append(_Column(number, cell, spec))
        if kpi_id is not None and kpi_id not in seen:
            self.problem(line, None, f"--kpi {kpi_id}: the file has no column {kpi_id!r}")
        return columns

    def _spec(self, kpi_id: str, line: int, column: int, cell: str) -> KpiSpec | None:
        if kpi_id in self.kpis and self.kpis[kpi_id].source.kind == "derived":
            inputs = ", ".join(self.kpis[kpi_id].derived.inputs)
            self.problem(
                line,
                column,
                f"KPI {kpi_id!r} is derived (computed from {inputs}): import its inputs, "
                "then re-run those days",
                cell,
            )
            return None
        if kpi_id in self.kpis:
            return self.kpis[kpi_id]
        if kpi_id in self.known_ids:
            self.problem(
                line, column, f"KPI {kpi_id!r} is not enabled (inactive, or its key is not set)"
            )
            return None
        near = difflib.get_close_matches(kpi_id, sorted(self.known_ids), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        self.problem(line, column, f"unknown KPI id {kpi_id!r}{hint}", cell)
        return None

    def day(self, text: str, line: int) -> date | None:
        """The row's day, or None (with the problem recorded)."""
        text = text.strip()
        if not text:
            self.problem(line, 1, "missing date", DATE_COLUMN)
            return None
        if _TOTAL_RE.match(text):
            self.problem(
                line, 1, f"a stray total line ({text!r}): a summary row, not a day; remove it"
            )
            return None
        shape = _date_shape(text)
        if shape is None:
            self.problem(line, 1, f"bad date {text!r}: expected YYYY-MM-DD", DATE_COLUMN)
            return None
        if self.date_shape is None:
            self.date_shape = (shape, line)
        elif self.date_shape[0] != shape:
            first_shape, first_line = self.date_shape
            self.problem(
                line,
                1,
                f"mixed date formats: {text!r} is {shape}, {self.unit} {first_line} is "
                f"{first_shape}",
                DATE_COLUMN,
            )
            return None
        if shape != "YYYY-MM-DD":
            self.problem(line, 1, f"bad date {text!r} ({shape}): expected YYYY-MM-DD", DATE_COLUMN)
            return None
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            self.problem(line, 1, f"bad date {text!r}: {exc}", DATE_COLUMN)
            return None
        return self.check_day(day, line)

    def check_day(self, day: date, line: int) -> date | None:
        if day in self.seen:
            self.problem(
                line, 1, f"duplicate date {day} (also {self.unit} {self.seen[day]})", DATE_COLUMN
            )
            return None
        self.seen[day] = line
        if day < self.first:
            self.problem(
                line, 1, f"{day} is before the first partition ({self.first})", DATE_COLUMN
            )
            return None
        if day > self.last:
            self.problem(
                line,
                1,
                f"{day} is after the last partition ({self.last}, today in UTC)",
                DATE_COLUMN,
            )
            return None
        return day

    def value(self, column: _Column, day: date | None, raw: object, line: int) -> None:
        """Record one cell: empty means no value that day; anything else must be in range."""
        spec = column.spec
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if column.header.lower() == VALUE_COLUMN:
                self.problem(line, column.number, "missing value", column.header)
            return
        if isinstance(raw, str):
            text = raw.strip()
            try:
                number = float(text)
            except ValueError:
                hint = " (no thousands separators or units)" if re.search(r"\d", text) else ""
                self.problem(line, column.number, f"not a number: {text!r}{hint}", column.header)
                return
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            self.problem(line, column.number, f"not a number: {raw!r}", column.header)
            return
        else:
            number = float(raw)
        if not math.isfinite(number):
            self.problem(line, column.number, f"not a finite number: {raw!r}", column.header)
            return
        lower, upper, exclusive = bounds(spec)
        low_ok = lower is None or (number > lower if exclusive else number >= lower)
        if not low_ok or (upper is not None and number > upper):
            self.problem(
                line,
                column.number,
                f"{number:g} is out of range for {spec.id} (a {spec.type}): expected "
                f"{_describe(lower, upper, exclusive)}",
                column.header,
            )
            return
        if day is None:
            return
        gap = calendar_gap(spec, day)
        if gap:
            self.problem(line, column.number, f"{day} is not in {spec.id}'s calendar: {gap}")
            return
        self.values.setdefault(spec.id, {})[day] = number


def _describe(lower: float | None, upper: float | None, exclusive: bool) -> str:
    if upper is None:
        return f"{'above' if exclusive else 'at least'} {lower:g}"
    if lower is None:
        return f"at most {upper:g}"
    if exclusive:
        return f"above {lower:g} and at most {upper:g}"
    return f"from {lower:g} to {upper:g}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(validator: _Validator, text: str, kpi_id: str | None) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    columns: list[_Column] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = row, line
            validator.header_line = line
            if len(row) == 1 and ";" in row[0]:
                validator.problem(
                    line, None, "columns are separated by ';'; expected commas (a CSV)"
                )
                return
            found = validator.columns(row, line, kpi_id)
            if found is None:
                return
            columns = found
            continue
        if len(row) != len(header):
            if len(row) > 0 and _TOTAL_RE.match(row[0].strip()):
                validator.day(row[0], line)
                continue
            validator.problem(
                line,
                None,
                f"expected {len(header)} columns as in the header (line {header_line}), "
                f"found {len(row)}",
            )
            continue
        day = validator.day(row[0], line)
        for column in columns:
            validator.value(column, day, row[column.number - 1], line)


def _read_parquet(validator: _Validator, data: bytes, kpi_id: str | None) -> None:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        validator.problem(0, None, f"not a readable Parquet file ({exc})")
        return
    names = table.column_names
    validator.unit = "row"
    columns = validator.columns(names, 0, kpi_id)
    if columns is None:
        return
    cols = table.to_pydict()
    date_values = cols[names[0]]
    for index, raw_day in enumerate(date_values):
        row = index + 1
        day: date | None
        if isinstance(raw_day, datetime):
            moment = raw_day.astimezone(UTC) if raw_day.tzinfo else raw_day
            if moment.time() != datetime.min.time():
                validator.problem(row, 1, f"timestamp {raw_day} is not a day (midnight)", "date")
                day = None
            else:
                day = validator.check_day(moment.date(), row)
        elif isinstance(raw_day, date):
            day = validator.check_day(raw_day, row)
        elif isinstance(raw_day, str):
            day = validator.day(raw_day, row)
        else:
            validator.problem(row, 1, f"bad date {raw_day!r}: expected a date", DATE_COLUMN)
            day = None
        for column in columns:
            validator.value(column, day, cols[names[column.number - 1]][index], row)


def read_import(
    path: str | Path,
    *,
    kpis: Sequence[KpiSpec],
    known_ids: Collection[str] | None = None,
    kpi_id: str | None = None,
    first: date,
    last: date,
) -> ImportFile:
    """Read and validate an import file.

    Args:
        path: The CSV or Parquet file.
        kpis: The enabled KPIs (the assets a value can go to).
        known_ids: Every KPI id of the registry, to tell a disabled KPI from an unknown one.
        kpi_id: The KPI of a `date,value` file (or the one column to take from a wide file).
        first: The first partition day.
        last: The last partition day.

    Raises:
        ImportValidationError: With every problem found; nothing of the file is usable.
    """
    path = Path(path)
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportValidationError(
            name, [Problem(name, 0, None, f"cannot read: {exc.strerror}")]
        ) from None
    known = set(known_ids or ()) | {k.id for k in kpis}
    validator = _Validator(name, kpis=kpis, known_ids=known, first=first, last=last, unit="line")
    notes: list[str] = []
    if data.startswith(b"PAR1") or path.suffix.lower() in (".parquet", ".pq"):
        shape = "Parquet"
        _read_parquet(validator, data, kpi_id)
    else:
        text, problems, notes = _decode(name, data)
        validator.problems.extend(problems)
        shape = "CSV"
        if text is not None:
            _read_csv(validator, text, kpi_id)
    if not validator.problems and not validator.values:
        validator.problem(
            validator.header_line + 1, None, "no values: the file has a header but no data rows"
        )
    if validator.problems:
        raise ImportValidationError(name, validator.problems)
    wide = len(validator.values) > 1 or kpi_id is None
    return ImportFile(
        path=path.resolve(),
        sha256=file_sha256(data),
        shape=f"{'wide ' if wide else 'one-KPI '}{shape}",
        values=validator.values,
        notes=tuple(notes),
    )


def partition_bounds(partitions: dg.DailyPartitionsDefinition) -> tuple[date, date]:
    """The first and last day a partition exists for (the last one moves with the clock)."""
    first = partitions.get_first_partition_key()
    last = partitions.get_last_partition_key()
    if first is None or last is None:
        raise ValueError("the partitions definition has no partitions yet")
    return date.fromisoformat(first), date.fromisoformat(last)


# --- storing ------------------------------------------------------------------------------


def plan_store(series: KpiSeriesStore, imported: ImportFile) -> StorePlan:
    """Compare the file with the series: new days, days with another value, same values."""
    plan = StorePlan()
    for kpi_id, values in imported.values.items():
        current = series.rows(kpi_id)
        for day in sorted(values):
            stored = current.get(day)
            if stored is None:
                plan.new.setdefault(kpi_id, []).append(day)
            elif stored.value != values[day]:
                plan.changed.setdefault(kpi_id, []).append((day, stored.value, values[day]))
            else:
                plan.unchanged[kpi_id] = plan.unchanged.get(kpi_id, 0) + 1
    return plan


def store_import(
    series: KpiSeriesStore,
    imported: ImportFile,
    plan: StorePlan,
    specs: dict[str, KpiSpec],
    *,
    overwrite: bool,
) -> dict[str, dict[date, SeriesRow]]:
    """Upsert the file's new (and, with overwrite, changed) days; returns each KPI's series.

    Idempotent: a day whose stored value equals the file's is left as it is, so re-running
    after a kill writes only what had not landed.
    """
    if plan.changed and not overwrite:
        raise ValueError("days already stored with other values need overwrite")
    fetched_at = datetime.now(UTC)
    written: dict[str, dict[date, SeriesRow]] = {}
    for kpi_id, values in imported.values.items():
        days = plan.new.get(kpi_id, []) + [d for d, _, _ in plan.changed.get(kpi_id, [])]
        rows = [
            SeriesRow(
                day=day,
                value=values[day],
                unit=specs[kpi_id].unit,
                source=imported.source,
                fetched_at=fetched_at,
                trace_id=imported.trace_id,
            )
            for day in sorted(days)
        ]
        written[kpi_id] = series.upsert_rows(kpi_id, rows) if rows else series.rows(kpi_id)
    return written


def from_this_file(rows: dict[date, SeriesRow], imported: ImportFile, kpi_id: str) -> list[date]:
    """The file's days whose stored row came from this very file (by its hash)."""
    values = imported.values.get(kpi_id, {})
    return sorted(
        day
        for day in values
        if (row := rows.get(day)) is not None
        and row.trace_id == imported.trace_id
        and row.value == values[day]
    )


def recorded_days(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: Iterable[date], sha256: str
) -> set[date]:
    """Days whose latest materialisation in the instance is this file's import."""
    wanted = sorted(d.isoformat() for d in days)
    if not wanted:
        return set()
    latest: dict[str, str | None] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=wanted),
            limit=1000,
            cursor=cursor,
        )
        for record in result.records:
            partition = record.partition_key
            if partition is None or partition in latest:
                continue
            materialization = record.asset_materialization
            entry = materialization.metadata.get(SHA_METADATA) if materialization else None
            latest[partition] = getattr(entry, "value", entry)
        if not result.has_more:
            break
        cursor = result.cursor
    return {date.fromisoformat(p) for p, sha in latest.items() if sha == sha256}


@dataclass(frozen=True)
class PreparedRun:
    """What an import run materialises: per KPI, the days still to record, and its series."""

    imported: ImportFile
    pending: dict[str, list[date]]
    rows: dict[str, dict[date, SeriesRow]]
    stored: int


def prepare_run(
    file: str,
    *,
    overwrite: bool,
    kpis: Sequence[KpiSpec],
    selected: Sequence[KpiSpec],
    days: Sequence[date],
    series: KpiSeriesStore,
    instance: dg.DagsterInstance,
    partitions: dg.DailyPartitionsDefinition,
) -> PreparedRun:
    """Validate and store an import inside a run, and find the days not yet recorded.

    Only the selected KPIs' columns are stored; a `date,value` file goes to the one KPI
    selected.

    Raises:
        dg.Failure: The file does not validate, or it would change stored days without
            `overwrite` (nothing is stored in either case).
    """
    first, last = partition_bounds(partitions)
    kpi_id = selected[0].id if len(selected) == 1 else None
    try:
        imported = read_import(file, kpis=kpis, kpi_id=kpi_id, first=first, last=last)
    except ImportValidationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    wanted = {k.id for k in selected}
    imported = replace(imported, values={k: v for k, v in imported.values.items() if k in wanted})
    kpis = selected
    plan = plan_store(series, imported)
    if plan.changed and not overwrite:
        raise dg.Failure(
            description=(
                f"{imported.name}: {plan.changed_count} day(s) are stored with other values; "
                "nothing stored. Set overwrite to replace them:\n" + "\n".join(plan.conflicts())
            ),
            allow_retries=False,
        )
    rows = store_import(series, imported, plan, {k.id: k for k in kpis}, overwrite=overwrite)
    in_run = set(days)
    pending: dict[str, list[date]] = {}
    for kpi in kpis:
        if kpi.id not in imported.values:
            continue
        mine = [d for d in from_this_file(rows[kpi.id], imported, kpi.id) if d in in_run]
        done = recorded_days(instance, dg.AssetKey(kpi.asset_path), mine, imported.sha256)
        pending[kpi.id] = [d for d in mine if d not in done]
    return PreparedRun(imported, pending, rows, plan.new_count + plan.changed_count)


def range_result(
    asset_key: dg.AssetKey, prepared: PreparedRun, spec: KpiSpec
) -> dg.MaterializeResult:
    """One output for a range run's every day: the same source, file and hash for each day.

    The day's value is in the series (and the export), not repeated in the metadata.
    """
    imported = prepared.imported
    days = prepared.pending[spec.id]
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata={
            "unit": spec.unit,
            "source": imported.source,
            "trace_id": imported.trace_id,
            SHA_METADATA: imported.sha256,
            "import_first_day": days[0].isoformat(),
            "import_last_day": days[-1].isoformat(),
        },
    )
