"""The PDF report: the day's table, the analysis and the charts, laid out by weasyprint.

Pure rendering, no Dagster. Everything that reaches the page from outside (the analysis
text, KPI names, the sources' error reasons) goes through jinja2's autoescaping, so it
shows as text, never as markup. weasyprint only ever reads our own artefacts: the
fetcher below refuses the network and any file outside the chart and template folders.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import jinja2
import numpy as np
from weasyprint import CSS, HTML
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from daily_index.formatting import Change, brief, format_change, format_value, format_zscore
from daily_index.report.analysis import rank_moves
from daily_index.report.charts import ChartSet, chart_title, daily_values, window_bounds
from daily_index.report.evidence import Evidence
from daily_index.report.model import CHANGE_HORIZONS, DayTable, KpiRow, featured, unusual_moves

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
MISSING_LISTED_ON_COVER = 12
MOVERS_ON_COVER = 6


class RefusedURLError(ValueError):
    """weasyprint asked for a resource outside the report's own artefacts."""


class PdfRenderError(RuntimeError):
    """The report could not be rendered; the message says which resource or step failed."""


@dataclass(frozen=True)
class PdfInfo:
    path: Path
    pages: int
    bytes: int


class ArtefactURLFetcher(URLFetcher):
    """Serve `file:` URLs inside the allowed folders (and inline `data:`); refuse the rest.

    Every refusal raises `RefusedURLError` naming the URL, and is kept in `refused`.
    With `fail_on_errors` (the default here) weasyprint stops instead of leaving a hole.
    """

    def __init__(self, allowed_dirs: Iterable[Path], *, fail_on_errors: bool = True) -> None:
        super().__init__(allowed_protocols=["file", "data"], fail_on_errors=fail_on_errors)
        self.allowed_dirs = tuple(Path(d).resolve() for d in allowed_dirs)
        self.refused: list[str] = []

    def _refuse(self, url: str, why: str) -> RefusedURLError:
        self.refused.append(url)
        return RefusedURLError(f"refused to load {url!r} in the report: {why}")

    def fetch(self, url: str, headers: dict[str, str] | None = None):  # noqa: D102
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return super().fetch(url, headers)
        if scheme != "file":
            raise self._refuse(url, "only the report's own files are loaded, never the network")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise self._refuse(url, f"file URL on another host ({parts.netloc})")
        path = Path(url2pathname(parts.path)).resolve()
        if not any(path.is_relative_to(allowed) for allowed in self.allowed_dirs):
            folders = ", ".join(str(d) for d in self.allowed_dirs)
            raise self._refuse(url, f"outside the allowed folders ({folders})")
        return super().fetch(path.as_uri(), headers)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # analysis text, KPI names and error reasons are untrusted data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["paragraphs"] = _paragraphs
    return env


def _paragraphs(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split("\n\n") if p.strip()]


def _change_class(change: Change | None) -> str:
    # The formatter drops the sign of a change that rounds to zero.
    if change is None or format_change(change)[0] not in "+-":
        return "flat"
    return "up" if change.value > 0 else "down"


def _flag(row: KpiRow) -> dict[str, str] | None:
    if row.crossed is None:
        return None
    limits = row.spec.analysis_config.alert_thresholds
    level = limits.high if row.crossed == "high" else limits.low
    text = "above high" if row.crossed == "high" else "below low"
    return {
        "kind": row.crossed,
        "arrow": "▲" if row.crossed == "high" else "▼",
        "text": f"{text} {format_value(level, row.spec.unit)}",
    }


