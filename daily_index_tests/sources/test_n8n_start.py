"""The n8n source against an imitation of n8n on 127.0.0.1: start-up, concurrency, timeouts.

The imitation behaves as n8n 2.40.7 was measured to: `/healthz` up at once, webhooks 404
"not registered" for a while, then 503, then answering. Every assertion counts requests and
outcomes; none measures wall-clock time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import pytest

from daily_index.contract import KPIDataUpdate, KPIErrorUpdate
from daily_index.defs.resources import ConfigurationError, sources_from_env
from daily_index.registry import KpiSpec
from daily_index.sources import FetchOutcome, SourceSettings, fetch_all
from daily_index_tests.conftest import closed_port
from daily_index_tests.n8n_imitation import N8nImitation, workflow
from daily_index_tests.sources.support import N8N_HEADER, N8N_SECRET, request, spec


@functools.cache
def _bundled_n8n_kpi() -> dict:
    return spec("usdt_dominance").model_dump(by_alias=True)


def n8n_kpi(i: int, path: str | None = None) -> KpiSpec:
    raw = _bundled_n8n_kpi() | {
        "id": f"n8n_kpi_{i}",
        "name": f"n8n KPI {i}",
        "source": {"kind": "n8n", "params": {"webhook": path or f"kpi/k{i}"}},
    }
    return KpiSpec.model_validate(raw)


def workflows(n: int) -> list[dict]:
    return [workflow(f"wf{i}", f"KPI {i}", [f"kpi/k{i}"]) for i in range(n)]


def n8n_settings(n8n: N8nImitation | str, **changes) -> SourceSettings:
    base = n8n if isinstance(n8n, str) else n8n.url
    fast = SourceSettings(
        n8n_base_url=base,
        n8n_auth_header=N8N_HEADER,
        n8n_auth_value=N8N_SECRET,
        max_attempts=3,
        backoff_base_s=0.02,
        backoff_max_s=0.2,
        n8n_ready_wait_s=20.0,
        n8n_timeout_s=5.0,
    )
    return dataclasses.replace(fast, **changes)


def run(settings: SourceSettings, kpis: list[KpiSpec]) -> list[FetchOutcome]:
    return fetch_all([request(k, trace=f"t-{k.id}") for k in kpis], settings)


def errors(outcomes: list[FetchOutcome]) -> list[KPIErrorUpdate]:
    return [o.update for o in outcomes if isinstance(o.update, KPIErrorUpdate)]


@pytest.fixture
def starting() -> Iterator[N8nImitation]:
    """An n8n just started: webhooks not registered for 0.6 s, then 503 for 0.4 s."""
    with N8nImitation(workflows(32), not_registered_s=0.6, unavailable_s=0.4) as n8n:
        yield n8n


def test_a_run_during_n8n_start_up_waits_and_gets_every_value(starting):
    kpis = [n8n_kpi(i) for i in range(32)]
    outcomes = run(n8n_settings(starting), kpis)
    assert not errors(outcomes), errors(outcomes)[0]
    assert all(o.update.value == 1.5 for o in outcomes)
    # Both start-up answers were seen, and retried ...
    assert starting.statuses[404] >= 1 and starting.statuses[503] >= 1, starting.statuses
    # ... by probes one at a time, not by every KPI: each workflow ran exactly once.
    assert starting.statuses[404] + starting.statuses[503] < len(kpis)
    assert starting.executions == {f"kpi/k{i}": 1 for i in range(32)}
    assert starting.statuses[200] == 32


def test_a_database_still_migrating_is_waited_for():
    with N8nImitation(workflows(4), migrating_s=0.5) as n8n:
        outcomes = run(n8n_settings(n8n), [n8n_kpi(i) for i in range(4)])
        assert not errors(outcomes), errors(outcomes)[0]
        assert n8n.health_checks >= 1  # asked once the webhook said "starting up"
        assert n8n.executions == {f"kpi/k{i}": 1 for i in range(4)}


def test_a_running_n8n_costs_no_health_check_and_no_retry():
    with N8nImitation(workflows(8)) as n8n:
        outcomes = run(n8n_settings(n8n), [n8n_kpi(i) for i in range(8)])
        assert not errors(outcomes)
        assert n8n.health_checks == 0
        assert sum(n8n.posts.values()) == 8


def test_still_not_registered_after_the_ready_wait_fails_with_the_reason():
    with N8nImitation(workflows(3), not_registered_s=3600) as n8n:
        settings = n8n_settings(n8n, n8n_ready_wait_s=0.5)
        outcomes = run(settings, [n8n_kpi(i) for i in range(3)])
        failed = errors(outcomes)
        assert len(failed) == 3
        for update in failed:
            assert update.error_code == "n8n_not_registered" and update.retryable
            assert 'The requested webhook "POST kpi/k' in update.error
            assert "DAILY_INDEX_N8N_READY_WAIT_S=0.5" in update.error
            assert "daily-index n8n status" in update.error
        assert not n8n.executions
        # Backoff bounds the requests: 3 KPIs within 0.5 s, not a busy loop.
        assert sum(n8n.posts.values()) < 60


def test_the_start_up_wait_stays_within_the_fetch_budget():
    with N8nImitation(workflows(2), not_registered_s=3600) as n8n:
        settings = n8n_settings(n8n, n8n_ready_wait_s=600, fetch_budget_s=0.5)
        failed = errors(run(settings, [n8n_kpi(0), n8n_kpi(1)]))
        assert len(failed) == 2
        assert all("DAILY_INDEX_FETCH_BUDGET_S" in u.error for u in failed), failed[0].error


@pytest.mark.parametrize("first", [False, True], ids=["missing-last", "missing-probes-first"])
def test_a_missing_workflow_on_a_running_n8n_fails_at_once(first):
    with N8nImitation(workflows(3)) as n8n:
        kpis = [n8n_kpi(0), n8n_kpi(1), n8n_kpi(2)]
        missing = n8n_kpi(9, "kpi/missing")
        kpis = [missing, *kpis] if first else [*kpis, missing]
        outcomes = run(n8n_settings(n8n), kpis)
        (failed,) = errors(outcomes)
        assert failed.kpi_id == "n8n_kpi_9" and failed.error_code == "n8n_not_registered"
        assert not failed.retryable and "was still starting" not in failed.error
        assert n8n.posts["kpi/missing"] <= 2  # at most once as a probe, once after


@pytest.mark.parametrize(
    "message",
    [
        "This webhook is not registered for POST requests. Did you mean to make a GET request?",
        "Cannot POST /webhook/kpi/k0",
    ],
    ids=["method-mismatch", "plain-404"],
)
def test_no_other_404_is_retried_even_during_start_up(message):
    def answer(trigger, headers):
        return 404, {"code": 404, "message": message}

    with N8nImitation(workflows(1), unavailable_s=0.3, answer=answer) as n8n:
        (outcome,) = run(n8n_settings(n8n), [n8n_kpi(0)])
        update = outcome.update
        assert isinstance(update, KPIErrorUpdate)
        assert update.error_code == "http_error" and "HTTP 404" in update.error
        assert message in update.error
        assert n8n.statuses[404] == 1  # the 503s before it were retried; the 404 was not


def test_32_kpis_never_have_more_than_8_requests_in_flight():
    with N8nImitation(workflows(32), latency_s=0.1) as n8n:
        settings = n8n_settings(n8n, concurrency=32)
        assert settings.concurrency_of("n8n") == 8  # the default
        outcomes = run(settings, [n8n_kpi(i) for i in range(32)])
        assert not errors(outcomes)
        assert n8n.max_in_flight == 8
        assert sum(n8n.executions.values()) == 32


def test_the_n8n_concurrency_comes_from_the_environment():
    with N8nImitation(workflows(12), latency_s=0.1) as n8n:
        env = {"DAILY_INDEX_N8N_BASE_URL": n8n.url, "DAILY_INDEX_N8N_CONCURRENCY": "3"}
        settings = sources_from_env(env).settings()
        outcomes = run(settings, [n8n_kpi(i) for i in range(12)])
        assert not errors(outcomes)
        assert n8n.max_in_flight == 3


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DAILY_INDEX_N8N_CONCURRENCY", "0"),
        ("DAILY_INDEX_N8N_CONCURRENCY", "eight"),
        ("DAILY_INDEX_N8N_TIMEOUT_S", "0"),
        ("DAILY_INDEX_N8N_READY_WAIT_S", "-1"),
    ],
)
def test_bad_n8n_settings_name_the_variable(name, raw):
    with pytest.raises(ConfigurationError, match=name):
        sources_from_env({name: raw})


def test_a_timed_out_trigger_is_not_sent_again():
    with N8nImitation(workflows(1), latency_s=1.0) as n8n:
        settings = n8n_settings(n8n, n8n_timeout_s=0.3, timeout_s=10.0)
        (outcome,) = run(settings, [n8n_kpi(0)])
        update = outcome.update
        assert isinstance(update, KPIErrorUpdate) and update.error_code == "timeout"
        assert "timed out after 0.3 s" in update.error and "not sent again" in update.error
        assert n8n.posts["kpi/k0"] == 1


def test_an_unreachable_n8n_fails_every_kpi_after_the_ready_wait():
    settings = n8n_settings(f"http://127.0.0.1:{closed_port()}", n8n_ready_wait_s=1.5)
    outcomes = run(settings, [n8n_kpi(i) for i in range(20)])
    failed = errors(outcomes)
    assert len(failed) == 20
    assert all(u.error_code == "n8n_not_ready" and u.retryable for u in failed), failed[0]
    assert "health check still failed" in failed[0].error
    assert "DAILY_INDEX_N8N_READY_WAIT_S=1.5" in failed[0].error
    # One probe found n8n down; the others learnt it from the shared health check.
    assert sum(o.attempts for o in outcomes) <= settings.max_attempts


def test_no_wait_configured_means_no_retry():
    with N8nImitation(workflows(2), not_registered_s=3600) as n8n:
        outcomes = run(n8n_settings(n8n, n8n_ready_wait_s=0), [n8n_kpi(0), n8n_kpi(1)])
        assert [u.error_code for u in errors(outcomes)] == ["n8n_not_registered"] * 2
        assert sum(n8n.posts.values()) == 2 and n8n.health_checks == 0


def test_the_trigger_carries_the_auth_header_and_a_value_lands(starting):
    seen: list[dict[str, str]] = []

    def answer(trigger, headers):
        seen.append(headers)
        return 200, {**trigger, "schemaVersion": 2, "value": 2.5, "metadata": {}}

    starting.answer = answer
    (outcome,) = run(n8n_settings(starting), [n8n_kpi(0)])
    assert isinstance(outcome.update, KPIDataUpdate) and outcome.update.value == 2.5
    assert [h[N8N_HEADER.lower()] for h in seen] == [N8N_SECRET]
