"""`report/analysis`: the day's written analysis, by the LLM or the rule-based analyst."""

from datetime import date

import dagster as dg

from daily_index.defs.charts import CHARTS_KEY, stored_day_table
from daily_index.defs.kpis import kpi_key
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import AnalystResource, StorageResource
from daily_index.registry import KpiSpec
from daily_index.report.analysis import analyse
from daily_index.report.evidence import read_evidence

ANALYSIS_KEY = dg.AssetKey(["report", "analysis"])
EVIDENCE_KEY = dg.AssetKey(["report", "evidence"])


def build_analysis_asset(*, kpis: list[KpiSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        key=ANALYSIS_KEY,
        group_name="report",
        partitions_def=daily_partitions,
        # The day table comes from report/charts: one table per report run.
        deps=[CHARTS_KEY, EVIDENCE_KEY, *(kpi_key(k.id) for k in kpis)],
        io_manager_key="artifact_io_manager",
        kinds={"openai", "json"},
    )
    def analysis(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        analyst: AnalystResource,
    ) -> dg.Output[dict]:
        """The day's analysis: headline, summary, a note per KPI, risks and outlook.

        Written by the configured LLM from the day's KPI table (values; 1, 7 and 30-day
        changes in each KPI's unit; how unusual each move is; thresholds crossed; missing
        KPIs and expected gaps; failed data checks). Without an LLM key, or when the LLM fails or
        answers something invalid, a deterministic rule-based analyst writes it, and the
        report says which one did. Stored as `analysis/<date>.json`.
        """
        day = date.fromisoformat(context.partition_key)
        store = storage.get_store()
        table = stored_day_table(store, kpis, day)
        # Related headlines and analog days (report/evidence), handed over as data.
        result = analyse(table, analyst.llm_settings(), evidence=read_evidence(store, day))
        if result.fallback_reason:
            context.log.warning(
                f"LLM analysis failed, rule-based analyst used: {result.fallback_reason}"
            )
        return dg.Output(
            result.to_dict(),
            metadata={
                "analyst": result.analyst_label,
                "model": result.model or "none",
                "prompt_tokens": result.prompt_tokens or 0,
                "completion_tokens": result.completion_tokens or 0,
                "latency_ms": result.latency_ms or 0,
                "headline": result.analysis.headline,
                "kpis_missing": len(table.missing),
            },
        )

    return analysis
