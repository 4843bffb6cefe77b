"""The PDF renderer: content, escaping of untrusted text, the URL fetcher's refusals."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pypdf
import pytest

from daily_index.formatting import format_change, format_value, format_zscore
from daily_index.report.analysis import rank_moves
from daily_index.report.charts import ChartSet, render_charts
from daily_index.report.model import DayTable
from daily_index.report.pdf import (
    TEMPLATES_DIR,
    ArtefactURLFetcher,
    PdfInfo,
    PdfRenderError,
    RefusedURLError,
    render_pdf,
    write_pdf,
)
from daily_index_tests.report.conftest import DAY, GENERATED_AT, make_analysis, make_table

GENERATION = {"registry_version": "1", "run": "abcd1234"}


def pdf_text(path: Path) -> list[str]:
    """Text per page, whitespace collapsed (weasyprint may split lines anywhere)."""
    reader = pypdf.PdfReader(path)
    return [re.sub(r"\s+", " ", page.extract_text() or "") for page in reader.pages]


def render(
    tmp_path: Path,
    table: DayTable,
    *,
    analysis: dict | None = None,
    partial: bool | None = None,
    demo: bool = False,
    name: str = "report.pdf",
) -> tuple[PdfInfo, list[str]]:
    charts = render_charts(table, tmp_path / "charts", window_days=60)
    info = render_pdf(
        table=table,
        analysis=analysis or make_analysis(),
        charts=charts,
        out_path=tmp_path / name,
        partial=(not table.complete) if partial is None else partial,
        generated_at=GENERATED_AT,
        generation=GENERATION,
        demo=demo,
    )
    return info, pdf_text(info.path)


@pytest.fixture(scope="module")
def complete_report(tmp_path_factory) -> tuple[PdfInfo, list[str]]:
    return render(tmp_path_factory.mktemp("complete"), make_table())


@pytest.fixture(scope="module")
def partial_report(tmp_path_factory) -> tuple[PdfInfo, list[str]]:
    table = make_table(
        missing={"eth_price": "n8n webhook <b>timed out</b> after 30 s", "dxy": None},
        empty=("stablecoin_supply",),
        names={"us10y": "Yield <script>alert(1)</script>"},
    )
    analysis = make_analysis(
        headline="Markets <b>calm</b> & quiet",
        kpi_notes=[
            {"kpi_id": "btc_price", "note": "Watch <script>alert('x')</script> closely"},
            {"kpi_id": "unknown_kpi", "note": "A note about <i>nothing</i>"},
        ],
    )
    return render(tmp_path_factory.mktemp("partial"), table, analysis=analysis, demo=True)


def test_pdf_info_matches_the_file(complete_report):
    info, pages = complete_report
    assert info.path.read_bytes()[:5] == b"%PDF-"
    assert info.bytes == info.path.stat().st_size
    assert info.pages == len(pages) == len(pypdf.PdfReader(info.path).pages)
    assert info.pages >= 5


def test_cover_has_date_and_headline(complete_report):
    _, pages = complete_report
    assert "Monday 30 June 2025" in pages[0]
    assert "Bitcoin holds above 67k as dominance edges higher" in pages[0]


def test_kpi_values_are_formatted_by_unit(complete_report):
    text = " ".join(complete_report[1])
    for expected in (
        "$67,432",
        "$3,412",
        "0.0512 BTC",
        "54.20%",
        "Fear & Greed index 72 ",
        "4.30%",
        "$160B",
    ):
        assert expected in text


def test_changes_read_in_each_kpis_unit(complete_report):
    text = " ".join(complete_report[1])
    table = text[text.index("KPIs on 2025-06-30") :]
    reference = make_table()
    for kpi_id, unit in (
        ("btc_price", "%"),
        ("btc_dominance", " pp"),
        ("us10y", " pp"),
        ("btc_funding", " bp"),
        ("fear_greed", " pt"),
    ):
        row = reference.row(kpi_id)
        shown = format_change(row.changes[1])
        assert shown.endswith((unit, unit + "s")), shown
        assert f"{row.spec.name} {format_value(row.value, row.spec.unit)} {shown}" in table


def test_biggest_moves_are_ranked_by_how_unusual_they_are(complete_report):
    cover = complete_report[1][0]
    assert "Most unusual moves, 1 day" in cover
    first, second = rank_moves(list(make_table().rows))[:2]
    assert abs(first.zscore) >= abs(second.zscore)
    assert cover.index(first.spec.name) < cover.index(second.spec.name)
    assert format_zscore(first.zscore) in cover


def test_an_expected_gap_shows_its_reason_and_last_observation_and_is_not_missing(tmp_path):
    table = make_table(
        missing={"eth_price": "HTTP 503"},
        gap={"us10y": "no observation expected: weekend (sunday; a business-day series)"},
    )
    assert [r.kpi_id for r in table.gaps] == ["us10y"]
    _, pages = render(tmp_path, table)
    text = " ".join(pages)
    last = table.row("us10y").as_of
    assert "1 of 9 KPIs is missing" in pages[0]
    assert "no observation expected: weekend (sunday; a business-day series)" in text
    assert f"{format_value(last.value, '%')} as of {last.day.isoformat()}" in text
    quality = text[text.index("Data quality") :]
    problems = quality[: quality.index("No observation expected")]
    assert "Ether price" in problems and "US 10-year yield" not in problems
    assert "1 of 9 KPIs have no value" in quality


def test_a_failed_refetch_over_a_stored_value_is_listed_as_failed(tmp_path):
    table = make_table(refetch_failed={"btc_price": "HTTP 429 from CoinGecko"})
    assert table.complete and [r.kpi_id for r in table.problems] == ["btc_price"]
    _, pages = render(tmp_path, table)
    text = " ".join(pages)
    quality = text[text.index("Data quality") :]
    assert "Bitcoin price" in quality and "HTTP 429 from CoinGecko" in quality
    assert "kept from an earlier fetch" in quality
    assert "Partial report" not in text


def test_complete_report_has_no_disclaimer_and_no_demo_banner(complete_report):
    _, pages = complete_report
    assert "Partial report" not in " ".join(pages)
    assert "DEMO DATA" not in " ".join(pages)
    assert "All 10 KPIs reported" in " ".join(pages)


def test_footer_on_every_page(complete_report):
    _, pages = complete_report
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert "2025-06-30 12:05 UTC" in text
        assert "Rule-based analyst (no LLM configured)" in text
        assert "registry v1" in text


def test_partial_report_has_disclaimer_on_page_one_listing_the_missing(partial_report):
    _, pages = partial_report
    assert "Partial report." in pages[0]
    assert "3 of 10 KPIs are missing" in pages[0]
    for name in ("Ether price", "US dollar index", "Stablecoin supply"):
        assert name in pages[0]


def test_missing_value_shows_as_missing_never_zero(partial_report):
    text = " ".join(partial_report[1])
    row = re.search(r"Ether price (\S+)", text[text.index("KPIs on 2025-06-30") :])
    assert row is not None and row.group(1) == "missing"
    assert "$0" not in text


def test_data_quality_lists_reasons_and_sources(partial_report):
    quality = " ".join(partial_report[1])
    quality = quality[quality.index("Data quality") :]
    assert "failed" in quality.lower() and "eth_price" in quality
    assert "no value was received for this day" in quality
    assert "Test source" in quality and "n8n" in quality


def test_demo_banner_on_every_page(partial_report):
    _, pages = partial_report
    assert all("DEMO DATA" in page for page in pages)


def test_untrusted_text_is_escaped_and_shown_literally(partial_report):
    info, pages = partial_report
    text = " ".join(pages)
    assert "Markets <b>calm</b> & quiet" in text
    assert "Watch <script>alert('x')</script> closely" in text
    assert "Yield <script>alert(1)</script>" in text
    assert "n8n webhook <b>timed out</b> after 30 s" in text
    assert "A note about <i>nothing</i>" in text


def test_notes_and_analysis_sections_present(complete_report):
    text = " ".join(complete_report[1])
    for expected in (
        "Executive summary",
        "Crypto markets were calm.",
        "Thin weekend liquidity.",
        "Range-bound trading",
        "Notes by KPI",
        "Sentiment stays in greed territory.",
        "At a glance",
        "Charts",
    ):
        assert expected in text


def test_page_one_renders_to_a_non_blank_image(complete_report, tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftoppm) not installed")
    info, _ = complete_report
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "60",
            "-f",
            "1",
            "-l",
            "1",
            "-png",
            str(info.path),
            str(tmp_path / "page"),
        ],
        check=True,
        timeout=60,
    )
    [png] = list(tmp_path.glob("page*.png"))
    from PIL import Image

    with Image.open(png) as image:
        assert abs(image.width - 496) <= 2 and abs(image.height - 702) <= 2  # A4 at 60 dpi
        gray = image.convert("L")
        histogram = gray.histogram()
    dark = sum(histogram[:128])
    assert dark > 2000, "page 1 looks blank"


# ---------------------------------------------------------------- the URL fetcher


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    handler = type("Handler", (_CountingHandler,), {"hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()


def test_img_tag_in_untrusted_text_is_never_fetched(tmp_path, http_server):
    base, hits = http_server
    img = f'<img src="{base}/x.png"><link rel="stylesheet" href="{base}/s.css">'
    analysis = make_analysis(
        summary=img,
        headline=img,
        kpi_notes=[{"kpi_id": "btc_price", "note": img}],
    )
    table = make_table(
        names={"btc_price": f'BTC <img src="{base}/name.png">'}, missing={"eth_price": img}
    )
    _, pages = render(tmp_path, table, analysis=analysis)
    assert hits == []
    assert f'<img src="{base}/x.png">' in " ".join(pages)


def test_fetcher_refuses_network_urls_even_in_markup(tmp_path, http_server):
    base, hits = http_server
    html = f'<html><body><p>x</p><img src="{base}/x.png"></body></html>'
    with pytest.raises(PdfRenderError, match="only the report's own files"):
        write_pdf(html, tmp_path / "out.pdf", allowed_dirs=[tmp_path])
    assert hits == []
    assert not (tmp_path / "out.pdf").exists()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file://otherhost/etc/passwd",
        "http://127.0.0.1:9/x.png",
        "https://example.com/x.png",
        "ftp://example.com/x",
    ],
)
def test_fetcher_refuses_outside_artefacts(tmp_path, url):
    fetcher = ArtefactURLFetcher([tmp_path])
    with pytest.raises(RefusedURLError, match="refused to load"):
        fetcher.fetch(url)
    assert fetcher.refused == [url]


def test_fetcher_refuses_path_escapes_from_allowed_dir(tmp_path):
    allowed = tmp_path / "charts"
    allowed.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    fetcher = ArtefactURLFetcher([allowed])
    with pytest.raises(RefusedURLError, match="outside the allowed folders"):
        fetcher.fetch(allowed.as_uri() + "/../secret.txt")
    link = allowed / "link.png"
    link.symlink_to(secret)
    with pytest.raises(RefusedURLError):
        fetcher.fetch(link.as_uri())


def test_fetcher_serves_allowed_files(tmp_path):
    chart = tmp_path / "c.png"
    chart.write_bytes(b"\x89PNG fake")
    fetcher = ArtefactURLFetcher([tmp_path])
    response = fetcher.fetch(chart.as_uri())
    try:
        assert response.read() == b"\x89PNG fake"
    finally:
        response.close()
    css = ArtefactURLFetcher([TEMPLATES_DIR]).fetch((TEMPLATES_DIR / "report.css").as_uri())
    css.close()


def test_passwd_in_markup_is_refused_at_render(tmp_path):
    html = '<html><body><img src="file:///etc/passwd"></body></html>'
    with pytest.raises(PdfRenderError, match="/etc/passwd"):
        write_pdf(html, tmp_path / "out.pdf", allowed_dirs=[tmp_path])


def test_chart_set_outside_its_folder_is_refused(tmp_path):
    table = make_table(kpis=[("btc_price", "Bitcoin price", "USD", "line", {}, "m", 1.0)])
    real = render_charts(table, tmp_path / "charts")
    moved = ChartSet(
        charts=dict(real.charts),
        overview=real.overview,
        out_dir=tmp_path / "elsewhere",
        window=real.window,
    )
    with pytest.raises(PdfRenderError, match="outside the allowed folders"):
        render_pdf(
            table=table,
            analysis=make_analysis(),
            charts=moved,
            out_path=tmp_path / "r.pdf",
            partial=False,
            generated_at=GENERATED_AT,
            generation=GENERATION,
        )


def test_data_quality_lists_failed_check_verdicts_per_kpi(tmp_path):
    table = make_table(stale=("btc_price",))
    [flagged] = table.flagged
    assert flagged.kpi_id == "btc_price"
    [finding] = flagged.check_findings
    assert finding.rule == "stale" and finding.severity == "ERROR"
    _, pages = render(tmp_path, table)
    text = " ".join(pages)
    checks = text[text.index("Data checks") :]
    assert "1 of 10 KPIs with a value failed a data-quality rule" in checks
    assert "Bitcoin price" in checks and "stale error" in checks.lower()
    assert " ".join(finding.detail.split()) in checks


def test_a_clean_table_says_every_kpi_passed_the_checks(complete_report):
    text = " ".join(complete_report[1])
    assert not make_table().flagged
    assert "All 10 KPIs with a value passed the data-quality rules" in text


def _many_kpis(count: int) -> list[tuple[str, str, str, str, dict[str, float], str, float]]:
    rows = []
    for n in range(count):
        # kpi_009's high threshold sits below its level: it is crossed today.
        limits = {"high": 50.0} if n == 9 else {}
        rows.append((f"kpi_{n:03d}", f"KPI {n}", "USD", "line", limits, "crypto_prices", 100.0))
    return rows


def _figures(table, tmp_path, *, appendix: bool) -> int:
    from daily_index.report.charts import ChartSet
    from daily_index.report.pdf import build_context, render_html

    charts = ChartSet(charts={}, overview=(), out_dir=tmp_path)
    html = render_html(
        build_context(
            table=table,
            analysis=make_analysis(),
            charts=charts,
            partial=False,
            generated_at=GENERATED_AT,
            generation=GENERATION,
            demo=False,
            appendix=appendix,
        )
    )
    return html.count('<figure class="chart">')


def test_the_brief_charts_what_moved_crossed_or_failed_and_the_appendix_everything(tmp_path):
    from daily_index.report.model import FEATURED_MAX, featured

    table = make_table(kpis=_many_kpis(40), missing={"kpi_003": "HTTP 500 from upstream"})
    chosen = {row.kpi_id for row in featured(table)}
    assert {"kpi_003", "kpi_009"} <= chosen  # the failed fetch and the crossed threshold
    assert len(chosen) < 40 and len(chosen) <= FEATURED_MAX
    unusual = {r.kpi_id for r in table.rows if r.zscore is not None and abs(r.zscore) >= 2}
    assert unusual <= chosen
    assert _figures(table, tmp_path, appendix=False) == len(chosen)
    assert _figures(table, tmp_path, appendix=True) == len(chosen) + 40


def test_a_small_registry_keeps_every_chart(tmp_path, table):
    assert _figures(table, tmp_path, appendix=False) == len(table.rows)
    assert _figures(table, tmp_path, appendix=True) == len(table.rows)  # no appendix needed


def test_charts_drawn_only_for_the_brief_and_every_kpi_on_the_sheets(tmp_path):
    from PIL import Image

    from daily_index.report.model import featured

    table = make_table(kpis=_many_kpis(30), missing={"kpi_003": "HTTP 500 from upstream"})
    chosen = [row.kpi_id for row in featured(table)]
    charts = render_charts(table, tmp_path / "charts", window_days=60, only=chosen)
    assert sorted(charts.charts) == sorted(chosen)
    assert len(charts.overview) >= 1  # the sparkline sheets still show all 30
    with Image.open(charts.overview[0]) as sheet:
        assert sheet.mode == "P" and len(sheet.getcolors(256) or []) <= 64


def test_every_kpi_row_has_a_vector_sparkline_that_survives_the_stored_table(tmp_path):
    import base64

    from daily_index.report.model import day_table_from_dict, day_table_to_dict
    from daily_index.report.pdf import sparkline

    table = make_table()
    stored = day_table_from_dict(day_table_to_dict(table), [r.spec for r in table.rows])
    start, end = DAY - timedelta(days=table.window_days - 1), DAY
    for row in stored.rows:
        uri = sparkline(row, start, end)
        assert uri is not None and uri.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(uri.split(",", 1)[1]).decode()
        assert "<polyline" in svg and row.spec.name not in svg  # numbers only, never text
