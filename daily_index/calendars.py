"""Observation calendars and expected gaps: which days a KPI can have a value for.

A day outside the KPI's calendar (a Saturday for a business-day series), a day too recent
for a series published with a lag (`publicationLagDays`: FRED's daily series), or a past day
its source cannot give (CoinGecko's keyless `/global` keeps no history), is an expected gap:
not a failure. The KPI step records it as an observation with the reason, fetches nothing, and
does not fail the run for it. Sources can also answer with a gap of their own (FRED marks a
market holiday with "."): an error update whose code is in `EXPECTED_GAP_CODES`.
"""

from __future__ import annotations

from datetime import date, timedelta

from daily_index.registry import WEEKDAYS, KpiSpec

# Error codes that mean "no observation exists for this day", not "the fetch went wrong".
EXPECTED_GAP_CODES = frozenset({"not_in_calendar", "no_history", "no_observation"})

# How many past days each source kind can give without a key (None: all of its history).
# CoinGecko's keyless (demo) tier serves the last 365 days of market charts; /global has no
# history at all. Binance, alternative.me, DefiLlama and FRED serve their whole history.
SOURCE_HISTORY_DAYS: dict[str, int | None] = {
    "coingecko_price": 365,
    "coingecko_global": 0,
    "alternative_me_fng": None,
    "binance_kline": None,
    "binance_funding": None,
    "defillama_stablecoins": None,
    "fred": None,
    "n8n": None,
}

_SOURCE_NAMES = {
    "coingecko_price": "CoinGecko's keyless market_chart/range",
    "coingecko_global": "CoinGecko's keyless /global",
}


def in_calendar(spec: KpiSpec, day: date) -> bool:
    """Whether the KPI's calendar has an observation on `day`."""
    calendar = spec.calendar
    if calendar.kind == "business_days":
        return day.weekday() < 5
    if calendar.kind == "weekly":
        return WEEKDAYS[day.weekday()] == calendar.weekday
    if calendar.kind == "monthly":
        return day.day == calendar.day
    return True


def calendar_gap(spec: KpiSpec, day: date) -> str | None:
    """Why the calendar expects no observation on `day`, or None when it expects one."""
    if in_calendar(spec, day):
        return None
    calendar = spec.calendar
    weekday = WEEKDAYS[day.weekday()]
    if calendar.kind == "business_days":
        return f"no observation expected: weekend ({weekday}; a business-day series)"
    if calendar.kind == "weekly":
        return f"no observation expected: {weekday} (observed weekly on {calendar.weekday}s)"
    return f"no observation expected: observed monthly on day {calendar.day}"


def history_days(spec: KpiSpec) -> int | None:
    """Past days the KPI's source can give: the registry's `historyDays`, else the kind's."""
    if spec.history_days is not None:
        return spec.history_days
    return SOURCE_HISTORY_DAYS.get(spec.source.kind)


def history_gap(spec: KpiSpec, day: date, today: date) -> str | None:
    """Why a past `day` is beyond what the KPI's source can give, or None."""
    limit = history_days(spec)
    age = (today - day).days
    if limit is None or age <= limit:
        return None
    source = _SOURCE_NAMES.get(spec.source.kind, f"the {spec.source.kind} source")
    if limit == 0:
        return (
            f"no observation available: {source} has no history, so past days such as {day} "
            "cannot be fetched (loading history from a file is planned; until then the day "
            "stays empty)"
        )
    return (
        f"no observation available: {source} gives the last {limit} days only; {day} is "
        f"{age} days back"
    )


def publication_gap(spec: KpiSpec, day: date, today: date) -> str | None:
    """Why `day` is too recent for a KPI published with a lag, or None."""
    lag = spec.publication_lag_days
    if lag == 0 or (today - day).days >= lag:
        return None
    due = day + timedelta(days=lag)
    if spec.source.kind == "derived":
        inputs = " and ".join(spec.derived.inputs)
        return (
            f"no observation yet: computed from {inputs}, whose values arrive {lag} day(s) "
            f"late; {day} is computed on {due}"
        )
    return (
        f"no observation yet: {spec.metadata.source} publishes it {lag} day(s) late; "
        f"{day} is fetched on {due}"
    )


def expected_gap(spec: KpiSpec, day: date, today: date) -> str | None:
    """Why no value is expected for the KPI on `day`, or None when one is expected."""
    return (
        calendar_gap(spec, day)
        or publication_gap(spec, day, today)
        or history_gap(spec, day, today)
    )


def last_expected_on_or_before(spec: KpiSpec, day: date) -> date:
    """The latest day not after `day` on which the KPI's calendar has an observation."""
    probe = day
    for _ in range(40):
        if in_calendar(spec, probe):
            return probe
        probe -= timedelta(days=1)
    return probe
