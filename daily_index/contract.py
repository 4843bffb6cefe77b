"""The n8n <-> Dagster data contract.

`IndividualKPITrigger` is what we POST to a webhook; `KPIDataUpdate` (success) and
`KPIErrorUpdate` (failure) come back as its response body. Field names are camelCase on the
wire. Older schema versions are upgraded on read and unknown extra fields are kept.

`parse_update` is the single gate: anything that does not validate becomes a
`KPIErrorUpdate` whose reason says which field, what was expected and what came.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 2
"""Current wire version. Version 1 (the Workers era) nested the value under `data`."""

# KPI types whose value can never be negative; a negative one is a source bug, not data.
NON_NEGATIVE_TYPES = frozenset({"price", "ratio", "supply", "volume", "dominance", "market_cap"})
PERCENT_TYPES = frozenset({"dominance"})


class ContractModel(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, serialize_by_alias=True, frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase form, extra fields included."""
        wire = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        # exclude_none is for our optional fields; an unknown field sent as null is kept.
        for key, value in (self.model_extra or {}).items():
            if value is None:
                wire[key] = None
        return wire


def _utc_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone; expected UTC (e.g. ...Z)")
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp {value!r} is out of range once converted to UTC") from None
    return in_utc.isoformat().replace("+00:00", "Z")


class IndividualKPITrigger(ContractModel):
    """The request body sent to a KPI's webhook."""

    schema_version: Literal[2] = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    trace_id: str = Field(alias="traceId", min_length=1)
    kpi_id: str = Field(alias="kpiId", min_length=1)
    timestamp: str
    kpi_type: str = Field(alias="kpiType")
    metadata: dict[str, Any] = Field(default_factory=dict)

    _ts = field_validator("timestamp")(classmethod(lambda cls, v: _utc_timestamp(v)))


