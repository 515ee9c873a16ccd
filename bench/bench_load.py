"""Loader throughput: our COPY-to-staging upsert vs pandas ``to_sql`` and vs a plain COPY.

Run: .venv/bin/python bench/bench_load.py [--rows N] [--to-sql-rows N] [--quick]

Creates its own database (``marketpipe_bench_<random>`` on DATABASE_URL's server, default the
local one), migrates it and drops it at the end: no user data is touched.

What is measured, all in this run and from the same in-memory DataFrame of enriched OLAP rows
(every column of ``marketpipe.bars``, realistic values, half stocks and half crypto):
- upsert: ``services.loader.upsert.upsert_frame`` in one transaction, as the loader does it, into
  ``marketpipe.bars`` which already holds older history; a tenth of the batch re-sends bars the
  table already has (half of those unchanged, half with a revised close);
- plain COPY: the same rows encoded with Arrow's CSV writer, then one COPY into an empty copy of
  the table (same columns, defaults and indexes), sequentially;
- to_sql: ``DataFrame.to_sql`` (default method) into another empty copy, timed on a smaller
  sample (its rate is flat in the row count; a million rows would take minutes).
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
from sqlalchemy import create_engine

from marketpipe.contract import OLAP_COLUMNS, OLAP_KEY, column_names
from marketpipe.db import connect
from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.loader.jobs import LINEAGE
from services.loader.upsert import prepare_session, to_arrow, upsert_frame
from tests.support.scratch import scratch_database

COLUMNS = column_names(OLAP_COLUMNS)
SYMBOL_COUNT = 200
HISTORY_BARS = 5_000  # per symbol, already in the table before the measured load
START = pd.Timestamp("2020-01-01", tz="UTC")


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean along axis 1, NaN until the window is full (as the transformer does)."""
    csum = np.cumsum(np.nan_to_num(values), axis=1)
    out = np.full_like(values, np.nan)
    out[:, window - 1 :] = csum[:, window - 1 :]
    out[:, window:] -= csum[:, :-window]
    out[:, window - 1 :] /= window
    return out


def _ema(values: np.ndarray, span: int) -> np.ndarray:
    alpha = 2 / (span + 1)
    out = np.empty_like(values)
    out[:, 0] = values[:, 0]
    for i in range(1, values.shape[1]):
        out[:, i] = alpha * values[:, i] + (1 - alpha) * out[:, i - 1]
    return out


