"""Dashboard queries at 10 million bars: p50 / p95 latency of each, as the read-only role.

Run: .venv/bin/python bench/bench_dashboard.py [--symbols 50] [--hours 200000] [--repeat 40]

Creates its own database (on the server of BENCH_DATABASE_URL, else TEST_DATABASE_URL, else
the local one), migrates it, generates the rows inside the server with generate_series (half
stocks, half crypto; every NOT NULL column filled, the columns the dashboard reads with
plausible values), runs every query of services/dashboard/queries.py through the reader
engine the dashboard uses (cold plans excluded by warm-up runs), and drops the database.
Goal: p95 <= 50 ms per query.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import pandas as pd
import psycopg2
from psycopg2 import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from marketpipe.db import reader_engine
from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.dashboard import queries
from tests.support.scratch import scratch_database

GOAL_MS = 50.0

# The naive way to find each symbol's newest bar: aggregate over every bar (a full scan).
BASELINE_CATALOG = text(
    "SELECT symbol, max(bar_time) AS newest FROM marketpipe.bars"
    " WHERE interval = :interval GROUP BY symbol"
)
START = "2003-01-01 00:00+00"

# Prices: a slow cycle and a per-symbol drift, so returns, drawdowns and changes are non-trivial.
PRICE = (
    "(50 + 10 * s) * exp(0.25 * sin(h / 900.0 + s) + 0.05 * sin(h / 37.0 + 2 * s)"
    " + (mod(s, 7) - 3) * h / 4000000.0)"
)

# No ORDER BY: sorting 10 M wide rows spills gigabytes; the nested loop already yields time-major
# order, which keeps both indexes' inserts clustered.
BARS_INSERT = f"""
INSERT INTO marketpipe.bars (
    symbol, interval, bar_time, trading_date, asset_class, instrument_name, currency,
    open, high, low, close, volume, previous_close, change, pct_change,
    sma_20, sma_50, sma_200, ema_12, ema_26, macd, macd_signal, macd_hist, rsi_14,
    bb_middle, bb_upper, bb_lower, is_complete, payload_id, transformed_at)
SELECT 'SYM' || lpad(s::text, 3, '0'), '1h', t, t::date,
       CASE WHEN mod(s, 2) = 0 THEN 'stock' ELSE 'crypto' END, 'Instrument ' || s, 'USD',
       p * 0.999, p * 1.004, p * 0.996, p, 1000 + 500 * (1 + sin(h)),
       p * 0.999, p * 0.001, 0.1,
       p * 0.998, p * 0.995, p * 0.99, p * 0.999, p * 0.997, p * 0.002, p * 0.0015,
       p * 0.0005, 50 + 20 * sin(h / 11.0), p * 0.998, p * 1.02, p * 0.976,
       h < %(hours)s - 1, 'bench-' || s, now()
FROM generate_series(0, %(hours)s - 1) AS h
CROSS JOIN generate_series(1, %(symbols)s) AS s
CROSS JOIN LATERAL (SELECT timestamptz '{START}' + h * interval '1 hour' AS t, {PRICE} AS p) v
"""

DAILY_INSERT = """
INSERT INTO marketpipe.daily_bars (symbol, trading_date, asset_class, open, high, low, close,
    volume, vwap, change, pct_change, range, bar_count, is_complete, payload_id, transformed_at)
SELECT symbol, trading_date, min(asset_class), (array_agg(open ORDER BY bar_time))[1],
       max(high), min(low), (array_agg(close ORDER BY bar_time DESC))[1], sum(volume),
       avg(close), 0, 0, max(high) - min(low), count(*)::int, bool_and(is_complete),
       min(payload_id), now()
