"""The n8n <-> Dagster contract: parse_update is the single gate, and it never lets go."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daily_index.contract import (
    SCHEMA_VERSION,
    IndividualKPITrigger,
    KPIDataUpdate,
    KPIErrorUpdate,
    parse_update,
    partition_timestamp,
    upgrade,
)

KPI = "btc_price"
TRACE = "trace-1"
TS = "2024-03-01T12:00:00Z"
KNOWN = {
    "schemaVersion",
    "traceId",
    "kpiId",
    "timestamp",
    "value",
    "unit",
    "source",
    "metadata",
    "error",
    "errorCode",
    "retryable",
    "data",
    "errorMessage",
    "legacyData",
    "schema_version",
    "trace_id",
    "kpi_id",
    "error_code",
}
IDS = {"traceId": TRACE, "kpiId": KPI, "timestamp": TS}
MISSING = object()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(payload, **kwargs):
    return parse_update(payload, kpi_id=KPI, trace_id=TRACE, timestamp=TS, **kwargs)


def answer(**fields) -> dict:
    """An answer echoing the trigger's identity; a field set to MISSING is left out."""
    return {k: v for k, v in {**IDS, **fields}.items() if v is not MISSING}


def is_json_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["1", "1.5", "NaN", "inf", "-0", "1e999", "", " 3 "])
)


def containers(inner, size: int):
    keys = st.text(max_size=8)
    return st.lists(inner, max_size=size) | st.dictionaries(keys, inner, max_size=size)


json_values = st.recursive(scalars, lambda inner: containers(inner, 4), max_leaves=12)
field_names = st.sampled_from(sorted(KNOWN)) | st.text(max_size=12)
payload_dicts = st.dictionaries(field_names, json_values, max_size=8)

# What a valid answer may carry besides its known fields: extras must survive.
finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: containers(inner, 3),
    max_leaves=8,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN), finite_json, max_size=4
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_times = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    offsets,
)
numbers = st.integers(min_value=-(10**30), max_value=10**30) | st.floats(
    allow_nan=False, allow_infinity=False
)


def assert_sound(result) -> None:
    """Whatever came in, what comes out is a well-formed update for the KPI asked about."""
    assert isinstance(result, KPIDataUpdate | KPIErrorUpdate)
    assert result.kpi_id == KPI
    assert result.schema_version == SCHEMA_VERSION
    parsed = datetime.fromisoformat(result.timestamp.replace("Z", "+00:00"))
    assert result.timestamp.endswith("Z") and parsed.utcoffset() == timedelta(0)
    json.dumps(result.to_wire(), allow_nan=False)
    if isinstance(result, KPIDataUpdate):
        assert type(result.value) is float and math.isfinite(result.value)
    else:
        assert result.error.strip()


@PROPERTY
@given(json_values)
def test_any_json_value_never_raises(payload):
    result = parse(payload)
    assert_sound(result)
    if not isinstance(payload, dict):
        assert isinstance(result, KPIErrorUpdate) and result.error_code == "invalid_body"


@PROPERTY
@given(payload_dicts)
def test_any_object_never_raises_and_nothing_invalid_is_accepted(payload):
    result = parse(payload)
    assert_sound(result)
    if isinstance(result, KPIDataUpdate):
        body = upgrade(payload)
        assert "error" not in body
        assert (body["traceId"], body["kpiId"]) == (TRACE, KPI)
        assert result.day.isoformat() == "2024-03-01"
        assert is_json_number(body["value"])
        assert result.value == float(body["value"])


@PROPERTY
@given(value=json_values)
def test_field_types_are_enforced(value):
    result = parse(answer(schemaVersion=2, value=value), kpi_type="index")
    assert_sound(result)
    if isinstance(result, KPIDataUpdate):
        assert is_json_number(value)
    else:
        assert not is_json_number(value) and "value" in result.error


identities = json_values | st.sampled_from([TRACE, KPI, TS, "2024-03-01T00:00:00+01:00"])


@PROPERTY
@given(trace=identities, kpi=identities, timestamp=identities)
def test_an_answer_must_echo_the_trigger(trace, kpi, timestamp):
    result = parse(
        {"schemaVersion": 2, "value": 1, "traceId": trace, "kpiId": kpi, "timestamp": timestamp}
    )
    assert_sound(result)
    if isinstance(result, KPIDataUpdate):
        assert trace == TRACE and kpi == KPI and isinstance(timestamp, str)
        assert result.day.isoformat() == "2024-03-01"
    else:
        assert result.error_code in {
            "missing_field",
            "wrong_trace",
            "wrong_kpi",
            "invalid_value",
            "stale",
            "wrong_day",
        }