def enriched_bars(
    symbols: int, bars: int, first_bar: int, rng: np.random.Generator
) -> pd.DataFrame:
    """``symbols`` x ``bars`` hourly OLAP rows starting at bar index ``first_bar``."""
    shape = (symbols, bars)
    crypto = np.arange(symbols) % 2 == 1
    returns = rng.normal(0, 0.01, shape)
    close = 100 * np.exp(np.cumsum(returns, axis=1)) * rng.uniform(0.5, 5, (symbols, 1))
    previous = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    open_ = previous * (1 + rng.normal(0, 0.001, shape))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.003, shape)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.003, shape)))
    volume = np.where(crypto[:, None], np.nan, rng.integers(1e4, 1e7, shape).astype(float))
    change = close - previous
    log_return = np.log(close / previous)
    sma_20 = _rolling_mean(close, 20)
    std_20 = np.sqrt(np.maximum(_rolling_mean(close**2, 20) - sma_20**2, 0))
    ema_12, ema_26 = _ema(close, 12), _ema(close, 26)
    macd = ema_12 - ema_26
    macd_signal = _ema(macd, 9)
    gain = _rolling_mean(np.maximum(change, 0), 14)
    loss = _rolling_mean(np.maximum(-change, 0), 14)
    high_52w = np.maximum.accumulate(high, axis=1)
    low_52w = np.minimum.accumulate(low, axis=1)

    times = START + pd.to_timedelta(np.arange(first_bar, first_bar + bars), "h")
    bar_time = np.tile(times.values, symbols)
    names = np.array([f"SYM{i:04d}" + ("/USD" if c else "") for i, c in enumerate(crypto)])
    per_symbol: Callable[[Any], np.ndarray] = lambda v: np.repeat(np.asarray(v), bars)  # noqa: E731
    is_crypto = per_symbol(crypto)
    local = pd.DatetimeIndex(bar_time).tz_localize("UTC")
    local_ny = local.tz_convert("America/New_York").tz_localize(None)
    frame = pd.DataFrame(
        {
            "symbol": per_symbol(names),
            "interval": "1h",
            "bar_time": local,
            "bar_time_local": np.where(is_crypto, local.tz_localize(None), local_ny),
            "exchange_timezone": np.where(is_crypto, "UTC", "America/New_York"),
            "trading_date": np.where(is_crypto, local.date, local_ny.date),
            "asset_class": np.where(is_crypto, "crypto", "stock"),
            "instrument_name": per_symbol([f"Instrument {i} Inc." for i in range(symbols)]),
            "instrument_type": np.where(is_crypto, "Digital Currency", "Common Stock"),
            "exchange": np.where(is_crypto, "Binance", "NASDAQ"),
            "mic_code": np.where(is_crypto, None, "XNGS"),
            "currency": np.where(is_crypto, None, "USD"),
            "currency_base": np.where(is_crypto, "Coin", None),
            "currency_quote": np.where(is_crypto, "US Dollar", None),
            "country": np.where(is_crypto, None, "United States"),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
            "previous_close": previous.ravel(),
            "change": change.ravel(),
            "pct_change": (100 * change / previous).ravel(),
            "log_return": log_return.ravel(),
            "sma_20": sma_20.ravel(),
            "sma_50": _rolling_mean(close, 50).ravel(),
            "sma_200": _rolling_mean(close, 200).ravel(),
            "ema_12": ema_12.ravel(),
            "ema_26": ema_26.ravel(),
            "macd": macd.ravel(),
            "macd_signal": macd_signal.ravel(),
            "macd_hist": (macd - macd_signal).ravel(),
            "rsi_14": (100 - 100 / (1 + gain / np.where(loss == 0, np.nan, loss))).ravel(),
            "bb_middle": sma_20.ravel(),
            "bb_upper": (sma_20 + 2 * std_20).ravel(),
            "bb_lower": (sma_20 - 2 * std_20).ravel(),
            "atr_14": _rolling_mean(high - low, 14).ravel(),
            "volatility_20": np.sqrt(_rolling_mean(log_return**2, 20)).ravel(),
            "vwap_session": ((high + low + close) / 3).ravel(),
            "high_52w": high_52w.ravel(),
            "low_52w": low_52w.ravel(),
            "pct_from_52w_high": (100 * (close / high_52w - 1)).ravel(),
            "pct_from_52w_low": (100 * (close / low_52w - 1)).ravel(),
            "is_complete": np.tile(np.arange(bars) < bars - 1, symbols),
            "payload_id": per_symbol([secrets.token_hex(16) for _ in range(symbols)]),
            "transformed_at": pd.Timestamp.now(tz="UTC"),
        }
    )
    frame["trading_date"] = pd.to_datetime(frame["trading_date"]).dt.date
    return frame[COLUMNS]


@contextmanager
def bench_database(server_url: str) -> Iterator[Settings]:
    """A migrated scratch database on the server, dropped afterwards whatever happens."""
    with scratch_database(server_url, prefix="marketpipe_bench") as url:
        bench = Settings(database_url=url)
        migrate(bench)
        yield bench


