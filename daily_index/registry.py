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

from daily_index.inputfiles import InputFileError, read_utf8

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
    "derived",
]
ChartType = Literal["line", "bar", "area"]
CalendarKind = Literal["daily", "business_days", "weekly", "monthly"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__
ChangeUnit = Literal["pct", "pp", "bp", "points"]
"""How a change is shown: percent, percentage points, basis points, index points."""
AlertKind = Literal["above", "below", "crossing", "change", "zscore", "no_data"]
DerivedOp = Literal["volatility", "drawdown", "correlation", "ratio", "moving_average"]
DERIVED_OPS: tuple[str, ...] = DerivedOp.__args__

# Per derived op: how many input KPIs it takes, its default window (None: it takes none) and
# the smallest window that means anything (a standard deviation needs two returns).
DERIVED_SHAPES: dict[str, tuple[int, int | None, int]] = {
    "volatility": (1, 30, 2),
    "drawdown": (1, 365, 2),
    "correlation": (2, 30, 3),
    "ratio": (2, None, 0),
    "moving_average": (1, 30, 1),
}
DERIVED_MAX_WINDOW = 2000

# The unit a reader expects a change in, by KPI type (overridable per KPI: `changeUnit`).
DEFAULT_CHANGE_UNITS: dict[str, str] = {
    "price": "pct",
    "market_cap": "pct",
    "supply": "pct",
    "volume": "pct",
    "ratio": "pct",
    "dominance": "pp",
    "rate": "pp",
    "yield": "pp",
    "index": "points",
}

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


class DerivedParams(_Model):
    """The typed `params` of a `derived` source: an op over the stored series of its inputs.

    One-input ops name `input`; `correlation` and `ratio` name `inputs: [a, b]` (a ratio is
    a / b). `window` counts the input's observations, except for `drawdown`, whose window is
    calendar days (the high of the last 365 days). docs/user-guide.md gives the formulas.
    """

    op: DerivedOp
    inputs: tuple[str, ...]
    window: int | None = None

    @property
    def size(self) -> int:
        """The window, or the op's default."""
        return self.window if self.window is not None else (DERIVED_SHAPES[self.op][1] or 0)


def _derived_params(
    params: Mapping[str, Any],
) -> tuple[DerivedParams | None, list[tuple[str, str]]]:
    """Parse a derived source's params: (the params, or None; [(field, problem)])."""
    problems: list[tuple[str, str]] = []
    op = params.get("op")
    if op not in DERIVED_OPS:
        known = ", ".join(DERIVED_OPS)
        what = "missing" if op is None else f"unknown op {op!r}"
        return None, [("source.params.op", f"{what}; known ops: {known}")]
    count, default_window, least = DERIVED_SHAPES[op]
    for name in sorted(set(params) - {"op", "input", "inputs", "window"}):
        problems.append((f"source.params.{name}", f"unknown parameter for op {op!r}"))
    inputs: tuple[str, ...] = ()
    if count == 1:
        if "inputs" in params:
            problems.append(("source.params.inputs", f"op {op!r} takes one 'input', not 'inputs'"))
        value = params.get("input")
        if not isinstance(value, str) or not value:
            problems.append(("source.params.input", f"op {op!r} needs 'input': a KPI id"))
        else:
            inputs = (value,)
    else:
        if "input" in params:
            problems.append(("source.params.input", f"op {op!r} takes 'inputs: [a, b]'"))
        value = params.get("inputs")
        if (
            not isinstance(value, list | tuple)
            or len(value) != count
            or not all(isinstance(v, str) and v for v in value)
        ):
            problems.append(
                ("source.params.inputs", f"op {op!r} needs 'inputs': a list of {count} KPI ids")
            )
        else:
            inputs = tuple(value)
            if len(set(inputs)) != len(inputs):
                problems.append(("source.params.inputs", "the two inputs must differ"))
    window = params.get("window")
    if default_window is None:
        if window is not None:
            problems.append(("source.params.window", f"op {op!r} takes no window"))
            window = None
    elif window is not None and (
        isinstance(window, bool)
        or not isinstance(window, int)
        or not least <= window <= DERIVED_MAX_WINDOW
    ):
        problems.append(
            (
                "source.params.window",
                f"must be a whole number from {least} to {DERIVED_MAX_WINDOW}, got {window!r}",
            )
        )
        window = None
    if problems:
        return None, problems
    return DerivedParams(op=op, inputs=inputs, window=window), []


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


class CalendarSpec(_Model):
    """When the KPI has an observation: every day, business days, one weekday, or monthly.

    Written as a string (`business_days`) or a mapping (`{kind: weekly, weekday: wednesday}`).
    """

    kind: CalendarKind = "daily"
    weekday: Weekday = "monday"
    day: int = Field(default=1, ge=1, le=28)
    """Day of the month of a monthly observation (FRED dates monthly series on the 1st)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class CheckSpec(_Model):
    """Bounds and sensitivities of the KPI's asset check (defaults come from its type)."""

    min: float | None = None
    max: float | None = None
    stale_days: int | None = Field(default=None, alias="staleDays", ge=0)
    """The same value this many observations running is stale (0: never; default by type)."""
    jump_sigma: float = Field(default=5.0, alias="jumpSigma", gt=0)
    """A change beyond this many standard deviations of the last 30 changes is a jump."""

    @model_validator(mode="after")
    def _ordered(self) -> CheckSpec:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


_THRESHOLD_KINDS = frozenset({"above", "below", "crossing", "change", "zscore"})


class AlertRule(_Model):
    """One alert rule of a KPI; see docs/alerts.md for what each kind means."""

    kind: AlertKind
    id: str | None = None
    threshold: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    direction: Literal["up", "down", "both"] = "both"
    days: int = Field(default=1, ge=1, le=365)
    """Horizon of a `change` rule, in days."""
    window: int = Field(default=90, ge=10, le=1000)
    """Observations a `zscore` rule measures the day's change against."""
    cooldown_days: int = Field(default=0, alias="cooldownDays", ge=0, le=365)
    """After the rule fired, it stays quiet for this many days."""

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        if self.kind in _THRESHOLD_KINDS and self.threshold is None:
            raise ValueError(f"a {self.kind!r} rule needs a 'threshold'")
        if self.kind == "no_data" and self.threshold is not None:
            raise ValueError("a 'no_data' rule takes no 'threshold'")
        if self.kind in ("change", "zscore") and self.threshold is not None and self.threshold <= 0:
            raise ValueError(f"a {self.kind!r} rule's threshold must be above 0")
        if self.id is not None and not _ID_RE.match(self.id):
            raise ValueError(f"rule id must be lowercase letters, digits and '_', got {self.id!r}")
        return self

    @property
    def name(self) -> str:
        """A stable name for the rule: its `id`, else kind and parameters."""
        if self.id:
            return self.id
        if self.kind == "no_data":
            return "no_data"
        number = f"{self.threshold:g}".replace("-", "m").replace(".", "_")
        if self.kind == "change":
            return f"change_{self.days}d_{number}"
        return f"{self.kind}_{number}"


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
    calendar: CalendarSpec = Field(default_factory=CalendarSpec)
    change_unit_override: ChangeUnit | None = Field(default=None, alias="changeUnit")
    history_days: int | None = Field(default=None, alias="historyDays", ge=0)
    """How many past days the source can give (None: the source kind's own limit)."""
    publication_lag_days: int = Field(default=0, alias="publicationLagDays", ge=0, le=60)
    """Days after which a day's observation is published (FRED's daily series: 2 or more).
    A more recent day is an expected gap; the daily schedule fetches the day that lag back."""
    checks: CheckSpec = Field(default_factory=CheckSpec)
    alerts: tuple[AlertRule, ...] = ()

    @model_validator(mode="after")
    def _unique_rules(self) -> KpiSpec:
        names = [rule.name for rule in self.alerts]
        for number, name in enumerate(names, start=1):
            if names.index(name) != number - 1:
                raise ValueError(
                    f"alert rule #{number} is named {name!r} like rule #{names.index(name) + 1}; "
                    "give one of them an 'id'"
                )
        return self

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

    @property
    def is_derived(self) -> bool:
        return self.source.kind == "derived"

    @property
    def derived(self) -> DerivedParams:
        """The derived source's typed params (the registry validated them at load)."""
        params, problems = _derived_params(self.source.params)
        if params is None:
            raise RegistryError(f"KPI {self.id!r}: {problems[0][0]}: {problems[0][1]}")
        return params

    @property
    def change_unit(self) -> str:
        """The unit its changes are shown in: the registry's `changeUnit`, else by type."""
        return self.change_unit_override or DEFAULT_CHANGE_UNITS[self.type]

    def is_enabled(self, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
        """Active in the registry and, where it needs a key, the key is configured."""
        env = os.environ if environ is None else environ
        return self.active and (self.requires_env is None or bool(env.get(self.requires_env)))


class NewsSpec(_Model):
    """The registry's news feeds (`news: {feeds: [...]}`); DAILY_INDEX_NEWS_FEEDS adds more."""

    feeds: tuple[str, ...] = ()

    @field_validator("feeds")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for number, url in enumerate(value, start=1):
            scheme, _, rest = url.strip().partition("://")
            if scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
                raise ValueError(f"feed {number} ({url[:80]!r}) is not an http(s) URL")
        return tuple(url.strip() for url in value)


class Registry(_Model):
    version: int
    kpis: tuple[KpiSpec, ...]
    news: NewsSpec = Field(default_factory=NewsSpec)

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
        problems = _derived_problems(self.kpis)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def get(self, kpi_id: str) -> KpiSpec:
        for kpi in self.kpis:
            if kpi.id == kpi_id:
                return kpi
        raise KeyError(f"no KPI {kpi_id!r} in the registry")

    def enabled(self, environ: dict[str, str] | None = None) -> list[KpiSpec]:
        """The KPIs enabled here; a derived KPI only when every input is enabled too."""
        on = {k.id for k in self.kpis if k.is_enabled(environ)}
        for kpi in derived_order(self.kpis):
            if kpi.id in on and not all(i in on for i in kpi.derived.inputs):
                on.discard(kpi.id)
        return [k for k in self.kpis if k.id in on]


def derived_order(kpis: tuple[KpiSpec, ...] | list[KpiSpec]) -> list[KpiSpec]:
    """The derived KPIs among `kpis`, each after the derived KPIs it is computed from."""
    derived = {k.id: k for k in kpis if k.is_derived}
    ordered: list[KpiSpec] = []
    placed: set[str] = set()

    def place(kpi: KpiSpec) -> None:
        if kpi.id in placed:
            return
        placed.add(kpi.id)  # the registry refused cycles, so marking first is enough
        for name in kpi.derived.inputs:
            if name in derived:
                place(derived[name])
        ordered.append(kpi)

    for kpi in derived.values():
        place(kpi)
    return ordered


def _derived_problems(kpis: tuple[KpiSpec, ...]) -> list[str]:
    """Every problem of the derived KPIs: params, unknown inputs, cycles, publication lags."""
    problems: list[str] = []
    by_id = {k.id: k for k in kpis}
    graph: dict[str, tuple[str, ...]] = {}
    for kpi in kpis:
        if not kpi.is_derived:
            continue
        params, found = _derived_params(kpi.source.params)
        problems.extend(f"KPI {kpi.id!r}, field {field!r}: {what}" for field, what in found)
        if params is None:
            continue
        field = "source.params.input" if len(params.inputs) == 1 else "source.params.inputs"
        for name in params.inputs:
            if name == kpi.id:
                problems.append(f"KPI {kpi.id!r}, field {field!r}: a KPI cannot derive from itself")
            elif name not in by_id:
                problems.append(f"KPI {kpi.id!r}, field {field!r}: unknown KPI {name!r}")
            elif by_id[name].publication_lag_days > kpi.publication_lag_days:
                lag = by_id[name].publication_lag_days
                problems.append(
                    f"KPI {kpi.id!r}, field 'publicationLagDays': must be at least {lag}, the "
                    f"lag of its input {name!r} (else its inputs are never there when it is "
                    "computed)"
                )
        graph[kpi.id] = tuple(n for n in params.inputs if n != kpi.id)
    reported: set[str] = set()
    for start in graph:
        path = [start]
        cycle = _find_cycle(graph, path, set())
        if cycle and not reported & set(cycle):
            reported.update(cycle)
            chain = " -> ".join([*cycle, cycle[0]])
            field = "source.params.input" if len(graph[cycle[0]]) == 1 else "source.params.inputs"
            problems.append(
                f"KPI {cycle[0]!r}, field {field!r}: derived KPIs form a cycle: {chain}"
            )
    return problems


def _find_cycle(graph: dict[str, tuple[str, ...]], path: list[str], done: set[str]) -> list[str]:
    """A cycle through the last KPI of `path` (depth-first), or []."""
    for name in graph.get(path[-1], ()):
        if name in path:
            return path[path.index(name) :]
        if name in done or name not in graph:
            continue
        found = _find_cycle(graph, [*path, name], done)
        if found:
            return found
        done.add(name)
    return []


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
        rest = loc[2:]
        rule = ""
        if len(rest) >= 2 and rest[0] == "alerts" and isinstance(rest[1], int):
            try:
                kind = raw["kpis"][index]["alerts"][rest[1]].get("kind", "?")
            except (KeyError, IndexError, TypeError, AttributeError):
                kind = "?"
            rule = f", alert rule #{rest[1] + 1} ({kind})"
            rest = rest[2:]
        field = ".".join(str(p) for p in rest) or "(entry)"
        return f"KPI {kpi_id!r}{rule}, field {field!r}"
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
        problems = []
        for err in exc.errors():
            if not err["loc"] and err["type"] == "value_error":
                # Registry-wide problems already name their KPI and field, one per line.
                text = str(err["msg"]).removeprefix("Value error, ")
                problems.extend(f"{source}: {line}" for line in text.splitlines())
            else:
                problems.append(
                    f"{source}: {_describe_location(raw, tuple(err['loc']))}: {err['msg']}"
                )
        raise RegistryError("\n".join(problems)) from None


def load_registry(path: Path | str | None = None) -> Registry:
    """Load and validate a registry file (default: the one in use), UTF-8 with or without BOM."""
    file = Path(path) if path is not None else registry_path()
    try:
        text = read_utf8(file, what="KPI registry")
    except InputFileError as exc:
        raise RegistryError(str(exc)) from None
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
