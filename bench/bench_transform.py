"""Transformer throughput: vectorised core vs a per-symbol pandas loop (the named baseline).

Run: .venv/bin/python bench/bench_transform.py [--quick]

Shapes: 50 symbols x 20,000 bars and 5,000 symbols x 200 bars (half stocks on the NYSE 1h
session, half crypto without volume). Reported per shape, in million bars per second, each as
wall-clock and as process CPU time (best of several runs; on a shared, loaded machine the CPU
figure is the honest one, wall time then includes waiting for a core):
- enrich: validated bars -> every OLAP column + daily aggregates (the vectorised hot path);
- flatten + validate: RawPayload JSON -> typed, validated bars (with quarantine);
- full: RawPayload JSON -> flatten -> validate -> enrich -> daily (transform_payloads);
- baseline: the same columns computed symbol by symbol with pandas, timed in the same run on a
  sample of symbols (the loop's cost is linear in symbols) so the whole run stays short; the
  ratios compare enrich and full path with it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from marketpipe.contract import RawPayload
from services.transformer.daily import daily_aggregates
from services.transformer.enrich import enrich
from services.transformer.flatten import flatten_payloads
from services.transformer.transform import transform_payloads
from services.transformer.validate import validate

NOW = datetime(2030, 1, 1, tzinfo=UTC)
STOCK_META = {
    "interval": "1h",
    "currency": "USD",
    "exchange_timezone": "America/New_York",
    "exchange": "NASDAQ",
    "mic_code": "XNGS",
    "type": "Common Stock",
}
CRYPTO_META = {
    "interval": "1h",
    "currency_base": "Coin",
    "currency_quote": "US Dollar",
    "exchange": "Binance",
    "type": "Digital Currency",
}


def stock_times(count: int) -> list[str]:
    days = pd.bdate_range("2014-01-02", periods=count // 7 + 2)
    stamps = (days.values[:, None] + pd.to_timedelta(np.arange(7) * 60 + 570, "m").values).ravel()
    return [str(t)[:19].replace("T", " ") for t in stamps[:count]]


def crypto_times(count: int) -> list[str]:
    start = np.datetime64("2024-01-01T00:00:00")
    stamps = start + np.arange(count) * np.timedelta64(1, "h")
    return [str(t).replace("T", " ") for t in stamps]


def make_payloads(symbols: int, bars: int, seed: int = 7) -> list[RawPayload]:
    rng = np.random.default_rng(seed)
    times = {"stock": stock_times(bars), "crypto": crypto_times(bars)}
    payloads = []
    for k in range(symbols):
        kind = "stock" if k % 2 == 0 else "crypto"
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
        open_ = close * np.exp(rng.normal(0, 0.003, bars))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, bars))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, bars))
        columns = [
            times[kind],
            [f"{v:.5f}" for v in open_],
            [f"{v:.5f}" for v in high],
            [f"{v:.5f}" for v in low],
            [f"{v:.5f}" for v in close],
        ]
        if kind == "stock":
            columns.append([str(v) for v in rng.integers(1_000, 1_000_000, bars)])
            keys = ("datetime", "open", "high", "low", "close", "volume")
        else:
            keys = ("datetime", "open", "high", "low", "close")
        values: list[dict[str, Any]] = [
            dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)
        ]
        values.reverse()  # the API's default order: newest first
        symbol = f"S{k:04d}" if kind == "stock" else f"C{k:04d}/USD"
        meta = {**(STOCK_META if kind == "stock" else CRYPTO_META), "symbol": symbol}
        payloads.append(
            RawPayload.model_construct(
                payload_id=f"bench{k:05d}",
                source="demo",
                endpoint="time_series",
                symbol=symbol,
                interval="1h",
                fetched_at=NOW - timedelta(days=1),
                request={},
                body={"meta": meta, "values": values, "status": "ok"},
                instrument={},
            )
        )
    return payloads


def per_symbol_loop(frame: pd.DataFrame, bars_per_year: dict[str, float]) -> list[pd.DataFrame]:
    """The baseline: one pandas pass per symbol, the way one would write it first."""
    results = []
    for _, group in frame.groupby(["symbol", "interval"], sort=False):
        g = group.sort_values("bar_time").copy()
        close = g["close"]
        prev = close.shift(1)
        g["previous_close"] = prev
        g["change"] = close - prev
        g["pct_change"] = (close / prev - 1) * 100
        g["log_return"] = np.log(close / prev)
        for n in (20, 50, 200):
            g[f"sma_{n}"] = close.rolling(n).mean()

        def seeded(x: pd.Series, n: int, alpha: float) -> pd.Series:
            first = x.first_valid_index()
            pos = x.index.get_loc(first)
            seed = x.iloc[pos : pos + n].mean()
            y = x.copy()
            y.iloc[: pos + n] = np.nan
            y.iloc[pos + n - 1] = seed
            return y.ewm(alpha=alpha, adjust=False).mean().where(y.notna().cumsum() > 0)

        g["ema_12"] = seeded(close, 12, 2 / 13)
        g["ema_26"] = seeded(close, 26, 2 / 27)
        g["macd"] = g["ema_12"] - g["ema_26"]
        g["macd_signal"] = seeded(g["macd"], 9, 2 / 10)
        g["macd_hist"] = g["macd"] - g["macd_signal"]
        delta = close.diff()
        gain = seeded(delta.clip(lower=0), 14, 1 / 14)
        loss = seeded((-delta).clip(lower=0), 14, 1 / 14)
        g["rsi_14"] = 100 * gain / (gain + loss)
        mid = close.rolling(20).mean()
        sd = close.rolling(20).std(ddof=0)
        g["bb_middle"], g["bb_upper"], g["bb_lower"] = mid, mid + 2 * sd, mid - 2 * sd
        tr = pd.concat(
            [g["high"] - g["low"], (g["high"] - prev).abs(), (g["low"] - prev).abs()], axis=1
        ).max(axis=1, skipna=False)
        g["atr_14"] = seeded(tr, 14, 1 / 14)
        g["volatility_20"] = g["log_return"].rolling(20).std() * np.sqrt(
            bars_per_year[g["asset_class"].iloc[0]]
        )
        typical = (g["high"] + g["low"] + close) / 3
        day = g["bar_time_local"].dt.normalize()
        g["vwap_session"] = (typical * g["volume"]).groupby(day).cumsum() / g["volume"].groupby(
            day
        ).cumsum()
        indexed = g.set_index("bar_time")
        g["high_52w"] = indexed["high"].rolling("365D").max().to_numpy()
        g["low_52w"] = indexed["low"].rolling("365D").min().to_numpy()
        g["pct_from_52w_high"] = (close / g["high_52w"] - 1) * 100
        g["pct_from_52w_low"] = (close / g["low_52w"] - 1) * 100
        results.append(g)
    return results


@dataclass(frozen=True)
class Timing:
    """Best wall-clock and best process CPU time over the repeats, in seconds.

    The machine may be shared: wall time then includes waiting for a core, CPU time does not
    (it is the honest figure under contention; with no contention the two agree).
    """

    wall: float
    cpu: float

    def rate(self, bars: int) -> tuple[float, float]:
        return bars / self.wall, bars / self.cpu


def best_of(repeats: int, func: Callable[[], object]) -> Timing:
    wall = cpu = float("inf")
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        func()
        cpu = min(cpu, time.process_time() - cpu_start)
        wall = min(wall, time.perf_counter() - wall_start)
    return Timing(wall, cpu)


def report(label: str, bars: int, timing: Timing, baseline: Timing | None = None) -> None:
    """One line: rates (wall, CPU) and, given the loop's timing over the same bars, the ratios."""
    wall_rate, cpu_rate = timing.rate(bars)
    line = f"   {label:<38} wall {wall_rate / 1e6:6.3f}   cpu {cpu_rate / 1e6:6.3f}"
    if baseline is not None:
        loop_wall_rate, loop_cpu_rate = baseline.rate(bars)
        line += f"   {wall_rate / loop_wall_rate:6.1f}x wall  {cpu_rate / loop_cpu_rate:6.1f}x cpu"
    print(line)


