"""Fetcher on a free plan: a day of ticks of two intervals side by side (1h every tick, 1day once
after each session close or UTC midnight), a two-year backfill, then the restatement of every
series (as after a split of each), credits per minute.

Run: .venv/bin/python -m bench.bench_fetch [--speed 60] [--symbols 20]

The sandbox runs in-process on an accelerated clock with the free plan (8 credits a minute, 800
a day) and counts every credit it charges, by API minute, with refusals. The fetcher is the
production code (limiter, request loop, cycle, schedule, backfill) with the sandbox clock injected:
waits of a minute or less pass in accelerated real time; the idle hours between ticks are skipped
by advancing the clock. Transformer and loader do not run: this measures extraction.

Goals: 0 credits refused; every full API minute of the backfill uses >= 7 of the 8 credits. The
restatement's credits are printed beside the backfill's of the same span (its baseline).
Uses its own Redis db (an empty index it claims, flushed at the end) and its own database
(``marketpipe_bench_<random>``, dropped at the end); never a user's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg2
from redis import Redis

from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.backfill import run_backfill
from services.fetcher.restate import open_restatements, run_restatement
from services.fetcher.schedule import run_schedule
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.support.clock import InProcessClock
from tests.support.credits import RecordingLedger
from tests.support.scratch import scratch_database, scratch_redis

SYMBOLS = [
    *("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM"),
    *("BTC/USD", "ETH/USD", "SOL/USD", "EUR/USD", "GBP/USD", "USD/JPY"),
    *(f"SYN{n:04d}" for n in range(1, 101)),
]
DAY_START = datetime(2026, 3, 9, 0, 5, tzinfo=UTC)  # a Monday, at the first tick
PLAN = (8, 800)


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A migrated scratch database, dropped afterwards whatever happens."""
    with scratch_database(server_url, prefix="marketpipe_bench") as url:
        migrate(Settings(database_url=url))
        yield url


def per_minute(charges: list[tuple[int, int, bool]], first: int, last: int) -> list[int]:
    used = Counter[int]()
    for minute, cost, allowed in charges:
        if allowed:
            used[minute] += cost
    return [used[m] for m in range(first, last + 1)]


