"""The KPI registry: the bundled file is valid; broken files name file, KPI and field."""

from __future__ import annotations

import codecs

import pytest
import yaml

from daily_index.registry import (
    RegistryError,
    default_registry_path,
    load_registry,
    parse_registry,
)

GOOD_KPI = {
    "id": "btc_price",
    "name": "Bitcoin price",
    "description": "Spot price of one bitcoin in US dollars.",
    "type": "price",
    "unit": "USD",
    "source": {"kind": "coingecko_price", "params": {"coin": "bitcoin"}},
    "analysisConfig": {"chartType": "line", "alertThresholds": {"high": 2, "low": 1}},
    "metadata": {"source": "CoinGecko", "category": "crypto_prices"},
}


def registry_text(*kpis: dict, version: object = 1) -> str:
    return yaml.safe_dump({"version": version, "kpis": list(kpis)}, sort_keys=False)


def kpi(**changes) -> dict:
    entry = {**GOOD_KPI, **changes}
    return {k: v for k, v in entry.items() if v is not None}


def test_bundled_registry_is_valid():
    registry = load_registry(default_registry_path())
    assert len(registry.kpis) >= 12
    assert len({k.id for k in registry.kpis}) == len(registry.kpis)
    for spec in registry.kpis:
        assert spec.asset_path == ["kpi", spec.id]
        assert spec.group == spec.metadata.category


def test_fred_kpis_need_their_key():
    registry = load_registry(default_registry_path())
    fred = [k.id for k in registry.kpis if k.source.kind == "fred"]
    assert fred
    without_key = {k.id for k in registry.enabled({})}
    assert len(without_key) >= 12
    assert not without_key & set(fred)
    with_key = {k.id for k in registry.enabled({"FRED_API_KEY": "k"})}
    assert set(fred) <= with_key


def test_minimal_registry_parses():
    registry = parse_registry(registry_text(kpi()), source="kpis.yaml")
    assert registry.get("btc_price").analysis_config.alert_thresholds.low == 1
    with pytest.raises(KeyError):
        registry.get("nope")


@pytest.mark.parametrize(
    ("text", "kpi_id", "field"),
    [
        pytest.param(registry_text(kpi(), kpi(name="Other")), "btc_price", "id", id="duplicate-id"),
        pytest.param(registry_text(kpi(id="BTC-Price")), "BTC-Price", "id", id="bad-id"),
        pytest.param(
            registry_text(kpi(source={"kind": "yahoo"})),
            "btc_price",
            "source.kind",
            id="unknown-source-kind",
        ),
        pytest.param(
            registry_text(kpi(analysisConfig={"alertThresholds": {"high": 1, "low": 1}})),
            "btc_price",
            "alertThresholds",
            id="low-not-below-high",
        ),
        pytest.param(registry_text(kpi(colour="red")), "btc_price", "colour", id="unknown-field"),
        pytest.param(registry_text(kpi(type="stock")), "btc_price", "type", id="unknown-type"),
        pytest.param(registry_text(kpi(name=None)), "btc_price", "name", id="missing-field"),
        pytest.param(
            registry_text(kpi(metadata={"source": "x", "category": "Crypto Prices"})),
            "btc_price",
            "metadata.category",
            id="bad-category",
        ),
    ],
)
def test_broken_kpi_names_file_kpi_and_field(text, kpi_id, field):
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, source="/etc/daily-index/kpis.yaml")
    message = str(caught.value)
    assert "/etc/daily-index/kpis.yaml" in message
    assert repr(kpi_id) in message, message
    assert f"{field}'" in message, message  # the field, quoted as a path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("version: 1\nkpis: [\n  - id: x\n", ["not valid YAML", "line"], id="bad-yaml"),
        pytest.param(registry_text(kpi(), version=2), ["'version'", "not supported"], id="version"),
        pytest.param("", ["expected a mapping"], id="empty"),
        pytest.param("version: 1\n", ["'kpis'"], id="no-kpis"),
    ],
)
def test_broken_registry_names_file_and_problem(text, words):
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, source="custom.yaml")
    message = str(caught.value)
    assert message.startswith("custom.yaml: ")
    for word in words:
        assert word in message, message


