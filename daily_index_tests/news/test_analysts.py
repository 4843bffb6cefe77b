"""Both analysts get the analog days (history, not a forecast) and the related headlines."""

import json
from datetime import date

from daily_index.analogs import AnalogDay, Analogs, Followed
from daily_index.report.analysis import DATA_END, DATA_START, build_messages, rule_based
from daily_index.report.evidence import Evidence
from daily_index_tests.report.conftest import DAY, make_table

ANALOGS = Analogs(
    day=DAY,
    kpis_today=10,
    days=[
        AnalogDay(date(2024, 3, 5), 0.91, 10),
        AnalogDay(date(2023, 11, 2), 0.84, 9),
    ],
    followed=[Followed("btc_price", 7, "pct", 2.5, -3.0, 6.25, 2)],
)
EVIDENCE = Evidence(
    day=DAY, news_state="skipped", news_message="no news sources configured", analogs=ANALOGS
)


def test_the_rule_based_analyst_cites_the_analog_days_as_history():
    table = make_table()
    summary = rule_based(table, EVIDENCE).summary
    assert "Past days that looked most like today (history, not a forecast)" in summary
    assert "2024-03-05 (0.91), 2023-11-02 (0.84)" in summary
    assert (
        "over the 7 days after them Bitcoin price moved a median +2.5% "
        "(range -3.0% to +6.2%, 2 days)." in summary
    )
    assert "Past days" not in rule_based(table).summary


def test_the_llm_data_block_holds_the_analogs_and_the_news_status():
    _, user = build_messages(make_table(), EVIDENCE)
    body = user["content"]
    block = json.loads(body[body.index(DATA_START) + len(DATA_START) : body.index(DATA_END)])
    assert block["news_status"] == "no news sources configured"
    assert block["related_headlines"] == []
    analogs = block["analog_days"]
    assert analogs["note"] == "history, not a forecast"
    assert [d["date"] for d in analogs["days"]] == ["2024-03-05", "2023-11-02"]
    assert analogs["what_followed"][0] == {
        "kpi_id": "btc_price",
        "horizon_days": 7,
        "change_unit": "pct",
        "median": 2.5,
        "low": -3.0,
        "high": 6.25,
        "count": 2,
    }
    assert "analog_days" not in build_messages(make_table())[1]["content"]
