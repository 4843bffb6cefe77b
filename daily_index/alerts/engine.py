"""KPI alerts from stored series: which (KPI, day) pairs to look at, and the notices to send.

Shared by the sensor and `daily-index alerts check`: both read each KPI's series once, run
`rules.evaluate_day` for the days in question and render the same notice text.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date

import pyarrow.parquet as pq

from daily_index.alerts.ledger import Notice
from daily_index.alerts.rules import Alert, Point, evaluate_day, points_from
from daily_index.registry import KpiSpec
from daily_index.storage.series import KpiSeriesStore, series_key


def asset_link(ui_base_url: str, kpi_id: str) -> str:
    return f"{ui_base_url.rstrip('/')}/assets/kpi/{kpi_id}"


def run_link(ui_base_url: str, run_id: str) -> str:
    return f"{ui_base_url.rstrip('/')}/runs/{run_id}"


def read_points(series: KpiSeriesStore, kpi_id: str, end: date | None = None) -> list[Point]:
    """A KPI's observations (day, value) from its stored series, up to `end`.

    Reads the two columns straight into Python: `KpiSeriesStore.read` builds full rows and a
    DataFrame, 4 ms per KPI here (0.84 s of a 200-KPI tick); this is under 1 ms.
    """
    data = series.store.read_bytes(series_key(kpi_id))
    if data is None:
        return []
    table = pq.ParquetFile(io.BytesIO(data)).read(columns=["date", "value"], use_threads=False)
    rows = zip(table.column("date").to_pylist(), table.column("value").to_pylist(), strict=True)
    return points_from((d, v) for d, v in rows if end is None or d <= end)


def evaluate(
    kpis: Sequence[KpiSpec],
    series: KpiSeriesStore,
    *,
    landed: Mapping[str, Iterable[date]],
    missing: Mapping[str, Iterable[date]] | None = None,
) -> list[Alert]:
    """Alerts for the KPI days that landed and for those missing at their deadline.

    Args:
        kpis: The KPIs (with their rules).
        series: Where the values are; each KPI's series is read once.
        landed: KPI id -> days that have a value to judge (value rules).
        missing: KPI id -> days with no value when the report deadline has passed (no_data).

    Returns:
        Every alert that fires, by KPI then day.
    """
    missing = missing or {}
    alerts: list[Alert] = []
    for kpi in kpis:
        have = set(landed.get(kpi.id, ()))
        lack = set(missing.get(kpi.id, ())) - have
        if not kpi.alerts or not (have or lack):
            continue
        points = read_points(series, kpi.id)
        for day in sorted(have):
            alerts.extend(evaluate_day(kpi, day, points, deadline_passed=False))
        for day in sorted(lack):
            # No materialisation by the deadline: only no_data speaks, whatever the series
            # holds for the day (a value without a materialisation is not a landed day).
            before = [p for p in points if p[0] < day]
            fired = evaluate_day(kpi, day, before, deadline_passed=True)
            alerts.extend(a for a in fired if a.kind == "no_data")
    return alerts


def notice_for(alert: Alert, *, ui_base_url: str) -> Notice:
    """The notice of a KPI alert: a one-line title and a short block for the digest."""
    if alert.value is None:
        facts = f"no value for {alert.day.isoformat()}"
        if alert.previous_day is not None:
            facts += f"; last value {alert.previous_text} on {alert.previous_day.isoformat()}"
    else:
        facts = f"value {alert.value_text}"
        if alert.previous is not None and alert.previous_day is not None:
            facts += f"; previous {alert.previous_text} ({alert.previous_day.isoformat()})"
        facts += f"; change {alert.change_text}"
    text = (
        f"{alert.kpi_name} ({alert.kpi_id}) on {alert.day.isoformat()}: {alert.detail}\n"
        f"{facts}; rule {alert.rule}\n"
        f"{asset_link(ui_base_url, alert.kpi_id)}"
    )
    return Notice(
        key=alert.key,
        title=f"{alert.kpi_name} {alert.detail} ({alert.day.isoformat()})",
        text=text,
        kpi_id=alert.kpi_id,
        day=alert.day,
        rule=alert.rule,
        kind=alert.kind,
        cooldown_days=alert.cooldown_days,
    )


def evaluate_stored(
    kpis: Sequence[KpiSpec],
    series: KpiSeriesStore,
    *,
    day: date,
    deadline_passed: bool,
) -> list[Alert]:
    """Alerts of one day from the stored series alone (no Dagster instance).

    A KPI without a stored value for `day` is missing (no_data, once the deadline passed).
    """
    alerts: list[Alert] = []
    for kpi in kpis:
        if not kpi.alerts:
            continue
        points = read_points(series, kpi.id, end=day)
        alerts.extend(evaluate_day(kpi, day, points, deadline_passed=deadline_passed))
    return alerts
