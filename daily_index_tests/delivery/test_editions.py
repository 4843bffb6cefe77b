"""Editions of a day's report: an amended report reaches endpoints served the partial one.

Real HTTP receivers on 127.0.0.1 (json://), a local object store, and one Dagster run of
`report/delivery` tagged as the fan-in sensor tags an amended report.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from daily_index.defs.analysis import ANALYSIS_KEY
from daily_index.defs.automation import REPORT_TAG
from daily_index.defs.delivery import (
    DELIVERY_KEY,
    build_delivery_asset,
    edition_for_run,
    report_payload,
)
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.report import PDF_KEY
from daily_index.defs.resources import DeliveryResource, ReportSettingsResource, StorageResource
from daily_index.delivery import Subscriber, deliver, ledger_key, read_ledger
from daily_index.delivery.ledger import Journal
from daily_index.storage.io_manager import ArtifactIOManager
from daily_index.storage.objectstore import LocalObjectStore
from daily_index_tests.delivery.conftest import PDF_BYTES, Receiver

DAY = date(2024, 5, 1)
ANALYSIS = {
    "headline": "BTC up 2%",
    "summary": "BTC rose 2%; Fear & Greed at 71.",
    "risks": ["funding rates elevated"],
    "analyst_label": "Written by the rule-based analyst.",
}
PATHS = ("alice", "bob", "carol")


def subscribers(receiver: Receiver) -> list[Subscriber]:
    return [
        Subscriber(id=p, name=p.title(), urls=(receiver.url(p),), receives="summary") for p in PATHS
    ]


def titles(receiver: Receiver, path: str) -> list[str]:
    with receiver.lock:
        return [json.loads(body)["title"] for _, body in receiver.requests.get(f"/{path}", [])]


def send(receiver: Receiver, store: LocalObjectStore, pdf: Path, edition: str | None):
    payload = report_payload(
        DAY, ANALYSIS, pdf, partial=edition is None, demo=False, edition=edition
    )
    return deliver(
        day=DAY, store=store, subscribers=subscribers(receiver), payload=payload, edition=edition
    )


def test_amended_edition_reaches_every_endpoint_once(receiver, store, pdf) -> None:
    first = send(receiver, store, pdf, None)
    assert (first.sent, first.skipped) == (3, 0)
    assert all(receiver.count(p) == 1 for p in PATHS)
    assert titles(receiver, "alice")[0].startswith("[PARTIAL] Daily Index 2024-05-01")

    again = send(receiver, store, pdf, None)
    assert (again.sent, again.skipped) == (0, 3)
    assert all(receiver.count(p) == 1 for p in PATHS)

    amended = send(receiver, store, pdf, "amended")
    assert (amended.sent, amended.skipped, amended.total) == (3, 0, 3)
    for path in PATHS:
        assert receiver.count(path) == 2
        assert titles(receiver, path)[1] == "[AMENDED] Daily Index 2024-05-01: BTC up 2%"

    rerun = send(receiver, store, pdf, "amended")
    assert (rerun.sent, rerun.skipped) == (0, 3)
    assert receiver.total() == 6


def test_editions_have_separate_ledgers_and_journals(receiver, store, pdf) -> None:
    assert ledger_key(DAY) == "delivery/2024-05-01.parquet"
    assert ledger_key(DAY, None) == "delivery/2024-05-01.parquet"
    assert ledger_key(DAY, "amended") == "delivery/2024-05-01.amended.parquet"
    assert Journal.for_store(store, DAY).path.name == ".2024-05-01.journal"
    assert Journal.for_store(store, DAY, "amended").path.name == ".2024-05-01.amended.journal"

    send(receiver, store, pdf, None)
    assert store.read_bytes(ledger_key(DAY, "amended")) is None
    assert read_ledger(store, DAY, "amended").empty
    send(receiver, store, pdf, "amended")

    regular = store.read_bytes(ledger_key(DAY))
    amended = store.read_bytes(ledger_key(DAY, "amended"))
    assert regular is not None and amended is not None
    assert sorted(p.name for p in (store.root / "delivery").glob("*.parquet")) == [
        "2024-05-01.amended.parquet",
        "2024-05-01.parquet",
    ]
    for edition in (None, "amended"):
        rows = read_ledger(store, DAY, edition)
        assert sorted(rows["endpoint_id"]) == [f"{p}:primary" for p in PATHS]
        assert set(rows["status"]) == {"sent"} and set(rows["attempts"]) == {1}
    # Finished runs leave no journal behind, for either edition.
    assert not list((store.root / "delivery").glob(".*.journal"))


@pytest.mark.parametrize(
    "bad", ["", "Amended", "amended edition", "../x", "a.b", "x" * 33, "amended\n"]
)
def test_bad_edition_is_refused_before_anything_is_sent(receiver, store, pdf, bad) -> None:
    payload = report_payload(DAY, ANALYSIS, pdf, partial=False, demo=False)
    with pytest.raises(ValueError, match="edition") as info:
        deliver(
            day=DAY, store=store, subscribers=subscribers(receiver), payload=payload, edition=bad
        )
    assert repr(bad) in str(info.value)
    for call in (lambda: ledger_key(DAY, bad), lambda: read_ledger(store, DAY, bad)):
        with pytest.raises(ValueError, match="edition"):
            call()
    assert receiver.total() == 0
    assert not (store.root / "delivery").exists()


def test_edition_for_run() -> None:
    assert edition_for_run({REPORT_TAG: "amended"}) == "amended"
    assert edition_for_run({REPORT_TAG: "partial"}) is None
    assert edition_for_run({"trigger": "cli"}) is None
    assert edition_for_run(None) is None


def _upstream(key: dg.AssetKey) -> dg.AssetSpec:
    """A non-selected stand-in for report/analysis or report/pdf, read from the store."""
    return dg.AssetSpec(key, partitions_def=daily_partitions).with_io_manager_key(
        "artifact_io_manager"
    )


def _materialise_delivery(tmp_path: Path, receiver: Receiver, tags: dict[str, str]):
    storage = StorageResource(local_dir=str(tmp_path / "store"))
    store = storage.get_store()
    store.put(f"analysis/{DAY}.json", json.dumps(ANALYSIS).encode())
    store.put(f"reports/{DAY}.pdf", PDF_BYTES)
    subscribers_file = tmp_path / "subscribers.yaml"
    subscribers_file.write_text(
        "subscribers:\n"
        + "".join(
            f'  - id: {p}\n    name: {p.title()}\n    url: "{receiver.url(p)}"\n' for p in PATHS
        )
    )
    return dg.materialize(
        [build_delivery_asset(), _upstream(ANALYSIS_KEY), _upstream(PDF_KEY)],
        selection=[DELIVERY_KEY],
        partition_key=DAY.isoformat(),
        tags=tags,
        resources={
            "storage": storage,
            "delivery": DeliveryResource(
                subscribers_file=str(subscribers_file), outbox_dir=str(tmp_path / "outbox")
            ),
            "report_settings": ReportSettingsResource(),
            "artifact_io_manager": ArtifactIOManager(storage=storage),
        },
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.asset_materializations_for_node("report__delivery")
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_amended_report_run_delivers_the_amended_edition(tmp_path, receiver) -> None:
    regular = _materialise_delivery(tmp_path, receiver, {"trigger": "test"})
    assert regular.success
    meta = _metadata(regular)
    assert meta["edition"] is None and meta["ledger"] == "delivery/2024-05-01.parquet"
    assert (meta["sent"], meta["endpoints"]) == (3, 3)

    amended = _materialise_delivery(tmp_path, receiver, {REPORT_TAG: "amended"})
    assert amended.success
    meta = _metadata(amended)
    assert meta["edition"] == "amended"
    assert meta["ledger"] == "delivery/2024-05-01.amended.parquet"
    assert (meta["sent"], meta["already_sent"], meta["endpoints"]) == (3, 0, 3)
    store = LocalObjectStore(tmp_path / "store")
    assert store.read_bytes("delivery/2024-05-01.amended.parquet") is not None
    assert set(read_ledger(store, DAY, "amended")["status"]) == {"sent"}
    for path in PATHS:
        got = titles(receiver, path)
        assert got[0] == "Daily Index 2024-05-01: BTC up 2%"
        assert got[1] == "[AMENDED] Daily Index 2024-05-01: BTC up 2%"

    again = _materialise_delivery(tmp_path, receiver, {REPORT_TAG: "amended"})
    assert _metadata(again)["sent"] == 0 and receiver.total() == 6