FROM marketpipe.bars GROUP BY symbol, trading_date
"""

# The pipeline's own tables at the size a year or two of hourly fetches leaves behind.
SIDE_TABLES = (
    """INSERT INTO marketpipe.raw_payloads (payload_id, source, endpoint, symbol, interval,
        fetched_at, request, body)
    SELECT 'raw-' || s || '-' || k, 'twelvedata', 'time_series', 'SYM' || lpad(s::text, 3, '0'),
        '1h', timestamptz '{start}' + (%(hours)s - 1 - k) * interval '1 hour' + interval '5 min',
        '{{}}'::jsonb, '{{"status": "ok"}}'::jsonb
    FROM generate_series(1, %(symbols)s) AS s, generate_series(0, 8759) AS k""",
    """INSERT INTO marketpipe.pipeline_runs (run_id, component, status, symbol, interval,
        rows_in, rows_loaded, started_at, finished_at)
    SELECT 'run-' || k, 'loader', CASE WHEN mod(k, 50) = 0 THEN 'partial' ELSE 'ok' END,
        'SYM' || lpad((1 + mod(k, %(symbols)s))::text, 3, '0'), '1h', 300, 300,
        timestamptz '{start}' + (k / %(symbols)s) * interval '1 hour',
        timestamptz '{start}' + (k / %(symbols)s) * interval '1 hour' + interval '1 min'
    FROM generate_series(0, 200000) AS k""",
    """INSERT INTO marketpipe.quarantine (payload_id, symbol, interval, row_key, reason,
        quarantined_at)
    SELECT 'raw-' || k, 'SYM001', '1h', k::text,
        (ARRAY['high below low', 'missing close', 'duplicate bar'])[1 + mod(k, 3)],
        timestamptz '{start}' + k * interval '13 hours'
    FROM generate_series(0, 20000) AS k""",
    """INSERT INTO marketpipe.watermarks (symbol, interval, last_complete_bar)
    SELECT symbol, interval, max(bar_time) FROM marketpipe.latest_quotes
    GROUP BY symbol, interval""",
)


def server_url() -> str:
    return (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


BARS_INDEXES = """
SELECT c.conname, pg_get_constraintdef(c.oid), i.indexname, i.indexdef
FROM pg_indexes i LEFT JOIN pg_constraint c
  ON c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass
WHERE i.schemaname = 'marketpipe' AND i.tablename = 'bars'
"""


def _insert_bars_then_index(cur: psycopg2.extensions.cursor, params: dict[str, int]) -> None:
    """Bulk insert into the bare table, then build its indexes once (far faster than 10 M
    index updates); the indexes come back exactly as the migrations define them."""
    cur.execute(BARS_INDEXES)
    indexes = cur.fetchall()
    for constraint, _, index, _ in indexes:
        if constraint:
            cur.execute(
                sql.SQL("ALTER TABLE marketpipe.bars DROP CONSTRAINT {}").format(
                    sql.Identifier(constraint)
                )
            )
        else:
            cur.execute(sql.SQL("DROP INDEX marketpipe.{}").format(sql.Identifier(index)))
    # Unlogged: 10 M wide rows would otherwise write gigabytes of WAL in this throwaway
    # database; reads (what is measured) are the same for logged and unlogged tables.
    cur.execute("ALTER TABLE marketpipe.bars SET UNLOGGED")
    began = time.perf_counter()
    cur.execute(BARS_INSERT, params)
    print(f"  filled bars: {cur.rowcount:,} rows in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    for constraint, constraint_def, _, index_def in indexes:
        if constraint:
            cur.execute(
                sql.SQL("ALTER TABLE marketpipe.bars ADD CONSTRAINT {} {}").format(
                    sql.Identifier(constraint), sql.SQL(constraint_def)
                )
            )
        else:
            cur.execute(index_def)
    print(f"  indexed bars ({len(indexes)} indexes) in {time.perf_counter() - began:.0f} s")


def fill(database_url: str, symbols: int, hours: int) -> None:
    params = {"symbols": symbols, "hours": hours}
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '512MB'")
        _insert_bars_then_index(cur, params)
        steps = [("daily_bars", DAILY_INSERT)] + [
            (statement.split()[2], statement.format(start=START)) for statement in SIDE_TABLES
        ]
        for label, statement in steps:
            began = time.perf_counter()
            cur.execute(statement, params)
            print(f"  filled {label}: {cur.rowcount:,} rows in {time.perf_counter() - began:.0f} s")
        began = time.perf_counter()
        cur.execute("VACUUM ANALYZE")  # visibility map for index-only scans, fresh statistics
        print(f"  vacuum analyze: {time.perf_counter() - began:.0f} s")
    conn.close()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(call: Callable[[int], pd.DataFrame], repeat: int) -> tuple[float, float, int]:
    """p50 and p95 in ms of ``call(i)`` (i varies the symbol), and the rows of the last run."""
    for i in range(3):
        call(i)
    samples, rows = [], 0
    for i in range(repeat):
        began = time.perf_counter()
        rows = len(call(i))
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), percentile(samples, 0.95), rows


def time_pages(database_url: str) -> None:
    """The browser test at every width against this database; it prints each page's time."""
    print(
        "\npages in headless Chromium (time from navigation to drawn charts; the server is"
        " warmed first by one separate health page load, not timed):"
    )
    test = "tests/integration/dashboard/test_browser.py::test_page_draws_whole_at_every_width"
    subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider"],
        env={**os.environ, "BROWSER_DATABASE_URL": database_url},
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--hours", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument(
        "--browser",
        action="store_true",
        help="also time every page to drawn charts in headless Chromium on this database"
        " (tests/integration/dashboard/test_browser.py; goal <= 2 s per page)",
    )
    parser.add_argument(
        "--database-url",
        help="measure a database this script filled before (with the same --symbols and"
        " --hours; one an interrupted run or --keep left behind): migrated to the current"
        " schema, not filled and not dropped",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="fill a new database, measure it and keep it (its URL is printed) for later runs"
        " with --database-url; reported figures come from a run without either option",
    )
    args = parser.parse_args()
    print(f"dashboard queries over {args.symbols * args.hours:,} bars ({args.symbols} symbols)")
    if args.database_url:
        migrate(Settings(database_url=args.database_url))
        over = measure_all(args.database_url, args)
    elif args.keep:
        database_url = kept_database(server_url())
        migrate(Settings(database_url=database_url))
        fill(database_url, args.symbols, args.hours)
        print(f"  kept for --database-url: {database_url}")
        over = measure_all(database_url, args)
    else:
        with scratch_database(server_url(), prefix="marketpipe_bench_dashboard") as database_url:
            migrate(Settings(database_url=database_url))
            fill(database_url, args.symbols, args.hours)
            over = measure_all(database_url, args)
    print("\nall within the goal" if not over else f"\nover the goal: {', '.join(over)}")


def kept_database(server_url: str) -> str:
    """A new database that outlives this run (drop it by hand when done)."""
    server = make_url(server_url)
    name = f"marketpipe_bench_dashboard_kept_{secrets.token_hex(4)}"
    admin = psycopg2.connect(
        server.set(database=server.database or "postgres").render_as_string(hide_password=False)
    )
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    return server.set(database=name).render_as_string(hide_password=False)