on_the_day = st.datetimes(
    min_value=datetime(2024, 3, 1), max_value=datetime(2024, 3, 1, 23, 59, 59, 999999)
)


@PROPERTY
@given(moment=aware_times)
def test_an_answer_of_another_day_is_stale_or_wrong_day(moment):
    result = parse(answer(value=1, timestamp=moment.isoformat()))
    day = moment.astimezone(UTC).date().isoformat()
    if day == "2024-03-01":
        assert isinstance(result, KPIDataUpdate)
    else:
        assert isinstance(result, KPIErrorUpdate)
        assert result.error_code == ("stale" if day < "2024-03-01" else "wrong_day")
        assert day in result.error and "2024-03-01" in result.error


@PROPERTY
@given(
    value=numbers,
    utc_moment=on_the_day,
    tz=offsets,
    extras=extra_fields,
    unit=st.none() | st.text(max_size=5),
)
def test_every_valid_payload_is_accepted_with_extras_kept(value, utc_moment, tz, extras, unit):
    moment = utc_moment.replace(tzinfo=UTC).astimezone(tz)
    payload = {
        "schemaVersion": 2,
        "kpiId": KPI,
        "traceId": TRACE,
        "timestamp": moment.isoformat(),
        "value": value,
        "unit": unit,
        "metadata": {"n8nExecution": 7},
        **extras,
    }
    result = parse(payload, kpi_type="index")
    assert isinstance(result, KPIDataUpdate), result
    assert_sound(result)
    assert result.value == float(value)
    assert result.trace_id == TRACE
    assert result.timestamp == moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    wire = result.to_wire()
    for key, extra in extras.items():
        assert wire[key] == extra
    assert wire["metadata"] == {"n8nExecution": 7}
    assert parse(json.loads(json.dumps(wire))) == result


@PROPERTY
@given(value=numbers, extras=extra_fields, unit=st.text(max_size=5))
def test_v1_payloads_are_upgraded(value, extras, unit):
    payload = {**IDS, "data": {"value": value, "unit": unit, "note": "x"}, **extras}
    result = parse(payload)
    assert isinstance(result, KPIDataUpdate), result
    assert result.value == float(value) and result.unit == unit
    wire = result.to_wire()
    assert wire["schemaVersion"] == SCHEMA_VERSION
    assert wire["legacyData"] == {"note": "x"}
    assert all(wire[key] == extra for key, extra in extras.items())


def test_v1_error_is_upgraded():
    result = parse(answer(schemaVersion=1, errorMessage="upstream 503", retryable=True))
    assert isinstance(result, KPIErrorUpdate)
    assert result.error == "upstream 503" and result.retryable


def test_error_update_keeps_its_fields_and_extras():
    body = {
        **IDS,
        "error": "rate limited",
        "errorCode": "http_429",
        "retryable": True,
        "n8nNode": "HTTP Request",
    }
    result = parse(body)
    assert isinstance(result, KPIErrorUpdate)
    assert result.to_wire()["n8nNode"] == "HTTP Request"
    assert (result.error, result.error_code, result.retryable) == ("rate limited", "http_429", True)