def _row_view(row: KpiRow, chart: Path | None) -> dict[str, Any]:
    spec = row.spec
    limits = spec.analysis_config.alert_thresholds
    as_of = row.as_of
    return {
        "id": spec.id,
        "name": spec.name,
        "title": chart_title(spec.name, spec.unit),
        "category": spec.metadata.category,
        "value": "no observation" if row.status == "gap" else format_value(row.value, spec.unit),
        "missing": row.value is None,
        "gap": row.status == "gap",
        "problem": row.is_problem,
        "earlier_fetch": row.earlier_fetch,
        "as_of": (
            {"value": format_value(as_of.value, spec.unit), "day": as_of.day.isoformat()}
            if as_of
            else None
        ),
        "status": row.status,
        "changes": [
            {
                "horizon": f"{h}d",
                "text": format_change(row.changes.get(h)),
                "cls": _change_class(row.changes.get(h)),
            }
            for h in CHANGE_HORIZONS
        ],
        "zscore": format_zscore(row.zscore),
        "flag": _flag(row),
        "thresholds": " / ".join(
            f"{label} {format_value(level, spec.unit)}"
            for label, level in (("low", limits.low), ("high", limits.high))
            if level is not None
        ),
        "reason": row.reason,
        "reason_brief": brief(row.reason),
        "findings": [
            {"rule": v.rule, "severity": v.severity, "detail": v.detail} for v in row.check_findings
        ],
        "source": spec.metadata.source,
        "source_kind": spec.source.kind,
        "chart": chart.resolve().as_uri() if chart is not None else None,
    }


