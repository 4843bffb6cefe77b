"""The chart renderer: one PNG per KPI, gaps kept as gaps, overview sheets, formatting."""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from daily_index.report import charts as charts_module
from daily_index.report.charts import (
    CHART_DPI,
    CHART_SIZE_IN,
    SPARKLINES_PER_SHEET,
    daily_values,
    preview_markdown,
    render_charts,
)
from daily_index_tests.report.conftest import DAY, SAMPLE_KPIS, make_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_daily_values_reindexes_missing_days_to_nan_without_interpolating():
    table = make_table(gaps=(3, 4, 10))
    row = table.row("btc_price")
    start = DAY - timedelta(days=29)
    values = daily_values(row, start, DAY)
    assert len(values) == 30
    missing = {29 - i for i in np.flatnonzero(np.isnan(values))}
    assert missing == {3, 4, 10}
    assert values[-1] == pytest.approx(67_432.1)


def test_render_charts_writes_one_png_per_kpi_and_overview(tmp_path):
    table = make_table(empty=("dxy",), missing={"eth_price": "timeout"})
    progress: list[tuple[int, int]] = []
    chart_set = render_charts(
        table, tmp_path / "charts", on_progress=lambda d, t: progress.append((d, t))
    )
    assert set(chart_set) == {k[0] for k in SAMPLE_KPIS}
    expected = (round(CHART_SIZE_IN[0] * CHART_DPI), round(CHART_SIZE_IN[1] * CHART_DPI))
    for kpi_id, path in chart_set.items():
        assert path == tmp_path / "charts" / f"{kpi_id}.png"
        assert png_size(path) == expected
        assert path.stat().st_size < 60_000, "charts must stay small for the PDF"
    assert len(chart_set.overview) == 1
    assert png_size(chart_set.overview[0])[0] > 500
    assert progress[-1] == (len(SAMPLE_KPIS) + 1, len(SAMPLE_KPIS) + 1)
    assert [d for d, _ in progress] == list(range(1, len(progress) + 1))
    assert chart_set.window == (DAY - timedelta(days=89), DAY)


