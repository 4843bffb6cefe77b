"""How values and changes read, everywhere: CLI table, PDF, charts and both analysts.

One formatter, so the same number prints the same way in the table and in the prose
(`$3.21T`, never `$3,210,000,000,000` on one page and `$3.21T` on the next). A change
carries its unit: percent for prices, caps, supplies, volumes and ratios; percentage
points for percentages and rates; basis points for funding rates; points for indexes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daily_index.registry import ChangeUnit

MISSING = "missing"
NO_CHANGE = "–"

_CHANGE_SUFFIX = {"pct": "%", "pp": " pp", "bp": " bp", "points": " pts"}


@dataclass(frozen=True)
class Change:
    """A change in the reader's unit: `Change(2.4, "pct")` reads `+2.4%`."""

    value: float
    unit: ChangeUnit

    def __str__(self) -> str:
        return format_change(self)


def change_between(now: float | None, before: float | None, unit: ChangeUnit) -> Change | None:
    """The change from `before` to `now` in `unit` (None where it cannot be computed).

    pct: (now - before) / |before| * 100; pp: now - before (a KPI in %); bp: (now - before)
    * 100 (a rate in %); points: now - before.
    """
    if now is None or before is None or not math.isfinite(now) or not math.isfinite(before):
        return None
    if unit == "pct":
        if before == 0:
            return None
        return Change((now - before) / abs(before) * 100.0, unit)
    if unit == "bp":
        return Change((now - before) * 100.0, unit)
    return Change(now - before, unit)


def _significant(value: float, digits: int) -> str:
    """`digits` significant digits, no exponent, trailing zeros trimmed."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _number(magnitude: float) -> str:
    """A non-negative number: 3.21T, 160.5B, 97,338, 54.31, 72, 0.0512."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if magnitude >= size:
            return f"{_significant(magnitude / size, 4)}{suffix}"
    if magnitude >= 1000:
        return f"{magnitude:,.0f}"
    if magnitude >= 1:
        return f"{magnitude:.0f}" if magnitude == int(magnitude) else f"{magnitude:.2f}"
    return _significant(magnitude, 4)


def format_value(value: float | None, unit: str) -> str:
    """A KPI value as a reader expects it: `$97,338`, `$3.21T`, `54.31%`, `0.0512 BTC`, `74`.

    None (or NaN) is `missing`, never zero. Index points print as the bare number.
    """
    if value is None or not math.isfinite(value):
        return MISSING
    number = _number(abs(value))
    sign = "-" if value < 0 and number.strip("0.,") else ""
    if unit.upper() == "USD":
        return f"{sign}${number}"
    if unit == "%":
        return f"{sign}{number}%"
    if unit in ("", "points"):
        return f"{sign}{number}"
    return f"{sign}{number} {unit}"


def _change_decimals(unit: str, magnitude: float) -> int:
    # Thresholds sit where the finer precision would round up (0.996% reads 1.0%, not 1.00%).
    if unit == "pct":
        return 1 if magnitude >= 0.995 else 2
    if unit == "pp":
        return 2
    if unit == "bp":
        return 0 if magnitude >= 9.95 else 1 if magnitude >= 0.995 else 2
    # index points: whole points where the move is whole or large, else two decimals
    return 0 if magnitude >= 100 or magnitude == int(magnitude) else 2


def format_change(change: Change | None) -> str:
    """A change with its sign and unit: `+2.4%`, `-0.35 pp`, `+12 bp`, `+3 pts`; `–` if None."""
    if change is None or not math.isfinite(change.value):
        return NO_CHANGE
    magnitude = abs(change.value)
    number = f"{magnitude:,.{_change_decimals(change.unit, magnitude)}f}"
    zero = not number.strip("0.,")
    sign = "" if zero else ("+" if change.value > 0 else "-")
    suffix = _CHANGE_SUFFIX[change.unit]
    if change.unit == "points" and number == "1":
        suffix = " pt"
    return f"{sign}{number}{suffix}"


def format_zscore(z: float | None) -> str:
    """How unusual a move is: `+3.1σ` (`–` where the KPI has too little history)."""
    if z is None or not math.isfinite(z):
        return NO_CHANGE
    text = f"{abs(z):.1f}"
    sign = "" if not text.strip("0.") else ("+" if z > 0 else "-")
    return f"{sign}{text}σ"


def brief(text: str | None, limit: int = 72) -> str:
    """A reason short enough for a table cell: its first clause when the whole is too long.

    `no observation available: CoinGecko's keyless /global has no history, so past days ...`
    reads `no observation available: CoinGecko's keyless /global has no history`; the full
    text belongs in the data-quality list.
    """
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cuts = [i for i in (text.find(" ("), text.find(", "), text.find("; ")) if i > 0]
    if cuts and min(cuts) <= limit:
        return text[: min(cuts)]
    return text[: limit - 1].rstrip() + "…"
