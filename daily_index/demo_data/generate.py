"""Write the recorded demo responses served by `daily_index.replay.ReplayServer`.

We have no network where the demo runs, so the "recording" is synthetic: a seeded,
mean-reverting random walk per quantity, written in the exact documented response shape
of each API. The output is deterministic; re-running this script rewrites identical files.

Run: `python -m daily_index.demo_data.generate`
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

FIRST_DAY = date(2026, 8, 1)
LAST_DAY = date(2026, 11, 24)
SEED = 20261124
OUT = Path(__file__).parent / "responses"

# CoinGecko's range endpoint returns finer points than daily for short ranges; four
# points a day keep "the last point within the UTC day" meaningful and the files small.
POINTS_PER_DAY = 4

# Days FRED's business-day series carry "." (US federal holidays inside the window).
FRED_HOLIDAYS = {date(2026, 9, 7), date(2026, 10, 12), date(2026, 11, 11)}

SUPPLY = {"bitcoin": 19_950_000, "ethereum": 120_700_000, "solana": 545_000_000}


def _days() -> list[date]:
    return [FIRST_DAY + timedelta(days=i) for i in range((LAST_DAY - FIRST_DAY).days + 1)]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _walk(rng: random.Random, start: float, end: float, n: int, sigma: float) -> list[float]:
    """A log random walk pulled towards a straight line from `start` to `end`."""
    values = []
    level = math.log(start)
    for i in range(n):
        target = math.log(start) + (math.log(end) - math.log(start)) * i / max(n - 1, 1)
        level += 0.08 * (target - level) + rng.gauss(0.0, sigma)
        values.append(math.exp(level))
    return values


def _write(name: str, payload: object) -> None:
    path = OUT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n", encoding="utf-8")


def _coingecko(rng: random.Random, days: list[date]) -> dict[str, list[float]]:
    n = len(days) * POINTS_PER_DAY
    moments = [
        _midnight(day) + timedelta(hours=24 // POINTS_PER_DAY * k)
        for day in days
        for k in range(POINTS_PER_DAY)
    ]
    usd = {
        "bitcoin": _walk(rng, 112_000, 95_000, n, 0.012),
        "ethereum": _walk(rng, 3_600, 3_150, n, 0.016),
        "solana": _walk(rng, 175, 140, n, 0.02),
    }
    series = {f"{coin}_usd": prices for coin, prices in usd.items()}
    series["ethereum_btc"] = [e / b for e, b in zip(usd["ethereum"], usd["bitcoin"], strict=True)]
    for name, prices in series.items():
        coin, vs = name.split("_")
        caps = [p * SUPPLY[coin] for p in prices]
        volumes = [c * rng.uniform(0.015, 0.04) for c in caps]
        digits = 2 if vs == "usd" else 8
        _write(
            f"coingecko/market_chart/{name}.json",
            {
                "prices": [
                    [_ms(m), round(p, digits)] for m, p in zip(moments, prices, strict=True)
                ],
                "market_caps": [[_ms(m), round(c, 2)] for m, c in zip(moments, caps, strict=True)],
                "total_volumes": [
                    [_ms(m), round(v, 2)] for m, v in zip(moments, volumes, strict=True)
                ],
            },
        )
    # /simple/price answers "now", i.e. the last recorded point of DEMO_DAY, with the
    # `last_updated_at` (unix seconds) the API adds on `include_last_updated_at=true`.
    updated = int(moments[-1].timestamp())
    _write(
        "coingecko/simple_price.json",
        {
            "bitcoin": {"usd": round(usd["bitcoin"][-1], 2), "last_updated_at": updated},
            "ethereum": {
                "usd": round(usd["ethereum"][-1], 2),
                "btc": round(series["ethereum_btc"][-1], 8),
                "last_updated_at": updated,
            },
            "solana": {"usd": round(usd["solana"][-1], 2), "last_updated_at": updated},
        },
    )
    return usd


def _global(
    rng: random.Random, days: list[date], usd: dict[str, list[float]], usdt: list[float]
) -> list[float]:
    """Write /global as of the last day; return the daily total market cap series."""
    dominance = _walk(rng, 57.0, 58.5, len(days), 0.006)
    btc_caps = [
        usd["bitcoin"][(i + 1) * POINTS_PER_DAY - 1] * SUPPLY["bitcoin"] for i in range(len(days))
    ]
    totals = [cap / (d / 100) for cap, d in zip(btc_caps, dominance, strict=True)]
    total = totals[-1]
    eth_cap = usd["ethereum"][-1] * SUPPLY["ethereum"]
    sol_cap = usd["solana"][-1] * SUPPLY["solana"]
    btc_price = usd["bitcoin"][-1]
    shares = {
        "btc": btc_caps[-1] / total * 100,
        "eth": eth_cap / total * 100,
        "usdt": usdt[-1] / total * 100,
        "xrp": 3.9,
        "bnb": 3.1,
        "sol": sol_cap / total * 100,
        "usdc": 2.3,
        "steth": 0.9,
        "doge": 0.8,
        "trx": 0.7,
    }
    volume = total * 0.038
    _write(
        "coingecko/global.json",
        {
            "data": {
                "active_cryptocurrencies": 17912,
                "upcoming_icos": 0,
                "ongoing_icos": 49,
                "ended_icos": 3376,
                "markets": 1318,
                "total_market_cap": {
                    "usd": round(total, 2),
                    "eur": round(total * 0.86, 2),
                    "btc": round(total / btc_price, 6),
                    "eth": round(total / usd["ethereum"][-1], 6),
                },
                "total_volume": {
                    "usd": round(volume, 2),
                    "eur": round(volume * 0.86, 2),
                    "btc": round(volume / btc_price, 6),
                },
                "market_cap_percentage": {k: round(v, 6) for k, v in shares.items()},
                "market_cap_change_percentage_24h_usd": round(rng.uniform(-2.5, 2.5), 6),
                "updated_at": int((_midnight(LAST_DAY) + timedelta(hours=18)).timestamp()),
            }
        },
    )
    return totals


def _classify(value: int) -> str:
    if value < 25:
        return "Extreme Fear"
    if value < 47:
        return "Fear"
    if value < 55:
        return "Neutral"
    if value < 76:
        return "Greed"
    return "Extreme Greed"


def _fear_greed(rng: random.Random, days: list[date]) -> None:
    level = 55.0
    entries = []
    for day in days:
        level = min(90.0, max(10.0, level + 0.1 * (50 - level) + rng.gauss(0, 6)))
        value = round(level)
        entries.append(
            {
                "value": str(value),
                "value_classification": _classify(value),
                "timestamp": str(int(_midnight(day).timestamp())),
            }
        )
    entries.reverse()  # newest first, as the API answers
    entries[0]["time_until_update"] = "43200"
    _write(
        "alternative_me/fng.json",
        {"name": "Fear and Greed Index", "data": entries, "metadata": {"error": None}},
    )


def _binance(rng: random.Random, days: list[date], usd: dict[str, list[float]]) -> None:
    klines = []
    for i, day in enumerate(days):
        points = usd["bitcoin"][i * POINTS_PER_DAY : (i + 1) * POINTS_PER_DAY]
        following = usd["bitcoin"][(i + 1) * POINTS_PER_DAY : (i + 1) * POINTS_PER_DAY + 1]
        # Binance trades a hair away from the CoinGecko aggregate.
        spread = 1 + rng.uniform(-0.0006, 0.0006)
        open_ = points[0] * spread
        close = (following[0] if following else points[-1]) * spread
        high = max([*points, close]) * (1 + rng.uniform(0.002, 0.015))
        low = min([*points, close]) * (1 - rng.uniform(0.002, 0.015))
        quote_volume = rng.uniform(1.1e9, 2.0e9)
        base_volume = quote_volume / ((open_ + close) / 2)
        start = _midnight(day)
        klines.append(
            [
                _ms(start),
                f"{open_:.2f}",
                f"{high:.2f}",
                f"{low:.2f}",
                f"{close:.2f}",
                f"{base_volume:.5f}",
                _ms(start + timedelta(days=1)) - 1,
                f"{quote_volume:.8f}",
                rng.randint(1_800_000, 3_200_000),
                f"{base_volume * 0.49:.5f}",
                f"{quote_volume * 0.49:.8f}",
                "0",
            ]
        )
    _write("binance_spot/klines_BTCUSDT_1d.json", klines)

    for symbol, coin in (("BTCUSDT", "bitcoin"), ("ETHUSDT", "ethereum")):
        rates = []
        rate = 0.0001
        for i, day in enumerate(days):
            for k, hour in enumerate((0, 8, 16)):
                rate = 0.7 * rate + 0.3 * 0.0001 + rng.gauss(0, 0.00003)
                mark = usd[coin][i * POINTS_PER_DAY + min(k, POINTS_PER_DAY - 1)]
                rates.append(
                    {
                        "symbol": symbol,
                        "fundingTime": _ms(_midnight(day) + timedelta(hours=hour)),
                        "fundingRate": f"{rate:.8f}",
                        "markPrice": f"{mark:.8f}",
                    }
                )
        _write(f"binance_futures/funding_{symbol}.json", rates)


def _defillama(rng: random.Random, days: list[date]) -> list[float]:
    """Write /stablecoincharts/all; return the daily USDT circulating supply."""
    total_stable = _walk(rng, 2.78e11, 3.02e11, len(days), 0.0015)
    usdt = [t * rng.uniform(0.595, 0.605) for t in total_stable]
    entries = []
    for day, stable in zip(days, total_stable, strict=True):
        usd, eur = round(stable, 2), round(stable * 0.0021, 2)
        entries.append(
            {
                "date": str(int(_midnight(day).timestamp())),
                "totalCirculating": {"peggedUSD": usd, "peggedEUR": round(eur / 1.16, 2)},
                "totalUnreleased": {"peggedUSD": round(stable * 0.004, 2), "peggedEUR": 0},
                "totalCirculatingUSD": {"peggedUSD": usd, "peggedEUR": eur},
                "totalMintedUSD": {"peggedUSD": round(stable * 1.01, 2), "peggedEUR": eur},
                "totalBridgedToUSD": {"peggedUSD": round(stable * 0.06, 2), "peggedEUR": 0},
            }
        )
    _write("defillama_stablecoins/stablecoincharts_all.json", entries)
    return usdt


def _fred(rng: random.Random, days: list[date]) -> None:
    # Recorded as FRED answers once the last day is published, so the demo's "today" has
    # its value. Live, FRED lags a day or more and today is `stale` until it publishes; the
    # source tests serve such a lagging answer.
    series = {
        # id: (start, end, sigma, decimals, business days only)
        "DGS10": (4.25, 4.1, 0.01, 2, True),
        "DTWEXBGS": (121.5, 120.0, 0.003, 4, True),
        "DFF": (3.9, 3.9, 0.0015, 2, False),
    }
    for series_id, (start, end, sigma, decimals, business) in series.items():
        values = _walk(rng, start, end, len(days), sigma)
        observations = []
        for day, value in zip(days, values, strict=True):
            if business and day.weekday() >= 5:
                continue
            text = "." if business and day in FRED_HOLIDAYS else f"{value:.{decimals}f}"
            observations.append(
                {
                    "realtime_start": LAST_DAY.isoformat(),
                    "realtime_end": LAST_DAY.isoformat(),
                    "date": day.isoformat(),
                    "value": text,
                }
            )
        _write(
            f"fred/{series_id}.json",
            {
                "realtime_start": LAST_DAY.isoformat(),
                "realtime_end": LAST_DAY.isoformat(),
                "observation_start": "1600-01-01",
                "observation_end": "9999-12-31",
                "units": "lin",
                "output_type": 1,
                "file_type": "json",
                "order_by": "observation_date",
                "sort_order": "asc",
                "count": len(observations),
                "offset": 0,
                "limit": 100000,
                "observations": observations,
            },
        )


def main() -> None:
    rng = random.Random(SEED)  # noqa: S311 - a reproducible synthetic market, not a secret
    days = _days()
    usd = _coingecko(rng, days)
    usdt = _defillama(rng, days)
    totals = _global(rng, days, usd, usdt)
    _fear_greed(rng, days)
    _binance(rng, days, usd)
    _fred(rng, days)
    # What the product owner's n8n workflow would compute: USDT cap over total cap.
    _write(
        "n8n/usdt_dominance.json",
        {
            day.isoformat(): round(supply / total * 100, 4)
            for day, supply, total in zip(days, usdt, totals, strict=True)
        },
    )


if __name__ == "__main__":
    main()