class _Recorder(charts_module._ChartPainter):
    """Records what is drawn, so the data handed to matplotlib can be checked."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, dict] = {}

    def paint(self, job):
        path = super().paint(job)
        self.seen[job.kpi_id] = {
            "type": job.chart_type,
            "line_y": np.asarray(self.line.get_ydata(), dtype=float),
            "temporary": [type(a).__name__ for a in self.temporary],
            "title": self.title.get_text(),
            "note": self.note.get_text() if self.note.get_visible() else "",
            "texts": [a.get_text() for a in self.temporary if hasattr(a, "get_text")],
            "dashed": [
                a
                for a in self.temporary
                if type(a).__name__ == "Line2D" and a.get_linestyle() not in ("-", "solid")
            ],
        }
        return path


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(charts_module, "_ChartPainter", lambda: recorder)
    table = make_table(gaps=(5, 6, 7, 20), empty=("dxy",))
    render_charts(table, tmp_path)
    return recorder.seen


@pytest.mark.parametrize("kpi_id", ["btc_price", "btc_dominance"])
def test_line_and_area_break_at_missing_days(recorded, kpi_id):
    y = recorded[kpi_id]["line_y"]
    assert len(y) == 90
    assert np.isnan(y[[-6, -7, -8, -21]]).all(), "missing days must stay NaN (a gap)"
    assert np.isnan(y).sum() == 4, "nothing else is missing, nothing is interpolated"


def test_a_business_day_series_runs_across_weekends_and_breaks_at_a_missing_weekday(recorded):
    days = [DAY - timedelta(days=i) for i in range(90)]
    weekdays = sum(1 for d in days if d.weekday() < 5)
    y = recorded["us10y"]["line_y"]
    assert len(y) == weekdays, "weekends are not plotted, so they are no gaps"
    assert np.isnan(y).sum() == 4, "the four missing weekdays stay gaps"


def test_area_chart_fills_and_bar_chart_draws_no_bar_on_missing_days(recorded):
    assert "FillBetweenPolyCollection" in recorded["btc_dominance"]["temporary"] or (
        "PolyCollection" in recorded["btc_dominance"]["temporary"]
    )
    bar = recorded["fear_greed"]
    assert bar["type"] == "bar"
    assert len(bar["line_y"]) == 0, "bars are not joined by a line"
    assert "PolyCollection" in bar["temporary"]


def test_bar_collection_has_one_bar_per_day_with_a_value(tmp_path, monkeypatch):
    captured = []
    painter = charts_module._ChartPainter()
    original = painter.ax.add_collection

    def spy(collection, **kwargs):
        captured.append(collection)
        return original(collection, **kwargs)

    monkeypatch.setattr(painter.ax, "add_collection", spy)
    monkeypatch.setattr(charts_module, "_ChartPainter", lambda: painter)
    table = make_table(kpis=[k for k in SAMPLE_KPIS if k[0] == "fear_greed"], gaps=(1, 2, 3))
    render_charts(table, tmp_path)
    polygons = sorted(len(c.get_paths()) for c in captured)
    # the three missing days are one shaded gap band and no bar
    assert polygons == [1, 90 - 3]


def test_thresholds_are_dashed_and_labelled(recorded):
    btc = recorded["btc_dominance"]  # high 65 / low 40 around a level of 54
    assert len(btc["dashed"]) == 2
    labels = " ".join(btc["texts"])
    assert "high 65%" in labels and "low 40%" in labels  # the shared formatter's text
    assert recorded["eth_dominance"]["dashed"] == []


def test_title_has_name_and_unit_and_latest_value_is_annotated(recorded):
    seen = recorded["btc_price"]
    assert seen["title"] == "Bitcoin price (USD)"
    assert "$67,432" in seen["texts"]


def test_kpi_without_data_says_no_data(recorded, tmp_path):
    assert recorded["dxy"]["note"] == "no data"
    assert png_size(tmp_path / "dxy.png") == png_size(tmp_path / "btc_price.png")


def test_overview_splits_into_sheets_of_forty(tmp_path):
    kpis = [
        (f"k{i:02d}", f"KPI {i}", "%", "line", {}, "macro", 10.0 + i)
        for i in range(SPARKLINES_PER_SHEET + 5)
    ]
    chart_set = render_charts(make_table(kpis=kpis), tmp_path, window_days=30)
    assert [p.name for p in chart_set.overview] == ["overview-1.png", "overview-2.png"]
    assert len(chart_set) == SPARKLINES_PER_SHEET + 5


def test_two_workers_render_the_same_set(tmp_path):
    kpis = [
        (f"k{i:02d}", f"KPI {i}", "USD", ("line", "bar", "area")[i % 3], {}, "macro", 100.0 + i)
        for i in range(12)
    ]
    table = make_table(kpis=kpis)
    progress: list[int] = []
    chart_set = render_charts(
        table, tmp_path, workers=2, on_progress=lambda done, _total: progress.append(done)
    )
    assert list(chart_set) == [k[0] for k in kpis]
    assert all(png_size(p)[0] == 640 for p in chart_set.values())
    assert progress[-1] == len(kpis) + 1


def test_preview_markdown_embeds_small_data_uris(tmp_path):
    chart_set = render_charts(make_table(), tmp_path)
    markdown = preview_markdown([*chart_set.overview, *chart_set.values()], limit=3)
    images = markdown.split("\n\n")
    assert len(images) == 3
    assert all(i.startswith("![") and "(data:image/png;base64," in i for i in images)
    assert all(len(i) < 100_000 for i in images)


MATH_NAME = r"Cost $\alpha$ <b>"
MATH_UNIT = r"$\beta$ per $"
BROKEN_MATH = r"Gas $\gwei^$ cost"
"""Not valid mathtext: it made matplotlib raise, and the whole report failed."""


def test_kpi_text_with_dollar_signs_is_drawn_as_written_never_as_mathtext(tmp_path, monkeypatch):
    kpis = [
        ("cost_alpha", MATH_NAME, MATH_UNIT, "line", {"high": 1e9, "low": 1.0}, "crypto", 50.0),
        ("cost_usd", "Spread $5$ to $6$", "USD", "bar", {}, "crypto", 70.0),
        ("gas", BROKEN_MATH, "$^$", "area", {}, "crypto", 30.0),
    ]
    recorder = _Recorder()
    monkeypatch.setattr(charts_module, "_ChartPainter", lambda: recorder)
    chart_set = render_charts(make_table(kpis=kpis), tmp_path)
    seen = recorder.seen["cost_alpha"]
    assert seen["title"] == f"{MATH_NAME} ({MATH_UNIT})"
    assert any(text.endswith(MATH_UNIT) for text in seen["texts"])
    assert recorder.seen["cost_usd"]["title"] == "Spread $5$ to $6$ (USD)"
    assert recorder.seen["gas"]["title"] == f"{BROKEN_MATH} ($^$)"
    for path in chart_set.paths:  # the PNGs and the overview sheet were all written
        assert path.stat().st_size > 1000


def test_mathtext_kpi_renders_in_the_pdf(tmp_path):
    from daily_index_tests.report.test_pdf import render

    kpis = [
        ("cost_alpha", MATH_NAME, MATH_UNIT, "line", {}, "crypto", 50.0),
        ("gas", BROKEN_MATH, "$^$", "line", {}, "crypto", 30.0),
        ("btc_price", "Bitcoin price", "USD", "line", {}, "crypto_prices", 67432.0),
    ]
    info, pages = render(tmp_path, make_table(kpis=kpis))
    text = " ".join(pages)
    assert info.path.stat().st_size > 0
    assert "Cost $\\alpha$ <b>" in text and BROKEN_MATH in text