def measure_all(database_url: str, args: argparse.Namespace) -> list[str]:
    """Every query's p50/p95 (and the pages' times with --browser); the names over the goal."""
    settings = Settings(database_url=database_url)
    engine = reader_engine(settings)
    newest = pd.Timestamp(START) + pd.Timedelta(hours=args.hours - 1)
    names = [f"SYM{s:03d}" for s in range(1, args.symbols + 1)]

    def symbol(i: int) -> str:
        return names[i % len(names)]

    def several(i: int) -> list[str]:
        return [names[(i + k) % len(names)] for k in range(8)]

    def ago(days: int) -> pd.Timestamp:
        return newest - pd.Timedelta(days=days)

    week = timedelta(days=7)
    cases: dict[str, Callable[[int], pd.DataFrame]] = {
        "catalog (latest and first bar per symbol)": lambda i: queries.catalog(engine, "1h"),
        "overview (quote, day change, 7d/30d returns)": lambda i: queries.overview(
            engine, "1h", ago(30), newest
        ),
        "sparklines (all symbols, 7 days)": lambda i: queries.sparklines(
            engine, "1h", ago(7), newest, timedelta(hours=3)
        ),
        "instrument bars, 7 days": lambda i: queries.bars(engine, symbol(i), "1h", ago(7), newest),
        # the longest hourly window the app offers (longer windows switch to daily bars)
        "instrument bars, 31 days": lambda i: queries.bars(
            engine, symbol(i), "1h", ago(31), newest
        ),
        "instrument daily, 1 year (stored indicators)": lambda i: queries.daily_bars(
            engine, symbol(i), ago(365), newest
        ),
        "instrument daily, 5 years (5Y horizon)": lambda i: queries.daily_bars(
            engine, symbol(i), ago(5 * 365), newest
        ),
        "instrument quote": lambda i: queries.quote(engine, symbol(i), "1h", ago(30), newest),
        "instrument key figures": lambda i: queries.key_figures(engine, symbol(i), "1h"),
        "first fetch: payloads landed": lambda i: queries.landed(engine, "1h"),
        "compare 8 symbols closes, 8 days": lambda i: queries.compare_closes(
            engine, several(i), "1h", ago(8), newest, daily=False
        ),
        "compare 8 symbols trading days, 1 year": lambda i: queries.compare_closes(
            engine, several(i), "1h", ago(365), newest, daily=True
        ),
        "compare 8 symbols weekly closes, 5 years": lambda i: queries.compare_closes(
            engine, several(i), "1h", ago(5 * 365), newest, daily=True, weekly=True
        ),
        "compare 8 symbols rebased, 8 days": lambda i: queries.rebased(
            engine, several(i), "1h", ago(8), newest, daily=False
        ),
        "compare 8 symbols rebased daily, 1 year": lambda i: queries.rebased(
            engine, several(i), "1h", ago(365), newest, daily=True
        ),
        "compare 8 symbols rebased weekly, 5 years": lambda i: queries.rebased(
            engine, several(i), "1h", ago(5 * 365), newest, daily=True, weekly=True
        ),
        "compare 8 symbols period returns": lambda i: queries.period_returns(
            engine, several(i), "1h", ago(365), newest
        ),
        "freshness (bar, watermark, fetch)": lambda i: queries.freshness(engine, "1h"),
        "recent runs": lambda i: queries.recent_runs(engine),
        "quarantine rows, 7 days": lambda i: queries.quarantine(engine, ago(7) - week),
        "quarantine reasons, 7 days": lambda i: queries.quarantine_reasons(engine, ago(7) - week),
    }
    print(f"\n{'query':<40} {'p50 ms':>8} {'p95 ms':>8} {'rows':>7}  goal p95 <= {GOAL_MS:g}")
    over = []
    for name, call in cases.items():
        p50, p95, rows = measure(call, args.repeat)
        flag = "" if p95 <= GOAL_MS else "  OVER"
        print(f"{name:<40} {p50:8.1f} {p95:8.1f} {rows:7d}{flag}")
        if p95 > GOAL_MS:
            over.append(name)

    # Named baseline, same run: the catalog answered by a plain GROUP BY over all bars.
    def naive_catalog(i: int) -> pd.DataFrame:
        with engine.connect() as conn:
            return pd.read_sql_query(BASELINE_CATALOG, conn, params={"interval": "1h"})

    base50, base95, _ = measure(naive_catalog, max(3, args.repeat // 10))
    ours50, _, _ = measure(cases["catalog (latest and first bar per symbol)"], args.repeat)
    print(
        f"{'baseline: GROUP BY max(bar_time) (scan)':<40} {base50:8.1f} {base95:8.1f}"
        f"   catalog is {base50 / ours50:,.0f}x faster (p50)"
    )
    engine.dispose()
    if args.browser:
        time_pages(database_url)
    return over


if __name__ == "__main__":
    main()