def run_shape(symbols: int, bars: int, repeats: int) -> None:
    total = symbols * bars
    print(f"\n== {symbols} symbols x {bars} bars = {total:,} bars")
    start = time.perf_counter()
    payloads = make_payloads(symbols, bars)
    print(f"   (generated payloads in {time.perf_counter() - start:.1f} s)")
    transformed_at = pd.Timestamp(NOW)
    checked = validate(flatten_payloads(payloads), now=NOW)

    def enrich_step() -> None:
        enriched = enrich(checked.bars, checked.payloads, transformed_at=transformed_at)
        daily_aggregates(
            enriched,
            checked.payloads,
            transformed_at=transformed_at,
            series=checked.bars["series"].to_numpy(),
        )

    enrich_time = best_of(repeats, enrich_step)
    others = max(1, repeats - 3)
    flat_time = best_of(others, lambda: validate(flatten_payloads(payloads), now=NOW))
    full_time = best_of(others, lambda: transform_payloads(payloads, now=NOW))

    bars_frame = enrich(checked.bars, checked.payloads, transformed_at=transformed_at)
    base_cols = ["symbol", "interval", "asset_class", "bar_time", "bar_time_local"]
    base_input = bars_frame[[*base_cols, "open", "high", "low", "close", "volume"]]
    # The loop costs the same per symbol whatever the batch; time a sample of whole symbols.
    sample_symbols = min(symbols, max(2, 30_000 // bars))  # a stock and a crypto at least
    sample = base_input[base_input["symbol"].isin(base_input["symbol"].unique()[:sample_symbols])]
    loop_time = best_of(1, lambda: per_symbol_loop(sample, {"stock": 252 * 7, "crypto": 365 * 24}))
    # Express the loop as if it had run over the whole batch (it is linear in symbols).
    loop_scaled = Timing(loop_time.wall * total / len(sample), loop_time.cpu * total / len(sample))

    print(
        f"   M bars/s, best of {repeats} (enrich) / {others} (others)"
        "                 ratio to the per-symbol loop"
    )
    report("enrich (validated -> OLAP + daily)", total, enrich_time, loop_scaled)
    report("flatten + validate (JSON -> bars)", total, flat_time)
    report("full path (transform_payloads)", total, full_time, loop_scaled)
    report(f"per-symbol pandas loop ({sample_symbols} symbols timed)", total, loop_scaled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller shapes, one repeat")
    args = parser.parse_args()
    if args.quick:
        run_shape(10, 5_000, 1)
        run_shape(500, 200, 1)
        return
    run_shape(50, 20_000, 5)
    run_shape(5_000, 200, 5)


if __name__ == "__main__":
    main()
