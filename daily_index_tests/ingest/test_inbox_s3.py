"""The inbox on an S3-compatible store (moto on 127.0.0.1): no journal, create-only PUTs."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from daily_index.defs.ingest import materialise
from daily_index.ingest.inbox import Inbox, Push
from daily_index.ingest.journal import journal_folder
from daily_index.storage.series import KpiSeriesStore
from daily_index_tests.ingest.conftest import data_update, push_kpis, today


def _push(webhook_id: str, **changes) -> Push:
    update = data_update(**changes)
    return Push("data", webhook_id, update["kpiId"], today(), time.time(), update)


def test_concurrent_pushes_of_one_kpi_day_keep_one(s3_store) -> None:
    inbox = Inbox(s3_store)
    assert journal_folder(inbox) is None  # a PUT is the durable write: no journal
    first = _push("msg_s3_a", value=101.5)
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(inbox.accept, [first] * 16))
    assert sorted(r.outcome for r in outcomes) == ["accepted"] + ["duplicate"] * 15
    assert inbox.accept(_push("msg_s3_b", value=99.0)).outcome == "conflict"
    assert inbox.accept(_push("msg_s3_c", value=101.5)).outcome == "duplicate"
    [marker] = inbox.pending()
    push = inbox.load(marker)
    assert push is not None and push.webhook_id == "msg_s3_a"
    events = list(
        materialise([push], kpis={k.id: k for k in push_kpis()}, series=KpiSeriesStore(s3_store))
    )
    assert isinstance(events[0], dg.AssetMaterialization)
    assert KpiSeriesStore(s3_store).value_on("btc_price_push", today()) == 101.5
