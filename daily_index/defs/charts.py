"""`report/charts`: one PNG per active KPI over the chart window, plus overview sheets."""

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from daily_index import progress
from daily_index.defs.kpis import kpi_key
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import ReportSettingsResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index.report.model import (
    DayTable,
    day_table_from_dict,
    day_table_to_dict,
    featured,
    load_day_table,
)
from daily_index.storage.objectstore import ObjectStore

if TYPE_CHECKING:
    from daily_index.report.charts import ChartSet

CHARTS_KEY = dg.AssetKey(["report", "charts"])


def charts_prefix(day: date) -> str:
    return f"charts/{day.isoformat()}"


def day_table_key(day: date) -> str:
    return f"{charts_prefix(day)}/table.json"


def stored_day_table(store: ObjectStore, kpis: list[KpiSpec], day: date) -> DayTable:
    """The day table `report/charts` built for this day: the one table of a report run.

    Charts, analysis and PDF read the same table, so a KPI landing mid-run cannot make
    the PDF disagree with its own charts, and the series are read once per run, not three
    times.
    """
    raw = store.read_bytes(day_table_key(day))
    if raw is None:
        raise dg.Failure(
            f"no day table for {day} in {store.description}; materialise report/charts first"
        )
    try:
        return day_table_from_dict(json.loads(raw), kpis)
    except KeyError as exc:
        raise dg.Failure(
            f"the day table for {day} was built for other KPIs (no {exc}); "
            "materialise report/charts again"
        ) from None


def stored_charts(store: ObjectStore, day: date, workdir: Path) -> "ChartSet":
    """The day's charts as local files (downloaded when the store is remote)."""
    from daily_index.report.charts import ChartSet

    prefix = charts_prefix(day)
    manifest_raw = store.read_bytes(f"{prefix}/index.json")
    if manifest_raw is None:
        raise dg.Failure(f"no charts for {day} in {store.description}; materialise report/charts")
    manifest = json.loads(manifest_raw)
    local_root = store.local_path(prefix)
    if local_root is None:
        local_root = workdir / "charts"
        local_root.mkdir(parents=True, exist_ok=True)
        for name in [*manifest["charts"].values(), *manifest["overview"]]:
            data = store.read_bytes(f"{prefix}/{name}")
            if data is not None:
                (local_root / name).write_bytes(data)
    return ChartSet(
        charts={k: local_root / v for k, v in manifest["charts"].items()},
        overview=tuple(local_root / name for name in manifest["overview"]),
        out_dir=local_root,
        window=(
            date.fromisoformat(manifest["window"][0]),
            date.fromisoformat(manifest["window"][1]),
        ),
    )


def build_charts_asset(*, kpis: list[KpiSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        key=CHARTS_KEY,
        group_name="report",
        partitions_def=daily_partitions,
        deps=[kpi_key(k.id) for k in kpis],
        kinds={"matplotlib", "png"},
    )
    def charts(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        report_settings: ReportSettingsResource,
    ) -> dg.MaterializeResult:
        """One chart per active KPI over the chart window (default 90 days).

        Alert thresholds are drawn; days without data are gaps, never interpolated. Stored as
        `charts/<date>/<kpi>.png` with overview sheets of all KPIs, and the day's KPI table
        they were drawn from (`charts/<date>/table.json`: values, changes in each KPI's unit,
        z-scores, gaps, quality verdicts), which the analysis and the PDF read.
        """
        # matplotlib is imported here, not when the code location loads: only this step
        # draws, and `dagster definitions validate` stays fast.
        from daily_index.report.charts import preview_markdown, render_charts

        day = date.fromisoformat(context.partition_key)
        store = storage.get_store()
        window = report_settings.chart_window_days
        table = load_day_table(kpis, store, day, window_days=window)
        with tempfile.TemporaryDirectory(prefix="charts-") as tmp:
            # The PDF charts what moved, crossed or failed (and everything with the appendix).
            only = None if report_settings.appendix else [r.kpi_id for r in featured(table)]
            chart_set = render_charts(
                table,
                Path(tmp),
                window_days=window,
                workers=report_settings.chart_workers,
                on_progress=lambda done, total: progress.emit("charts", done, total),
                only=only,
            )
            prefix = charts_prefix(day)
            store.put(
                day_table_key(day),
                json.dumps(day_table_to_dict(table), indent=1).encode(),
                content_type="application/json",
            )
            for path in chart_set.paths:
                store.put(f"{prefix}/{path.name}", path.read_bytes(), content_type="image/png")
            manifest = {
                "charts": {kpi_id: path.name for kpi_id, path in chart_set.charts.items()},
                "overview": [path.name for path in chart_set.overview],
                "window": [chart_set.window[0].isoformat(), chart_set.window[1].isoformat()],
            }
            # The manifest goes last: its presence means every chart is in place.
            store.put(
                f"{prefix}/index.json",
                json.dumps(manifest, indent=1).encode(),
                content_type="application/json",
            )
            preview = preview_markdown(
                [*chart_set.overview[:1], *list(chart_set.charts.values())[:2]]
            )
        missing = [row.kpi_id for row in table.missing]
        return dg.MaterializeResult(
            metadata={
                "charts": len(chart_set.charts),
                "overview_sheets": len(chart_set.overview),
                "window": f"{chart_set.window[0]} .. {chart_set.window[1]}",
                "kpis_without_value": dg.MetadataValue.json(missing),
                "stored_at": f"{prefix}/",
                "preview": dg.MetadataValue.md(preview or "(no preview)"),
            }
        )

    return charts