def _by_category(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    categories: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        categories.setdefault(row["category"], []).append(row)
    return [
        {"key": key, "title": _category_title(key), "rows": members}
        for key, members in categories.items()
    ]


SPARK_WIDTH, SPARK_HEIGHT = 64.0, 14.0


def sparkline(row: KpiRow, start: date, end: date) -> str | None:
    """The KPI's window as a tiny vector line (an SVG data URI), or None without history.

    Vector, so it is sharp in print and costs a few hundred bytes where a raster sheet of
    200 sparklines cost 850 kB of the PDF. Only numbers reach the SVG, never KPI text.
    """
    values = daily_values(row, start, end)
    valid = ~np.isnan(values)
    if valid.sum() < 2:
        return None
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    span = (high - low) or 1.0
    step = SPARK_WIDTH / max(len(values) - 1, 1)
    runs, current = [], []
    for index, value in enumerate(values):
        if np.isnan(value):
            if current:
                runs.append(current)
            current = []
            continue
        y = SPARK_HEIGHT - 1 - (value - low) / span * (SPARK_HEIGHT - 2)
        current.append(f"{index * step:.1f},{y:.1f}")
    if current:
        runs.append(current)
    lines = "".join(
        f'<polyline points="{" ".join(run)}" fill="none" stroke="#2563eb" stroke-width="1"/>'
        for run in runs
        if len(run) > 1
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SPARK_WIDTH:g}" '
        f'height="{SPARK_HEIGHT:g}" viewBox="0 0 {SPARK_WIDTH:g} {SPARK_HEIGHT:g}">{lines}</svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def _category_title(category: str) -> str:
    return category.replace("_", " ").capitalize()


def _label(key: str) -> str:
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _registry_version(generation: dict[str, str]) -> str:
    for key, value in generation.items():
        if key.replace(" ", "_").lower() == "registry_version":
            return str(value)
    return "?"


def _format_generated(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _safe_link(link: Any) -> str | None:
    """An http(s) link for an <a href>, else None (a `javascript:` link is never a link)."""
    text = str(link or "").strip()
    return text if urlsplit(text).scheme.lower() in ("http", "https") else None


def evidence_context(evidence: Evidence | None, table: DayTable) -> dict[str, Any]:
    """The related headlines beside each unusual move, and the analog days, formatted."""
    names = {r.kpi_id: r for r in table.rows}
    moves = []
    for row in unusual_moves(table):
        items = (evidence.related.get(row.kpi_id) if evidence else None) or []
        moves.append(
            {
                "name": row.spec.name,
                "change": format_change(row.changes.get(1)),
                "cls": _change_class(row.changes.get(1)),
                "zscore": format_zscore(row.zscore),
                "headlines": [
                    {
                        "title": str(h.get("title") or ""),
                        "source": str(h.get("source") or ""),
                        "link": _safe_link(h.get("link")),
                        "published": str(h.get("published") or "")[:16].replace("T", " "),
                        "score": f"{float(h.get('score') or 0):.2f}",
                    }
                    for h in items
                ],
            }
        )
    analogs = evidence.analogs if evidence else None
    followed = []
    for f in analogs.followed if analogs else []:
        row = names.get(f.kpi_id)
        followed.append(
            {
                "name": row.spec.name if row else f.kpi_id,
                "horizon": f"{f.horizon} days",
                "median": format_change(Change(f.median, f.unit)),
                "range": f"{format_change(Change(f.low, f.unit))} to "
                f"{format_change(Change(f.high, f.unit))}",
                "count": f.count,
            }
        )
    return {
        "news_message": evidence.news_message if evidence else "news not collected for this day",
        "news_ok": bool(evidence and evidence.news_state == "ok"),
        "unusual": moves,
        "analog_days": [
            {"day": d.day.isoformat(), "similarity": f"{d.similarity:.2f}", "kpis": d.overlap}
            for d in (analogs.days if analogs else [])
        ],
        "analog_reason": (analogs.reason if analogs else None)
        or ("" if analogs else "analog days not computed for this day"),
        "analog_kpis": analogs.kpis_today if analogs else 0,
        "followed": followed,
    }


def build_context(
    *,
    table: DayTable,
    analysis: dict[str, Any],
    charts: ChartSet,
    partial: bool,
    generated_at: datetime,
    generation: dict[str, str],
    demo: bool,
    appendix: bool = False,
    evidence: Evidence | None = None,
) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays it out)."""
    rows = [_row_view(row, charts.get(row.kpi_id)) for row in table.rows]
    start, end = window_bounds(table.day, table.window_days)
    for view, row in zip(rows, table.rows, strict=True):
        view["spark"] = sparkline(row, start, end)
    by_id = {row["id"]: row for row in rows}
    shown = {r.kpi_id for r in featured(table)}
    featured_rows = [row for row in rows if row["id"] in shown]
    missing = [by_id[r.kpi_id] for r in table.missing]
    problems = [by_id[r.kpi_id] for r in table.problems]
    gaps = [by_id[r.kpi_id] for r in table.gaps]
    crossed = [row for row in rows if row["flag"]]
    movers = rank_moves(list(table.rows))[:MOVERS_ON_COVER]
    notes = []
    for note in analysis.get("kpi_notes") or []:
        kpi_id = str(note.get("kpi_id", ""))
        text = str(note.get("note", "")).strip()
        if text:
            known = by_id.get(kpi_id)
            notes.append(
                {
                    "name": known["name"] if known else kpi_id,
                    "known": bool(known),
                    "row": known,
                    "note": text,
                }
            )
    start, end = charts.window
    brief_only = len(featured_rows) < len(rows)
    return {
        "day": table.day,
        "day_long": table.day.strftime("%A %-d %B %Y"),
        "day_iso": table.day.isoformat(),
        "headline": str(analysis.get("headline") or "Daily Index report"),
        "summary": str(analysis.get("summary") or ""),
        "risks": [str(r) for r in analysis.get("risks") or [] if str(r).strip()],
        "outlook": str(analysis.get("outlook") or ""),
        "analyst": str(analysis.get("analyst") or ""),
        "analyst_label": str(analysis.get("analyst_label") or analysis.get("analyst") or ""),
        "rule_based": analysis.get("analyst") != "llm",
        "notes": notes,
        "rows": rows,
        "categories": _by_category(rows),
        "chart_categories": _by_category(featured_rows),
        "charts_brief": len(featured_rows) < len(rows),
        "appendix": _by_category(rows) if appendix and len(featured_rows) < len(rows) else [],
        "total": len(rows),
        "reported": sum(1 for r in table.rows if r.value is not None),
        "expected": len(rows) - len(gaps),
        "missing": missing,
        "missing_listed": missing[:MISSING_LISTED_ON_COVER],
        "problems": problems,
        "gaps": gaps,
        "flagged": [by_id[r.kpi_id] for r in table.flagged],
        "checked": sum(1 for r in table.rows if r.check is not None and r.value is not None),
        "crossed": crossed,
        "movers": [by_id[r.kpi_id] for r in movers],
        "movers_by_z": any(r.zscore is not None for r in movers),
        "partial": partial,
        "demo": demo,
        # A big registry's brief has the table's sparklines instead of the raster sheets.
        "overview": [] if brief_only else [p.resolve().as_uri() for p in charts.overview],
        "window": f"{start:%-d %b %Y} – {end:%-d %b %Y}" if start != start.min else "",
        "window_days": table.window_days,
        "generated_at": _format_generated(generated_at),
        "generation": [(_label(key), value) for key, value in generation.items()],
        "registry_version": _registry_version(generation),
        **evidence_context(evidence, table),
    }


def render_html(context: dict[str, Any]) -> str:
    return _environment().get_template(TEMPLATE).render(**context)


def write_pdf(html: str, out_path: Path, *, allowed_dirs: Iterable[Path]) -> PdfInfo:
    """Lay out `html` with our stylesheet and fetcher and write it atomically to `out_path`."""
    fetcher = ArtefactURLFetcher([TEMPLATES_DIR, *allowed_dirs])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        document = HTML(
            string=html, base_url=TEMPLATES_DIR.as_uri() + "/", url_fetcher=fetcher
        ).render(stylesheets=[CSS(filename=str(TEMPLATES_DIR / STYLESHEET), url_fetcher=fetcher)])
        handle, tmp_name = tempfile.mkstemp(prefix=".report-", suffix=".pdf", dir=out_path.parent)
        try:
            with os.fdopen(handle, "wb") as tmp:
                document.write_pdf(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, out_path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except FatalURLFetchingError as exc:
        cause = exc.__cause__ or exc
        raise PdfRenderError(f"PDF not written: {cause}") from cause
    return PdfInfo(path=out_path, pages=len(document.pages), bytes=out_path.stat().st_size)


def render_pdf(
    *,
    table: DayTable,
    analysis: dict[str, Any],
    charts: ChartSet,
    out_path: Path,
    partial: bool,
    generated_at: datetime,
    generation: dict[str, str],
    demo: bool = False,
    appendix: bool = False,
    evidence: Evidence | None = None,
) -> PdfInfo:
    """Render the day's report to `out_path` (written atomically).

    Args:
        table: The day's KPI table.
        analysis: headline, summary, kpi_notes [{kpi_id, note}], risks, outlook, analyst
            ("llm" or "rule-based") and analyst_label; all treated as untrusted text.
        charts: The day's charts; only files in its folder (and the templates) are read.
        out_path: Where the PDF goes.
        partial: Some KPIs are missing: page 1 carries the disclaimer listing them.
        generated_at: When the report was produced (shown in every page's footer).
        generation: Provenance shown at the end (registry_version also in the footer).
        demo: Synthetic data: a "DEMO DATA" banner on every page.
        appendix: Add the full chart of every KPI at the end (the brief shows only the
            charts of what moved, crossed a threshold or failed).
        evidence: Related headlines and analog days (`report/evidence`); their text is
            untrusted and escaped like the rest.

    Returns:
        The path, page count and size in bytes.
    """
    context = build_context(
        table=table,
        analysis=analysis,
        charts=charts,
        partial=partial,
        generated_at=generated_at,
        generation=generation,
        demo=demo,
        appendix=appendix,
        evidence=evidence,
    )
    return write_pdf(render_html(context), out_path, allowed_dirs=[charts.out_dir])
