"""The IO manager for report artefacts: per-day, human-readable objects on the store.

`report/analysis` is stored as `analysis/<date>.json` and `report/pdf` as
`reports/<date>.pdf`, on whichever backend the storage resource selects (local or R2).
Unlike Dagster's stock pickle IO managers (dagster issue 14332), an output covering a
range of partitions is accepted: it is a mapping {partition key: value} and each day gets
its own object. The object is written atomically before Dagster records the
materialisation, so a recorded materialisation always has a durable object behind it.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from daily_index.defs.resources import StorageResource

# asset name under report/ -> (key template, format)
ARTIFACTS: dict[str, tuple[str, str]] = {
    "analysis": ("analysis/{day}.json", "json"),
    "pdf": ("reports/{day}.pdf", "bytes"),
}
CONTENT_TYPES = {"json": "application/json", "bytes": "application/pdf"}


def artifact_key(asset_key: dg.AssetKey, day: str) -> tuple[str, str]:
    name = asset_key.path[-1]
    template, fmt = ARTIFACTS.get(
        name, (f"artifacts/{'/'.join(asset_key.path)}/{{day}}.json", "json")
    )
    return template.format(day=day), fmt


def _encode(value: Any, fmt: str, where: str) -> bytes:
    if fmt == "bytes":
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"{where}: expected bytes, got {type(value).__name__}")
        return bytes(value)
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode()


def _decode(data: bytes, fmt: str) -> Any:
    return data if fmt == "bytes" else json.loads(data)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores report artefacts per day on the configured object store."""

    storage: dg.ResourceDependency[StorageResource]

    def _days(self, context: dg.OutputContext | dg.InputContext) -> list[str]:
        if not context.has_asset_partitions:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}: report artefacts are per day; "
                "the asset must be daily-partitioned"
            )
        return list(context.asset_partition_keys)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        days = self._days(context)
        if len(days) == 1 and not (isinstance(obj, Mapping) and set(obj) == set(days)):
            values = {days[0]: obj}
        elif isinstance(obj, Mapping) and set(obj) <= set(days):
            values = dict(obj)
        else:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}: an output for {len(days)} days must be a "
                "mapping {partition key: value}"
            )
        store = self.storage.get_store()
        written = []
        for day, value in values.items():
            key, fmt = artifact_key(context.asset_key, day)
            store.put(key, _encode(value, fmt, key), content_type=CONTENT_TYPES[fmt])
            written.append(key)
        context.add_output_metadata(
            {
                "stored_at": written[0] if len(written) == 1 else f"{len(written)} objects",
                "store": store.description,
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        days = self._days(context)
        store = self.storage.get_store()
        loaded = {}
        for day in days:
            key, fmt = artifact_key(context.asset_key, day)
            data = store.read_bytes(key)
            if data is None:
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()} for {day} is not in "
                    f"{store.description} (expected {key}); materialise it first"
                )
            loaded[day] = _decode(data, fmt)
        return loaded[days[0]] if len(days) == 1 else loaded