class KPIDataUpdate(ContractModel):
    """A KPI value for one day, as a webhook or source reports it."""

    schema_version: Literal[2] = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    trace_id: str = Field(alias="traceId", min_length=1)
    kpi_id: str = Field(alias="kpiId", min_length=1)
    timestamp: str
    value: float
    unit: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _ts = field_validator("timestamp")(classmethod(lambda cls, v: _utc_timestamp(v)))

    @field_validator("value", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a JSON number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError("value is too large for a 64-bit float") from None
        if not math.isfinite(number):
            raise ValueError(f"value must be a finite number, got {value!r}")
        return number

    @property
    def day(self) -> date:
        return datetime.fromisoformat(self.timestamp.replace("Z", "+00:00")).date()


class KPIErrorUpdate(ContractModel):
    """A failed fetch: what went wrong, in words an operator can act on."""

    schema_version: Literal[2] = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    trace_id: str = Field(alias="traceId", min_length=1)
    kpi_id: str = Field(alias="kpiId", min_length=1)
    timestamp: str
    error: str = Field(min_length=1)
    error_code: str | None = Field(default=None, alias="errorCode")
    retryable: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    _ts = field_validator("timestamp")(classmethod(lambda cls, v: _utc_timestamp(v)))


KPIUpdate = KPIDataUpdate | KPIErrorUpdate


def partition_timestamp(day: date, at: time = time(12, 0)) -> str:
    """The trigger timestamp of a partition: the day at the scheduled time, UTC."""
    return datetime.combine(day, at, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring an older wire payload up to the current schema version (a copy; extras kept)."""
    data = dict(payload)
    version = data.get("schemaVersion", 1)
    # `True == 1` in Python; a boolean is not a version number and must fail validation.
    if version == 1 and not isinstance(version, bool):
        # v1 nested the value as data: {value, unit} and named the error `errorMessage`.
        nested = data.pop("data", None)
        if isinstance(nested, dict):
            for key in ("value", "unit"):
                if key in nested and key not in data:
                    data[key] = nested[key]
            leftovers = {k: v for k, v in nested.items() if k not in ("value", "unit")}
            if leftovers:
                data["legacyData"] = leftovers
        elif nested is not None:
            data["data"] = nested
        if "errorMessage" in data and "error" not in data:
            data["error"] = data.pop("errorMessage")
        data["schemaVersion"] = SCHEMA_VERSION
    return data


def _describe(value: Any) -> str:
    try:
        text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    except (ValueError, TypeError, RecursionError):
        # e.g. an int beyond Python's digit limit or a non-string key: name the type instead.
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _reason_from(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        got = _describe(err.get("input")) if err["type"] != "missing" else "nothing"
        parts.append(f"field {field!r}: {err['msg']} (got {got})")
    return "; ".join(parts)


def make_error(
    *,
    kpi_id: str,
    trace_id: str,
    timestamp: str,
    reason: str,
    code: str,
    retryable: bool = False,
    **metadata: Any,
) -> KPIErrorUpdate:
    return KPIErrorUpdate(
        traceId=trace_id,
        kpiId=kpi_id,
        timestamp=timestamp,
        error=reason,
        errorCode=code,
        retryable=retryable,
        metadata=metadata,
    )


def check_domain(update: KPIDataUpdate, kpi_type: str) -> str | None:
    """A reason when a valid number is impossible for the KPI's type, else None."""
    if kpi_type in NON_NEGATIVE_TYPES and update.value < 0:
        return f"value {update.value} is negative, impossible for a {kpi_type} KPI"
    if kpi_type == "price" and update.value == 0:
        return "value 0 is not a price; the source returned no quote"
    if kpi_type in PERCENT_TYPES and update.value > 100:
        return f"value {update.value} is above 100, impossible for a percentage share"
    return None


IDENTITY_FIELDS = ("traceId", "kpiId", "timestamp")
"""What every answer must echo from its trigger; never filled in on our side."""


def parse_update(
    payload: Any,
    *,
    kpi_id: str,
    trace_id: str,
    timestamp: str,
    kpi_type: str | None = None,
) -> KPIUpdate:
    """Validate a response body into a data or error update; never raises.

    The answer must carry the trigger's `traceId` and `kpiId` and a `timestamp` on the
    trigger's day (UTC): an answer that lacks one, or names another trace, KPI or day, is
    rejected (it may be a stale cache or another execution's reply), never patched up.

    Args:
        payload: the decoded JSON body (any type; non-objects are rejected with a reason).
        kpi_id: the KPI that was asked for.
        trace_id: the trace id of the trigger.
        timestamp: the trigger's timestamp; its UTC date is the day the answer must be of.
        kpi_type: when given, domain checks (no negative price, ...) apply.
    """

    def error(reason: str, code: str) -> KPIErrorUpdate:
        return make_error(
            kpi_id=kpi_id, trace_id=trace_id, timestamp=timestamp, reason=reason, code=code
        )

    if not isinstance(payload, dict):
        return error(f"expected a JSON object, got {_describe(payload)}", "invalid_body")
    body = upgrade(payload)
    if problem := _identity_problem(body, kpi_id=kpi_id, trace_id=trace_id, timestamp=timestamp):
        reason, code = problem
        said = body.get("error")
        if isinstance(said, str) and said.strip():
            reason += f"; the answer's own error was: {_describe(said)}"
        return error(reason, code)

    if "error" in body:
        try:
            parsed_error = KPIErrorUpdate.model_validate(body)
        except ValidationError as exc:
            return error(f"invalid error update: {_reason_from(exc)}", "invalid_error_update")
        return parsed_error

    if "value" not in body:
        return error("field 'value': missing; expected a finite number", "missing_value")
    try:
        update = KPIDataUpdate.model_validate(body)
    except ValidationError as exc:
        return error(_reason_from(exc), "invalid_value")
    if kpi_type is not None and (problem := check_domain(update, kpi_type)):
        return error(problem, "out_of_domain")
    return update


def _identity_problem(
    body: dict[str, Any], *, kpi_id: str, trace_id: str, timestamp: str
) -> tuple[str, str] | None:
    """Why the answer is not the one to this trigger (reason, code), or None."""
    missing = [name for name in IDENTITY_FIELDS if body.get(name) is None]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        plural = "fields" if len(missing) > 1 else "field"
        return (
            f"{plural} {names}: missing; the answer must echo the trigger's traceId, kpiId "
            "and a timestamp of its day",
            "missing_field",
        )
    if body["kpiId"] != kpi_id:
        return (
            f"field 'kpiId': answer is for {_describe(body['kpiId'])}, expected {kpi_id!r}",
            "wrong_kpi",
        )
    if body["traceId"] != trace_id:
        return (
            f"field 'traceId': answer carries {_describe(body['traceId'])}, expected "
            f"{trace_id!r} (a reply to another trigger)",
            "wrong_trace",
        )
    answered = body["timestamp"]
    if not isinstance(answered, str):
        return (
            f"field 'timestamp': expected an ISO 8601 timestamp, got {_describe(answered)}",
            "invalid_value",
        )
    try:
        answered_day = _utc_day(answered)
    except ValueError as exc:
        return f"field 'timestamp': {exc}", "invalid_value"
    expected_day = _utc_day(timestamp)
    if answered_day < expected_day:
        return (
            f"field 'timestamp': the answer is of {answered_day}, not {expected_day}: stale, "
            "nothing stored",
            "stale",
        )
    if answered_day > expected_day:
        return (
            f"field 'timestamp': the answer is of {answered_day}, expected {expected_day}",
            "wrong_day",
        )
    return None


def _utc_day(value: str) -> date:
    normalised = _utc_timestamp(value)
    return datetime.fromisoformat(normalised.replace("Z", "+00:00")).date()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each wire model, as written to docs/contract/."""
    return {
        name: model.model_json_schema(by_alias=True, mode="serialization")
        for name, model in (
            ("IndividualKPITrigger", IndividualKPITrigger),
            ("KPIDataUpdate", KPIDataUpdate),
            ("KPIErrorUpdate", KPIErrorUpdate),
        )
    }