def test_missing_file_is_a_registry_error(tmp_path):
    with pytest.raises(RegistryError, match="missing.yaml"):
        load_registry(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("rules", "rule", "field"),
    [
        pytest.param(
            [{"kind": "zscroe", "threshold": 3}], "#1 (zscroe)", "kind", id="unknown-kind"
        ),
        pytest.param(
            [{"kind": "above", "threshold": 1}, {"kind": "above", "threshold": "high"}],
            "#2 (above)",
            "threshold",
            id="wrong-type",
        ),
        pytest.param([{"kind": "crossing"}], "#1 (crossing)", "(entry)", id="no-threshold"),
        pytest.param(
            [{"kind": "change", "threshold": 5, "days": 0}], "#1 (change)", "days", id="bad-days"
        ),
        pytest.param(
            [{"kind": "below", "threshold": 1, "colour": "red"}],
            "#1 (below)",
            "colour",
            id="unknown-field",
        ),
    ],
)
def test_broken_alert_rule_names_file_kpi_rule_and_field(rules, rule, field):
    with pytest.raises(RegistryError) as caught:
        parse_registry(registry_text(kpi(alerts=rules)), source="kpis.yaml")
    message = str(caught.value)
    assert message.startswith("kpis.yaml: KPI 'btc_price', alert rule " + rule), message
    assert f"field '{field}'" in message, message


def test_two_rules_with_the_same_name_need_an_id():
    rules = [{"kind": "above", "threshold": 1}, {"kind": "above", "threshold": 1}]
    with pytest.raises(RegistryError, match="give one of them an 'id'"):
        parse_registry(registry_text(kpi(alerts=rules)), source="kpis.yaml")
    rules[1]["id"] = "above_again"
    parsed = parse_registry(registry_text(kpi(alerts=rules)), source="kpis.yaml")
    assert [r.name for r in parsed.kpis[0].alerts] == ["above_1", "above_again"]


@pytest.mark.parametrize(
    ("changes", "unit"),
    [
        pytest.param({}, "pct", id="price-percent"),
        pytest.param({"type": "dominance", "unit": "%"}, "pp", id="dominance-points"),
        pytest.param({"type": "rate", "unit": "%"}, "pp", id="rate-points"),
        pytest.param({"type": "rate", "unit": "%", "changeUnit": "bp"}, "bp", id="override-bp"),
        pytest.param({"type": "index", "unit": "points"}, "points", id="index"),
    ],
)
def test_change_unit_by_type_and_override(changes, unit):
    parsed = parse_registry(registry_text(kpi(**changes)), source="kpis.yaml")
    assert parsed.kpis[0].change_unit == unit


@pytest.mark.parametrize(
    ("calendar", "kind", "weekday"),
    [
        ("business_days", "business_days", "monday"),
        ({"kind": "weekly", "weekday": "wednesday"}, "weekly", "wednesday"),
    ],
)
def test_calendar_as_string_or_mapping(calendar, kind, weekday):
    parsed = parse_registry(registry_text(kpi(calendar=calendar)), source="kpis.yaml")
    assert (parsed.kpis[0].calendar.kind, parsed.kpis[0].calendar.weekday) == (kind, weekday)


def test_unknown_calendar_names_the_field():
    with pytest.raises(RegistryError, match=r"KPI 'btc_price', field 'calendar.kind'"):
        parse_registry(registry_text(kpi(calendar="hourly")), source="kpis.yaml")


NAMED = registry_text(kpi(name="Bitcoin price — spot, €-free"))


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_utf8_registry_with_or_without_bom_loads(tmp_path, bom):
    path = tmp_path / "kpis.yaml"
    path.write_bytes(bom + NAMED.encode("utf-8"))
    assert load_registry(path).get("btc_price").name == "Bitcoin price — spot, €-free"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (NAMED.encode("utf-16"), "UTF-16 (little-endian, with a byte-order mark)"),
        (NAMED.encode("utf-16-be"), "UTF-16 without a byte-order mark"),
        (NAMED.encode("utf-32"), "UTF-32"),
        ("version: 1\nkpis: []\n# café\n".encode("latin-1"), "byte 0xe9 at line 3, column 6"),
        (bytes(range(256)) * 4, "binary"),
    ],
)
def test_registry_in_another_encoding_names_file_and_problem(tmp_path, data, problem):
    path = tmp_path / "kpis.yaml"
    path.write_bytes(data)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    assert "UTF-8" in str(info.value) or "binary" in str(info.value)