def run_sql(settings: Settings, statement: str) -> None:
    conn = connect(settings.admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def prefill_history(settings: Settings, symbols: int, bars: int, before: pd.Timestamp) -> None:
    """Older bars for every symbol up to ``before``, generated server-side (fast)."""
    run_sql(
        settings,
        f"""
        INSERT INTO marketpipe.bars (symbol, interval, bar_time, bar_time_local, exchange_timezone,
            trading_date, asset_class, instrument_name, open, high, low, close, volume,
            sma_20, rsi_14, is_complete, payload_id, transformed_at)
        SELECT 'SYM' || lpad(s::text, 4, '0') || CASE WHEN s % 2 = 1 THEN '/USD' ELSE '' END,
            '1h', t, t AT TIME ZONE 'UTC', 'UTC', (t AT TIME ZONE 'UTC')::date,
            CASE WHEN s % 2 = 1 THEN 'crypto' ELSE 'stock' END, 'Instrument ' || s,
            100 + random(), 101 + random(), 99 + random(), 100 + random(), random() * 1e6,
            100 + random(), 100 * random(), true, md5(s::text), now()
        FROM generate_series(0, {symbols - 1}) AS s,
             generate_series(timestamptz '{before.isoformat()}' - interval '{bars} hours',
                             timestamptz '{before.isoformat()}' - interval '1 hour',
                             interval '1 hour') AS t
        """,
    )


def timed(label: str, rows: int, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    rate = rows / seconds
    print(f"   {label:<58} {rows:>9,} rows {seconds:7.2f} s {rate:>10,.0f} rows/s")
    return rate


def load_upsert(settings: Settings, frame: pd.DataFrame) -> None:
    conn = connect(settings.admin_url)
    with conn, conn.cursor() as cur:
        prepare_session(cur)
        upsert_frame(cur, "bars", frame, COLUMNS, OLAP_KEY, compare_exclude=LINEAGE)
    conn.close()


def load_plain_copy(settings: Settings, frame: pd.DataFrame, table: str) -> None:
    conn = connect(settings.admin_url)
    with conn, conn.cursor() as cur:
        buffer = io.BytesIO()
        pa_csv.write_csv(
            to_arrow(frame, COLUMNS),
            buffer,
            pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
        )
        buffer.seek(0)
        cur.copy_expert(
            f"COPY marketpipe.{table} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            buffer,
            size=1 << 20,
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--to-sql-rows", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="100k rows, 10k for to_sql")
    args = parser.parse_args()
    rows, to_sql_rows = (100_000, 10_000) if args.quick else (args.rows, args.to_sql_rows)
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

    bars = max(rows // SYMBOL_COUNT, 2)
    overlap = bars // 10
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    frame = enriched_bars(SYMBOL_COUNT, bars, -overlap, rng)
    rows = len(frame)
    print(f"== {rows:,} enriched OLAP rows x {len(COLUMNS)} columns, {SYMBOL_COUNT} symbols")
    print(f"   (generated in {time.perf_counter() - start:.1f} s)")

    with bench_database(server) as settings:
        start = time.perf_counter()
        prefill_history(settings, SYMBOL_COUNT, HISTORY_BARS, frame["bar_time"].min())
        # The re-sent tenth: half exactly as stored (no write), half with a revised close.
        resent = frame[frame["bar_time"] < START]
        revised = resent.assign(close=resent["close"].where(resent.index % 2 == 0, 0.0))
        load_plain_copy(settings, revised, "bars")
        run_sql(settings, "CREATE TABLE marketpipe.bars_copy (LIKE marketpipe.bars INCLUDING ALL)")
        run_sql(settings, "CREATE TABLE marketpipe.bars_sql (LIKE marketpipe.bars INCLUDING ALL)")
        run_sql(settings, "VACUUM ANALYZE marketpipe.bars")
        existing = SYMBOL_COUNT * HISTORY_BARS + len(resent)
        print(
            f"   table holds {existing:,} rows ({len(resent):,} of them re-sent by the batch);"
            f" setup {time.perf_counter() - start:.1f} s"
        )

        run_sql(settings, "CHECKPOINT")
        copy_rate = timed(
            "plain COPY (Arrow CSV, then COPY) into an empty copy",
            rows,
            lambda: load_plain_copy(settings, frame, "bars_copy"),
        )
        run_sql(settings, "CHECKPOINT")
        upsert_rate = timed(
            "upsert (streamed COPY -> temp stage -> ON CONFLICT)",
            rows,
            lambda: load_upsert(settings, frame),
        )
        sample = frame.sample(n=min(to_sql_rows, rows), random_state=1)
        engine = create_engine(settings.admin_url.set(drivername="postgresql+psycopg2"))
        run_sql(settings, "CHECKPOINT")
        to_sql_rate = timed(
            f"pandas to_sql (default method), sample of {len(sample):,}",
            len(sample),
            lambda: sample.to_sql(
                "bars_sql", engine, schema="marketpipe", if_exists="append", index=False
            ),
        )
        engine.dispose()

    print(f"   upsert vs to_sql:     {upsert_rate / to_sql_rate:6.1f}x  (goal >= 10x)")
    print(f"   upsert vs plain COPY: {upsert_rate / copy_rate:6.2f}x  (goal >= 0.8x)")


if __name__ == "__main__":
    main()
