"""docs/contract/ stays in step with the models, and its examples satisfy the contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daily_index.contract import (
    IndividualKPITrigger,
    KPIDataUpdate,
    KPIErrorUpdate,
    json_schemas,
    parse_update,
    upgrade,
)
from daily_index.schema_docs import render_schema, schema_filename, write_schemas

jsonschema = pytest.importorskip("jsonschema")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "contract"
REGENERATE = "regenerate with `python -m daily_index.schema_docs` and commit docs/contract/"
TS = "2024-03-01T12:00:00Z"
EXAMPLES = {
    "trigger.json": (IndividualKPITrigger, False),
    "data-update.json": (KPIDataUpdate, False),
    "error-update.json": (KPIErrorUpdate, False),
    "v1-data-update.json": (KPIDataUpdate, True),
}


def load(name: str) -> dict:
    return json.loads((DOCS / "examples" / name).read_text(encoding="utf-8"))


def schema_of(model) -> dict:
    return json.loads((DOCS / schema_filename(model.__name__)).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_matches_the_model(name):
    path = DOCS / schema_filename(name)
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    expected = render_schema(json_schemas()[name])
    assert path.read_text(encoding="utf-8") == expected, f"{path} is out of date; {REGENERATE}"


def test_write_schemas_writes_one_file_per_model(tmp_path):
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(schema_filename(n) for n in json_schemas())
    for path in written:
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_every_example_is_covered():
    assert sorted(p.name for p in (DOCS / "examples").glob("*.json")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_validates_against_its_schema(name):
    model, legacy = EXAMPLES[name]
    example = load(name)
    wire = upgrade(example) if legacy else example
    jsonschema.validate(wire, schema_of(model), cls=jsonschema.Draft202012Validator)
    dumped = model.model_validate(wire).to_wire()
    assert {key: dumped.get(key) for key in wire} == wire  # nothing lost, extras included


def parse_as_answer_to_the_trigger_example(payload):
    trigger = load("trigger.json")
    return parse_update(
        payload,
        kpi_id=trigger["kpiId"],
        trace_id=trigger["traceId"],
        timestamp=trigger["timestamp"],
    )


ANSWERS = ["data-update.json", "error-update.json", "v1-data-update.json"]


@pytest.mark.parametrize("name", ANSWERS)
def test_example_answer_passes_parse_update(name):
    model, _ = EXAMPLES[name]
    example = load(name)
    result = parse_as_answer_to_the_trigger_example(example)
    assert isinstance(result, model), getattr(result, "error", result)
    assert result.trace_id == example["traceId"]
    wire = result.to_wire()
    for key, value in example.items():
        if key != "data":  # v1 nesting, checked in test_v1_example_is_upgraded
            assert wire[key] == value, key


@pytest.mark.parametrize("name", ANSWERS)
@pytest.mark.parametrize("field", ["traceId", "kpiId", "timestamp"])
def test_example_answer_without_its_identity_is_refused(name, field):
    """The schemas mark traceId, kpiId and timestamp required, and so does parse_update."""
    model, legacy = EXAMPLES[name]
    assert field in schema_of(model)["required"]
    example = {k: v for k, v in load(name).items() if k != field}
    result = parse_as_answer_to_the_trigger_example(example)
    assert isinstance(result, KPIErrorUpdate) and result.error_code == "missing_field"


def test_v1_example_is_upgraded():
    result = parse_as_answer_to_the_trigger_example(load("v1-data-update.json"))
    assert isinstance(result, KPIDataUpdate)
    assert (result.value, result.unit) == (61234.5, "USD")
    assert result.to_wire()["legacyData"] == {"exchange": "aggregate"}
    assert result.schema_version == 2


def test_an_invalid_example_would_fail():
    """The schema check can fail: a string value is refused by schema and by parse_update."""
    broken = {**load("data-update.json"), "value": "61234.5"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema_of(KPIDataUpdate))
    result = parse_as_answer_to_the_trigger_example(broken)
    assert isinstance(result, KPIErrorUpdate) and "'value'" in result.error
