"""The KPI registry: kpis.yaml turned into validated, versioned KPI specs.

The registry drives everything downstream: one asset per KPI, its group, description,
chart type and alert thresholds all come from the spec built here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REGISTRY_ENV = "DAILY_INDEX_KPIS_FILE"
SUPPORTED_REGISTRY_VERSIONS = (1,)

KpiType = Literal[
    "price", "ratio", "index", "supply", "rate", "volume", "dominance", "market_cap", "yield"
]
SourceKind = Literal[
    "n8n",
    "coingecko_price",
    "coingecko_global",
    "alternative_me_fng",
    "binance_kline",
    "binance_funding",
    "defillama_stablecoins",
    "fred",
]
ChartType = Literal["line", "bar", "area"]

_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_GROUP_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(ValueError):
    """A registry that cannot be used; the message names file, KPI id and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SourceSpec(_Model):
    """Where a KPI's value comes from."""

    kind: SourceKind
    params: dict[str, Any] = Field(default_factory=dict)
    base_url: str | None = Field(default=None, alias="baseUrl")


class AlertThresholds(_Model):
    high: float | None = None
    low: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AlertThresholds:
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class AnalysisConfig(_Model):
    chart_type: ChartType = Field(default="line", alias="chartType")
    alert_thresholds: AlertThresholds = Field(
        default_factory=AlertThresholds, alias="alertThresholds"
    )


class KpiMetadata(_Model):
    source: str
    update_frequency: Literal["daily"] = Field(default="daily", alias="updateFrequency")
    category: str

    @field_validator("category")
    @classmethod
    def _snake_case(cls, value: str) -> str:
        if not _GROUP_RE.match(value):
            raise ValueError(
                f"category must be snake_case (used as the asset group), got {value!r}"
            )
        return value


class KpiSpec(_Model):
    """One KPI as the registry declares it."""

    id: str
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1)
    type: KpiType
    unit: str = ""
    active: bool = True
    requires_env: str | None = Field(default=None, alias="requiresEnv")
    source: SourceSpec
    analysis_config: AnalysisConfig = Field(default_factory=AnalysisConfig, alias="analysisConfig")
    metadata: KpiMetadata

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(
                "id must be lowercase letters, digits and '_' starting with a letter, "
                f"got {value!r}"
            )
        return value

    @property
    def asset_path(self) -> list[str]:
        return ["kpi", self.id]

    @property
    def group(self) -> str:
        return self.metadata.category

    def is_enabled(self, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
        """Active in the registry and, where it needs a key, the key is configured."""
        env = os.environ if environ is None else environ
        return self.active and (self.requires_env is None or bool(env.get(self.requires_env)))


class Registry(_Model):
    version: int
    kpis: tuple[KpiSpec, ...]

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in SUPPORTED_REGISTRY_VERSIONS:
            raise ValueError(
                f"registry version {value} is not supported (known: {SUPPORTED_REGISTRY_VERSIONS})"
            )
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Registry:
        seen: dict[str, int] = {}
        for number, kpi in enumerate(self.kpis, start=1):
            if kpi.id in seen:
                raise ValueError(
                    f"KPI {kpi.id!r}, field 'id': duplicate id (entries #{seen[kpi.id]} and "
                    f"#{number}); ids must be unique"
                )
            seen[kpi.id] = number
        return self

    def get(self, kpi_id: str) -> KpiSpec:
        for kpi in self.kpis:
            if kpi.id == kpi_id:
                return kpi
        raise KeyError(f"no KPI {kpi_id!r} in the registry")

    def enabled(self, environ: dict[str, str] | None = None) -> list[KpiSpec]:
        return [k for k in self.kpis if k.is_enabled(environ)]


def default_registry_path() -> Path:
    return Path(str(resources.files("daily_index") / "kpis.yaml"))


def registry_path(environ: Mapping[str, str] | None = None) -> Path:
    """The registry file in use: $DAILY_INDEX_KPIS_FILE, else the bundled kpis.yaml."""
    override = (os.environ if environ is None else environ).get(REGISTRY_ENV)
    return Path(override) if override else default_registry_path()


def _describe_location(raw: Any, loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into 'KPI <id>, field <a.b>'."""
    if len(loc) >= 2 and loc[0] == "kpis" and isinstance(loc[1], int):
        index = loc[1]
        kpi_id = "?"
        try:
            kpi_id = raw["kpis"][index].get("id", f"#{index + 1}")
        except (KeyError, IndexError, TypeError, AttributeError):
            kpi_id = f"#{index + 1}"
        field = ".".join(str(p) for p in loc[2:]) or "(entry)"
        return f"KPI {kpi_id!r}, field {field!r}"
    if not loc:
        return "registry"
    return f"field {'.'.join(str(p) for p in loc)!r}"


def parse_registry(text: str, *, source: str) -> Registry:
    """Parse registry YAML; any problem raises RegistryError naming file, KPI and field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: expected a mapping with 'version' and 'kpis' at the top")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{source}: {_describe_location(raw, tuple(err['loc']))}: {err['msg']}"
            for err in exc.errors()
        ]
        raise RegistryError("\n".join(problems)) from None


def load_registry(path: Path | str | None = None) -> Registry:
    """Load and validate a registry file (default: the one in use)."""
    file = Path(path) if path is not None else registry_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{file}: cannot read the KPI registry: {exc.strerror}") from None
    return parse_registry(text, source=str(file))


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> Registry:
    return load_registry(path)


def current_registry(environ: Mapping[str, str] | None = None) -> Registry:
    """The registry in use, cached per file version (path and modification time)."""
    file = registry_path(environ)
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return _cached(str(file), mtime)
