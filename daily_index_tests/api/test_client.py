"""The Python client against a running read API on 127.0.0.1 (retries included)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from daily_index.client import (
    AuthenticationError,
    DailyIndexClient,
    InvalidRequestError,
    KpiInfo,
    NotFoundError,
    RateLimitedError,
    Retry,
    ServerError,
)
from daily_index.storage.series import series_key
from daily_index_tests.api.support import (
    AMENDED_PDF,
    KEY,
    MISSING_DAY,
    PDF,
    REPORT_DAY,
    btc_values,
    fear_greed_values,
    serve,
)
from daily_index_tests.conftest import closed_port


def expected(values: dict[date, float], name: str) -> pd.Series:
    index = pd.DatetimeIndex(pd.to_datetime(sorted(values)), name="date").as_unit("ns")
    return pd.Series([values[d] for d in sorted(values)], index=index, name=name, dtype="float64")


def test_kpis_are_typed(api):
    with DailyIndexClient(api.url, KEY) as client:
        kpis = client.kpis()
    assert [k.id for k in kpis] == ["btc_price", "fear_greed", "eth_btc"]
    assert kpis[0] == KpiInfo(
        id="btc_price",
        name="Bitcoin price",
        unit="USD",
        type="price",
        category="crypto_prices",
        description="Spot price of one bitcoin in US dollars.",
        active=True,
        first_day=date(2026, 1, 1),
        last_day=date(2026, 3, 31),
        observations=89,
    )
    assert kpis[2].first_day is None


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_series_equal_the_stored_values_in_every_format(api, fmt):
    with DailyIndexClient(api.url, KEY) as client:
        btc = client.series("btc_price", format=fmt)
        window = client.series("fear_greed", "2026-01-01", date(2026, 1, 31), format=fmt)
        with_gaps = client.series("btc_price", "2026-01-05", "2026-01-07", format=fmt, dropna=False)
    pd.testing.assert_series_equal(btc, expected(btc_values(), "btc_price"), check_freq=False)
    assert btc.attrs["unit"] == "USD"
    in_january = {d: v for d, v in fear_greed_values().items() if d.month == 1}
    pd.testing.assert_series_equal(window, expected(in_january, "fear_greed"), check_freq=False)
    assert window.attrs["unit"] == ""
    assert list(with_gaps.index.date) == [date(2026, 1, 5), MISSING_DAY, date(2026, 1, 7)]
    assert pd.isna(with_gaps[pd.Timestamp(MISSING_DAY)])
    assert (with_gaps.dropna() != 0).all()


def test_report_bytes(api):
    with DailyIndexClient(api.url, KEY) as client:
        assert client.report(REPORT_DAY) == PDF
        assert client.report(REPORT_DAY, edition="amended") == AMENDED_PDF
        with pytest.raises(NotFoundError, match="no report is stored for 2026-03-01"):
            client.report("2026-03-01")


def test_errors_are_clear_and_never_carry_the_key(api):
    wrong = "wrong-key-but-long-enough-123"
    with DailyIndexClient(api.url, wrong) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.kpis()
    assert refused.value.status == 401
    assert "GET /v1/kpis: HTTP 401" in str(refused.value)
    assert wrong not in str(refused.value) and wrong not in repr(client)
    with DailyIndexClient(api.url, KEY) as client:
        with pytest.raises(NotFoundError, match="no KPI with this id"):
            client.series("no_such_kpi")
        with pytest.raises(InvalidRequestError, match=r"from \(2026-02-01\) is after to"):
            client.series("btc_price", "2026-02-01", "2026-01-01")
        with pytest.raises(ValueError, match="start: expected a date as YYYY-MM-DD"):
            client.series("btc_price", "yesterday")
    assert KEY not in repr(client)


def test_429_is_retried_after_retry_after(fresh_store, registry_env):
    """A tiny limit (1 request per second): the second call waits and then succeeds."""
    with serve(fresh_store, registry_env, rate_limit=1, rate_window_s=1) as api:
        with DailyIndexClient(api.url, KEY, max_attempts=4, max_wait_s=5) as client:
            assert client.health()["status"] == "ok"
            btc = client.series("btc_price")
    assert len(btc) == len(btc_values())
    assert [r.status for r in client.retries][:1] == [429]
    assert client.retries[0].wait_s >= 1  # what Retry-After asked for


def test_a_retry_after_beyond_max_wait_fails_at_once(fresh_store, registry_env):
    with serve(fresh_store, registry_env, rate_limit=1, rate_window_s=600) as api:
        with DailyIndexClient(api.url, KEY, max_wait_s=2) as client:
            client.health()
            with pytest.raises(RateLimitedError, match="asks to wait 600 s") as limited:
                client.kpis()
    assert limited.value.retry_after == 600
    assert client.retries == []


def test_a_5xx_is_retried_and_the_next_attempt_succeeds(fresh_store, registry_env):
    """The store's series is unreadable (503); it is repaired while the client backs off."""
    key = series_key("btc_price")
    good = fresh_store.read_bytes(key)
    fresh_store.put(key, b"half-written garbage")

    def repair(retry: Retry) -> None:
        fresh_store.put(key, good)

    with serve(fresh_store, registry_env) as api:
        with DailyIndexClient(api.url, KEY, backoff_s=0.01, on_retry=repair) as client:
            btc = client.series("btc_price")
    assert [r.status for r in client.retries] == [503]
    pd.testing.assert_series_equal(btc, expected(btc_values(), "btc_price"), check_freq=False)


def test_retries_are_bounded(fresh_store, registry_env):
    fresh_store.put(series_key("btc_price"), b"garbage")
    with serve(fresh_store, registry_env) as api:
        with DailyIndexClient(api.url, KEY, max_attempts=3, backoff_s=0.01) as client:
            with pytest.raises(ServerError, match="HTTP 503 after 3 attempt") as failed:
                client.series("btc_price")
    assert failed.value.status == 503
    assert len(client.retries) == 2
    assert "cannot be read" in str(failed.value)


def test_no_server_is_a_server_error_without_the_key():
    url = f"http://127.0.0.1:{closed_port()}"
    with DailyIndexClient(url, KEY, max_attempts=2, backoff_s=0.01) as client:
        with pytest.raises(ServerError, match="no answer") as failed:
            client.health()
    assert failed.value.status is None
    assert KEY not in str(failed.value)
    assert failed.value.__cause__ is None