def histogram(values: list[int]) -> str:
    counts = Counter(values)
    return ", ".join(f"{k} credits: {counts[k]} min" for k in sorted(counts, reverse=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--speed", type=float, default=120.0, help="clock speed for the ticks")
    # A backfill window is 5000 bars a symbol: landing 8 of them takes about a real second,
    # which must stay well inside an (accelerated) API minute for the pace to be measurable.
    parser.add_argument("--backfill-speed", type=float, default=10.0)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--years", type=int, default=2)
    args = parser.parse_args()
    symbols = SYMBOLS[: args.symbols]

    server = SandboxSettings(
        port=0,
        clock_start=DAY_START.isoformat(),
        clock_speed=args.speed,
        credits_per_minute=PLAN[0],
        credits_per_day=PLAN[1],
    )
    pg = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with (
        bench_database(pg) as db_url,
        scratch_redis(redis_base) as redis_url,
        SandboxServer(server) as sandbox,
    ):
        ledger = RecordingLedger(sandbox.api.settings.plan_for)
        sandbox.api.credits = ledger
        settings = Settings(
            database_url=db_url,
            redis_url=redis_url,
            twelve_data_base_url=sandbox.url,
            symbols=tuple(symbols),
            # Hourly and daily bars side by side, sharing the plan (the backfill and the
            # restatement below are of the hourly series: the first interval).
            intervals=("1h", "1day"),
            backfill_since="none",  # the backfill below is the measured one
            fetch_schedule="5 * * * *",
            api_credits_per_minute=PLAN[0],
            api_credits_per_day=PLAN[1],
            log_level="WARNING",
            # No loader runs here, so no restatement is flagged between ticks: poll hourly, so
            # the idle hours are still skipped (the clock fast-forwards sleeps over 90 s).
            restatement_poll_seconds=3600,
            # References stay fresh through the run: the restatement's figure is its windows'
            # credits, not a daily reference refresh that happens to fall due meanwhile.
            reference_refresh_hours=72,
        )
        clock = InProcessClock(sandbox.clock, fast_forward_seconds=90)
        ctx = build_context(settings, clock=clock, redis=Redis.from_url(redis_url))
        # A request sent in a minute's last seconds could land in the next at this speed.
        ctx.limiter.guard = max(ctx.limiter.guard, 0.1 * args.speed)

        real = time.monotonic()
        day_end = DAY_START + timedelta(days=1) - timedelta(minutes=5)
        ticks = run_schedule(ctx, until=lambda: clock.now() >= day_end)
        day_real = time.monotonic() - real
        day_charges = list(ledger.charges)
        conn = psycopg2.connect(db_url)
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT interval, count(*), sum(symbols_asked), sum(credits)"
                " FROM marketpipe.pipeline_runs WHERE component = 'fetcher'"
                " GROUP BY interval ORDER BY interval DESC"
            )
            by_interval = cur.fetchall()
        conn.close()

        sandbox.clock.set_speed(args.backfill_speed)
        ctx.limiter.guard = max(2.0, 0.1 * args.backfill_speed)
        since = (clock.now() - timedelta(days=365 * args.years)).date()
        start_minute = int(clock.now().timestamp()) // 60
        real = time.monotonic()
        report = run_backfill(ctx, since)
        backfill_real = time.monotonic() - real
        end_minute = int(clock.now().timestamp()) // 60
        backfill_charges = ledger.charges[len(day_charges) :]

        # Every series restated, as the loader records them after a split of each.
        conn = psycopg2.connect(db_url)
        with conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO marketpipe.restatements (symbol, interval, kind, history_from)"
                " VALUES (%s, '1h', 'split', %s)",
                [(s, datetime.combine(since, datetime.min.time(), UTC)) for s in symbols],
            )
        conn.close()
        restate_from = len(ledger.charges)
        real = time.monotonic()
        restated = sum(run_restatement(ctx, r) for r in open_restatements(ctx))
        restate_real = time.monotonic() - real
        restate_charges = ledger.charges[restate_from:]

    refused = sum(cost for _, cost, allowed in ledger.charges if not allowed)
    first_day = min(m for m, _, _ in day_charges)
    last_day = max(m for m, _, _ in day_charges)
    day_minutes = [u for u in per_minute(day_charges, first_day, last_day) if u]
    first_bf = min((m for m, _, _ in backfill_charges), default=start_minute)
    bf_minutes = per_minute(backfill_charges, first_bf, end_minute)
    full = bf_minutes[:-1]  # the last minute is cut short by the end of the work
    limit = PLAN[0]
    credits_bf = sum(bf_minutes)
    floor = -(-credits_bf // limit)

    print(
        f"plan: {limit} credits/minute, {PLAN[1]}/day; sandbox clock x{args.speed:g} for the"
        f" ticks, x{args.backfill_speed:g} for the backfill"
    )
    print(
        f"day of ticks: {ticks} ticks, {len(symbols)} symbols, {sum(day_minutes)} credits in "
        f"{len(day_minutes)} active minutes ({day_real:.1f} s real)"
    )
    print(f"  credits per active minute: max {max(day_minutes)}; {histogram(day_minutes)}")
    print(
        "  by interval: "
        + "; ".join(
            f"{interval}: {cycles} cycles, {asked} series asked, {credits} credits"
            for interval, cycles, asked, credits in by_interval
        )
    )
    print(
        f"backfill {args.years} years since {since}: {report.windows_done}/{report.windows_total}"
        f" windows, {report.enqueued} payloads, {credits_bf} credits in {len(bf_minutes)} minutes"
        f" ({backfill_real:.1f} s real)"
    )
    print(f"  credits per minute: {bf_minutes}")
    worst = min(full) if full else limit
    print(
        f"  pace: {credits_bf / max(1, len(bf_minutes)):.2f} credits/minute on average, worst full"
        f" minute {worst}/{limit}; {len(bf_minutes)} minutes vs the budget's floor of {floor}"
    )
    first_rs = min((m for m, _, _ in restate_charges), default=end_minute)
    last_rs = max((m for m, _, _ in restate_charges), default=end_minute)
    rs_minutes = per_minute(restate_charges, first_rs, last_rs)
    credits_rs = sum(rs_minutes)
    print(
        f"restatement of {restated}/{len(symbols)} series ({args.years} years of 1h bars each):"
        f" {credits_rs} credits ({credits_rs / max(1, restated):.2f} per series) in"
        f" {len(rs_minutes)} minutes ({restate_real:.1f} s real); the backfill of the same span:"
        f" {credits_bf} credits ({credits_rs / max(1, credits_bf):.2f}x)"
    )
    print(f"  credits per minute: {rs_minutes}")
    print(f"credits refused: {refused} (goal 0)")
    ok = refused == 0 and worst >= limit - 1 and max(day_minutes) <= limit
    print("goals met" if ok else "GOALS MISSED", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
