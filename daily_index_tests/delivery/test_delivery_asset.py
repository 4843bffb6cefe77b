"""`report/delivery` as a Dagster run: what reaches the event log for a bad subscriber file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from daily_index.defs.analysis import ANALYSIS_KEY
from daily_index.defs.delivery import DELIVERY_KEY, build_delivery_asset
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.report import PDF_KEY
from daily_index.defs.resources import DeliveryResource, ReportSettingsResource, StorageResource
from daily_index.storage.io_manager import ArtifactIOManager
from daily_index_tests.delivery.conftest import PDF_BYTES, Receiver

DAY = date(2024, 5, 1)
ANALYSIS = {"headline": "BTC up 2%", "summary": "BTC rose 2%.", "analyst_label": "Rule-based."}


def _upstream(key: dg.AssetKey) -> dg.AssetSpec:
    return dg.AssetSpec(key, partitions_def=daily_partitions).with_io_manager_key(
        "artifact_io_manager"
    )


def _run(tmp_path: Path, subscribers_file: Path, instance: dg.DagsterInstance):
    storage = StorageResource(local_dir=str(tmp_path / "store"))
    store = storage.get_store()
    store.put(f"analysis/{DAY}.json", json.dumps(ANALYSIS).encode())
    store.put(f"reports/{DAY}.pdf", PDF_BYTES)
    return dg.materialize(
        [build_delivery_asset(), _upstream(ANALYSIS_KEY), _upstream(PDF_KEY)],
        selection=[DELIVERY_KEY],
        partition_key=DAY.isoformat(),
        instance=instance,
        raise_on_error=False,
        resources={
            "storage": storage,
            "delivery": DeliveryResource(
                subscribers_file=str(subscribers_file), outbox_dir=str(tmp_path / "outbox")
            ),
            "report_settings": ReportSettingsResource(),
            "artifact_io_manager": ArtifactIOManager(storage=storage),
        },
    )


def test_thousands_of_bad_rows_are_one_event(tmp_path: Path, receiver: Receiver) -> None:
    bad = 3000
    rows = ["id,name,urls", f"good,Good,{receiver.url('ok/good')}"]
    rows += [f"bad{i},,json://hooks.example.org/{i}" for i in range(bad)]
    file = tmp_path / "subscribers.csv"
    file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    result = _run(tmp_path, file, instance)
    assert result.success
    [event] = result.asset_materializations_for_node("report__delivery")
    meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    assert meta["sent"] == 1 and meta["subscriber_problem_count"] == bad
    assert meta["subscriber_problem_lines"] == f"3-{bad + 2}"
    assert len(meta["subscriber_problems"]) == 20
    logs = [e.user_message for e in instance.all_logs(result.run_id) if "skipped" in e.user_message]
    assert len(logs) == 1
    assert f"{bad} subscriber entries of subscribers.csv skipped (lines 3-{bad + 2})" in logs[0]
    assert len(logs[0]) < 5000


@pytest.mark.parametrize(
    "name, content",
    [
        ("subscribers.csv", b"id,urls\na,json://hooks.example.org/a\n"),
        ("subscribers.csv", "id,name,urls\na,Ä,json://h.example.org/a\n".encode("utf-16")),
        ("subscribers.yaml", b"subscribers: [\n  - id: a\n"),
    ],
)
def test_an_unusable_file_fails_the_step_and_never_falls_back_to_the_outbox(
    tmp_path: Path, name: str, content: bytes
) -> None:
    file = tmp_path / name
    file.write_bytes(content)
    result = _run(tmp_path, file, dg.DagsterInstance.ephemeral())
    assert not result.success
    assert not (tmp_path / "outbox").exists()
    assert not (tmp_path / "store" / "delivery").exists()
