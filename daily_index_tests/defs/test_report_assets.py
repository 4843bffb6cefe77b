"""The report assets through Dagster, against real local servers.

KPIs come from the replay server, the analysis from a local OpenAI-compatible server; the
PDF is read back and delivery goes to the outbox.
"""

import json
from datetime import timedelta

import dagster as dg
import pytest
from pypdf import PdfReader

from daily_index.cli import demo_environment
from daily_index.definitions import build_definitions
from daily_index.defs.delivery import DELIVERY_KEY
from daily_index.defs.report import PDF_KEY
from daily_index.replay import DEMO_DAY, Fault, ReplayServer
from daily_index_tests.report.openai_stub import OpenAIStub, completion

DAY = DEMO_DAY.isoformat()


@pytest.fixture(scope="module")
def replay():
    with ReplayServer() as server:
        yield server


@pytest.fixture
def llm():
    with OpenAIStub() as stub:
        yield stub


@pytest.fixture
def environ(replay, llm, tmp_path, monkeypatch):
    replay.reset()
    env = demo_environment(replay, tmp_path, today=DEMO_DAY)
    env |= {
        "DAILY_INDEX_FETCH_MAX_ATTEMPTS": "1",
        "DAILY_INDEX_LLM_BASE_URL": llm.base_url,
        "DAILY_INDEX_LLM_MODEL": "stub-model",
        "DAILY_INDEX_LLM_API_KEY": "sk-test-not-real",
        "DAILY_INDEX_LLM_TIMEOUT_S": "5",
        "DAILY_INDEX_CHART_WORKERS": "1",
    }
    # Secrets are read through dg.EnvVar at run time, i.e. from the process environment.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _materialise_kpis(defs, instance, *, history_days=8):
    job = defs.resolve_job_def("daily_kpis_job")
    first, last = DEMO_DAY - timedelta(days=history_days), DEMO_DAY - timedelta(days=1)
    job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    return job.execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)


def _metadata(result, key):
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == key:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise AssertionError(f"{key} not materialised")


def _analysis(headline: str, note: str) -> str:
    return json.dumps(
        {
            "headline": headline,
            "summary": "Bitcoin held its level while sentiment stayed fearful.",
            "kpi_notes": [{"kpi_id": "btc_price", "note": note}],
            "risks": ["Funding rates are falling."],
            "outlook": "Cautious.",
        }
    )


def test_llm_analysis_reaches_the_pdf_escaped_and_delivery_happens_once(environ, llm, tmp_path):
    llm.script(completion(_analysis("<b>BTC</b> steady near 97k", "<script>x()</script> held")))
    defs = build_definitions(environ=environ)
    instance = dg.DagsterInstance.ephemeral()
    assert _materialise_kpis(defs, instance).success
    report = defs.resolve_job_def("daily_report_job")
    result = report.execute_in_process(partition_key=DAY, instance=instance)
    pdf_meta = _metadata(result, PDF_KEY)
    assert pdf_meta["partial"] is False and pdf_meta["pages"] >= 5
    assert pdf_meta["analyst"].startswith("LLM")
    text = "\n".join(
        p.extract_text() for p in PdfReader(tmp_path / "store" / "reports" / f"{DAY}.pdf").pages
    )
    assert "<b>BTC</b> steady near 97k" in text  # shown literally, not as markup
    assert "<script>x()</script> held" in text
    stored = json.loads((tmp_path / "store" / "analysis" / f"{DAY}.json").read_text())
    assert stored["analyst"] == "llm" and stored["prompt_tokens"] == 120
    assert llm.requests[0].headers["authorization"] == "Bearer sk-test-not-real"
    assert _metadata(result, DELIVERY_KEY)["sent"] == 1

    again = report.execute_in_process(partition_key=DAY, instance=instance)
    delivered = _metadata(again, DELIVERY_KEY)
    assert (delivered["sent"], delivered["already_sent"]) == (0, 1)
    assert len(list((tmp_path / "outbox").rglob("*.pdf"))) == 1


def test_a_missing_kpi_makes_a_partial_report_with_its_reason(environ, replay, llm, tmp_path):
    llm.script(completion("this is not JSON at all"))
    defs = build_definitions(environ=environ)
    instance = dg.DagsterInstance.ephemeral()
    replay.inject("/alternative_me", *[Fault(status=503, body="down")] * 2)
    assert not _materialise_kpis(defs, instance, history_days=1).success
    result = defs.resolve_job_def("daily_report_job").execute_in_process(
        partition_key=DAY, instance=instance
    )
    pdf_meta = _metadata(result, PDF_KEY)
    assert pdf_meta["partial"] is True and pdf_meta["missing_kpis"] == ["fear_greed"]
    assert "Rule-based" in pdf_meta["analyst"]  # the invalid LLM answer never reached the PDF
    pages = PdfReader(tmp_path / "store" / "reports" / f"{DAY}.pdf").pages
    cover = pages[0].extract_text()
    assert "partial" in cover.lower() and "Fear & Greed" in cover
    full = "\n".join(p.extract_text() for p in pages)
    assert "HTTP 503" in full
    assert "this is not JSON" not in full
    message = json.loads(next((tmp_path / "outbox").rglob("*.json")).read_text())
    assert "PARTIAL" in json.dumps(message)