@pytest.mark.parametrize(
    ("payload", "kpi_type", "code", "words"),
    [
        (["not", "an", "object"], None, "invalid_body", ["JSON object"]),
        ({}, None, "missing_value", ["'value'", "missing"]),
        ({"value": "42.0"}, None, "invalid_value", ["'value'", "JSON number", "str"]),
        ({"value": True}, None, "invalid_value", ["'value'", "JSON number", "bool"]),
        ({"value": float("nan")}, None, "invalid_value", ["'value'", "finite"]),
        ({"value": float("inf")}, None, "invalid_value", ["'value'", "finite"]),
        ({"value": 10**400}, None, "invalid_value", ["'value'", "too large"]),
        ({"value": None}, None, "invalid_value", ["'value'", "NoneType"]),
        ({"value": 1, "kpiId": "eth_price"}, None, "wrong_kpi", ["'kpiId'", "eth_price", KPI]),
        ({"value": 1, "kpiId": MISSING}, None, "missing_field", ["'kpiId'", "missing"]),
        ({"value": 1, "traceId": MISSING}, None, "missing_field", ["'traceId'", "missing"]),
        ({"value": 1, "traceId": None}, None, "missing_field", ["'traceId'", "missing"]),
        ({"value": 1, "timestamp": MISSING}, None, "missing_field", ["'timestamp'", "missing"]),
        (
            {"value": 1, "traceId": MISSING, "timestamp": MISSING},
            None,
            "missing_field",
            ["'traceId', 'timestamp'"],
        ),
        ({"value": 1, "traceId": "trace-2"}, None, "wrong_trace", ["'traceId'", "trace-2", TRACE]),
        ({"value": 1, "traceId": ""}, None, "wrong_trace", ["'traceId'", TRACE]),
        (
            {"value": 1, "timestamp": "2024-02-29T12:00:00Z"},
            None,
            "stale",
            ["'timestamp'", "2024-02-29", "2024-03-01", "stale"],
        ),
        (
            {"value": 1, "timestamp": "2024-03-02T00:00:00Z"},
            None,
            "wrong_day",
            ["'timestamp'", "2024-03-02", "2024-03-01"],
        ),
        ({"value": 1, "timestamp": "yesterday"}, None, "invalid_value", ["'timestamp'", "ISO"]),
        ({"value": 1, "timestamp": 1709294400}, None, "invalid_value", ["'timestamp'", "ISO"]),
        (
            {"value": 1, "timestamp": "2024-03-01T12:00:00"},
            None,
            "invalid_value",
            ["'timestamp'", "timezone"],
        ),
        (
            {"value": 1, "timestamp": "0001-01-01T00:00:00+05:00"},
            None,
            "invalid_value",
            ["'timestamp'", "out of range"],
        ),
        ({"value": 1, "unit": 5}, None, "invalid_value", ["'unit'", "string"]),
        ({"value": 1, "metadata": [1]}, None, "invalid_value", ["'metadata'"]),
        ({"value": 1, "schemaVersion": 3}, None, "invalid_value", ["'schemaVersion'", "2"]),
        ({"value": 1, "schemaVersion": True}, None, "invalid_value", ["'schemaVersion'"]),
        ({"error": ""}, None, "invalid_error_update", ["'error'"]),
        ({"error": "boom", "retryable": "maybe"}, None, "invalid_error_update", ["'retryable'"]),
        (
            {"error": "no data", "traceId": "trace-0"},
            None,
            "wrong_trace",
            ["trace-0", "own error was: 'no data'"],
        ),
        ({"value": -5}, "price", "out_of_domain", ["negative", "price"]),
        ({"value": 0}, "price", "out_of_domain", ["not a price"]),
        ({"value": 101}, "dominance", "out_of_domain", ["above 100"]),
    ],
)
def test_error_reasons_name_the_field(payload, kpi_type, code, words):
    result = parse(answer(**payload) if isinstance(payload, dict) else payload, kpi_type=kpi_type)
    assert isinstance(result, KPIErrorUpdate)
    assert result.error_code == code
    assert (result.kpi_id, result.trace_id, result.timestamp) == (KPI, TRACE, TS)
    for word in words:
        assert word in result.error, result.error
    assert len(result.error) < 600


def test_missing_identity_is_never_filled_in_from_the_trigger():
    """The trigger's values are not a default: an answer without them is not accepted."""
    for name in ("traceId", "kpiId", "timestamp"):
        result = parse(answer(value=1, **{name: MISSING}))
        assert isinstance(result, KPIErrorUpdate) and result.error_code == "missing_field"
        assert repr(name) in result.error


def test_trigger_wire_form():
    trigger = IndividualKPITrigger(
        traceId="t",
        kpiId=KPI,
        timestamp=partition_timestamp(datetime(2024, 3, 1).date()),
        kpiType="price",
        metadata={"name": "Bitcoin price"},
    )
    assert trigger.to_wire() == {
        "schemaVersion": 2,
        "traceId": "t",
        "kpiId": KPI,
        "timestamp": TS,
        "kpiType": "price",
        "metadata": {"name": "Bitcoin price"},
    }


def test_data_update_day_is_the_utc_date():
    result = parse(answer(value=1, timestamp="2024-03-02T01:30:00+03:00"))
    assert result.timestamp == "2024-03-01T22:30:00Z"
    assert result.day.isoformat() == "2024-03-01"
    # The local date is the trigger's day, the UTC one is not: rejected.
    late = parse(answer(value=1, timestamp="2024-03-01T23:30:00-02:00"))
    assert isinstance(late, KPIErrorUpdate) and late.error_code == "wrong_day"
