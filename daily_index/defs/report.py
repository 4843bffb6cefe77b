"""`report/pdf`: the daily report as a PDF.

Cover, summary, KPI table, charts, notes and data quality, with a disclaimer on page 1
when KPIs are missing.
"""

import base64
import shutil
import subprocess
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from daily_index.defs.analysis import ANALYSIS_KEY
from daily_index.defs.charts import CHARTS_KEY, stored_charts, stored_day_table
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import ReportSettingsResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index.report.evidence import read_evidence

PDF_KEY = dg.AssetKey(["report", "pdf"])


def page_one_png(pdf_path: Path, out_dir: Path, dpi: int = 50) -> Path | None:
    """Page 1 as PNG via pdftoppm (poppler-utils), or None when it is not installed."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        return None
    target = out_dir / "page1"
    # A fixed argument list (no shell) naming our own files.
    subprocess.run(  # noqa: S603
        [
            pdftoppm,
            "-png",
            "-r",
            str(dpi),
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf_path),
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target.with_suffix(".png")


def build_pdf_asset(*, kpis: list[KpiSpec], registry_version: int) -> dg.AssetsDefinition:
    @dg.asset(
        key=PDF_KEY,
        group_name="report",
        partitions_def=daily_partitions,
        ins={"analysis": dg.AssetIn(key=ANALYSIS_KEY)},
        deps=[CHARTS_KEY],
        io_manager_key="artifact_io_manager",
        kinds={"weasyprint", "pdf"},
    )
    def pdf(
        context: dg.AssetExecutionContext,
        analysis: dict,
        storage: StorageResource,
        report_settings: ReportSettingsResource,
    ) -> dg.Output[bytes]:
        """The day's report as an A4 PDF.

        Cover with headline, executive summary, KPI table with changes and threshold flags,
        the charts, per-KPI notes and a data-quality section. A report with missing KPIs
        is partial and says so on page 1. Stored as `reports/<date>.pdf`.
        """
        # Imported here: weasyprint is slow to import and only this step needs it.
        from daily_index.report.pdf import render_pdf

        day = date.fromisoformat(context.partition_key)
        store = storage.get_store()
        table = stored_day_table(store, kpis, day)
        partial = not table.complete
        reported = sum(1 for row in table.rows if row.value is not None)
        with tempfile.TemporaryDirectory(prefix="pdf-") as tmp:
            workdir = Path(tmp)
            charts = stored_charts(store, day, workdir)
            info = render_pdf(
                table=table,
                analysis=analysis,
                charts=charts,
                out_path=workdir / f"{day}.pdf",
                partial=partial,
                generated_at=datetime.now(UTC),
                generation={
                    "registry version": str(registry_version),
                    "KPIs": f"{reported}/{len(table.rows) - len(table.gaps)}"
                    + (f" ({len(table.gaps)} with no observation expected)" if table.gaps else ""),
                    "run": context.run.run_id[:8],
                    "storage": store.description,
                },
                demo=report_settings.demo,
                appendix=report_settings.appendix,
                evidence=read_evidence(store, day),
            )
            data = info.path.read_bytes()
            preview_png = page_one_png(info.path, workdir)
            preview = "(install poppler-utils for a page-1 preview)"
            if preview_png:
                encoded = base64.b64encode(preview_png.read_bytes()).decode()
                preview = f"![page 1](data:image/png;base64,{encoded})"
        if partial:
            context.log.warning(
                f"Partial report for {day}: {len(table.missing)} KPI(s) missing: "
                + ", ".join(row.kpi_id for row in table.missing[:20])
            )
        return dg.Output(
            data,
            metadata={
                "pages": info.pages,
                "bytes": len(data),
                "partial": partial,
                "missing_kpis": dg.MetadataValue.json([r.kpi_id for r in table.missing]),
                "expected_gaps": dg.MetadataValue.json([r.kpi_id for r in table.gaps]),
                "headline": analysis.get("headline", ""),
                "analyst": analysis.get("analyst_label", ""),
                "page_1": dg.MetadataValue.md(preview),
            },
        )

    return pdf
