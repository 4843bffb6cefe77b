"""docker-compose.yml, parsed (this machine kind has no Docker engine).

The services, pinned images, health checks, and every setting the code reads named in
.env.example and in the README's tables.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daily_index.defs.resources import BASE_URL_ENV
from daily_index.sources.base import DEFAULT_RATE_LIMITS, rate_limit_env

REPO = Path(__file__).resolve().parents[2]
# A literal variable name; an f-string prefix such as `DAILY_INDEX_RATE_LIMIT_{...}` is not one
# (its names are listed from the code below).
NAME = re.compile(r"\b(DAILY_INDEX_[A-Z0-9_]*[A-Z0-9]|DAGSTER_PG_[A-Z0-9_]*[A-Z0-9])\b")
SERVICES = {"postgres", "minio", "minio-init", "code", "webserver", "daemon", "n8n"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def names_read_by_the_code() -> set[str]:
    names = set()
    for path in (REPO / "daily_index").rglob("*.py"):
        names |= set(NAME.findall(path.read_text(encoding="utf-8")))
    for path in [REPO / "dagster.yaml", *(REPO / "deploy").glob("*.yaml")]:
        names |= set(NAME.findall(path.read_text(encoding="utf-8")))
    names |= set(BASE_URL_ENV.values())
    names |= {rate_limit_env(family) for family in DEFAULT_RATE_LIMITS}
    return names


def env_example_names() -> set[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def readme_table_text() -> str:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))


def documented_in_readme(name: str, tables: str) -> bool:
    if name in tables:
        return True
    # Families documented once as a pattern: `DAILY_INDEX_RATE_LIMIT_<FAMILY>` (`COINGECKO`, ...).
    for row in tables.splitlines():
        for prefix in re.findall(r"`([A-Z0-9_]+_)<[A-Z]+>`", row):
            if name.startswith(prefix) and f"`{name.removeprefix(prefix)}`" in row:
                return True
    return False


def test_every_service_is_there(compose: dict) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_image_is_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue  # built from this repository's Dockerfile
        image = service["image"]
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} names no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_long_running_services_have_health_checks(compose: dict) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue  # a one-shot job (the bucket)
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_dagster_services_share_the_postgres_instance(compose: dict) -> None:
    for name in ("code", "webserver", "daemon"):
        env = compose["services"][name]["environment"]
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB"} <= set(
            env
        )
        assert env["DAGSTER_HOME"] == "/opt/dagster/home"
    workspace = yaml.safe_load((REPO / "workspace.docker.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    code = compose["services"]["code"]["command"]
    assert f"-p {server['port']}" in code and f"--location-name {server['location_name']}" in code
    assert server["host"] == "code"


def test_every_variable_of_the_compose_file_is_in_env_example() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert used, "the compose file reads no variable: the pattern is wrong"
    assert sorted(used - env_example_names()) == []


def test_every_variable_read_by_the_code_is_documented() -> None:
    names = names_read_by_the_code()
    assert {"DAILY_INDEX_STORAGE", "DAGSTER_PG_HOST", "DAILY_INDEX_COINGECKO_URL"} <= names
    assert sorted(names - env_example_names()) == [], "missing from .env.example"
    tables = readme_table_text()
    assert [n for n in sorted(names) if not documented_in_readme(n, tables)] == [], (
        "missing from the README's tables"
    )
