"""Fetcher service: ticks of FETCH_SCHEDULE for ever; `--once`: one cycle now; `backfill`.

python -m services.fetcher                      # the schedule (one replica per tick)
python -m services.fetcher --once               # one cycle and the open restatements, then exit
python -m services.fetcher backfill --since 2024-01-01 [--symbols AAPL,BTC/USD] [--interval 1day]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from types import FrameType

from redis import Redis

from marketpipe import broker
from marketpipe.health import beat
from marketpipe.logs import setup_logging
from marketpipe.reach import (
    Check,
    check_postgres,
    check_redis,
    exit_if_unreachable,
    wait_until_reachable,
)
from marketpipe.settings import INTERVAL_NAMES, Settings, load_settings, validate_symbol
from services.fetcher.backfill import (
    BackfillInterrupted,
    LoadStalled,
    ProgressBar,
    run_backfill,
    wait_until_loaded,
)
from services.fetcher.client import TwelveDataClient
from services.fetcher.clock import ApiDateClock, Clock
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_intervals
from services.fetcher.limiter import CreditLimiter
from services.fetcher.restate import run_open_restatements
from services.fetcher.schedule import run_schedule

log = logging.getLogger("marketpipe.fetcher")

# The healthcheck allows a few of these between beats: the loop either waits (in slices this
# long) or works (reading the clock before every request; requests time out).
BEAT_SECONDS = 15.0


class BeatingClock(ApiDateClock):
    """The API clock, touching the heartbeat file as the fetcher uses it (its healthcheck)."""

    def __init__(self, heartbeat: Path) -> None:
        super().__init__()
        self._heartbeat = heartbeat
        self._last_beat = 0.0
        self._beat()

    def _beat(self) -> None:
        if time.monotonic() - self._last_beat >= 1.0:
            beat(self._heartbeat)
            self._last_beat = time.monotonic()

    def now(self) -> datetime:
        self._beat()
        return super().now()

    def sleep(self, seconds: float) -> None:
        # Slices of API time: an accelerated sandbox only makes the beats more frequent.
        remaining = seconds
        while remaining > 0:
            self._beat()
            step = min(remaining, BEAT_SECONDS)
            super().sleep(step)
            remaining -= step


def api_clock(settings: Settings) -> Clock:
    """The API's clock from its Date headers; it also beats the healthcheck file when one is set."""
    if settings.heartbeat_file:
        return BeatingClock(Path(settings.heartbeat_file))
    return ApiDateClock()


def stop_on_sigterm() -> None:
    """SIGTERM (`docker compose stop`) ends the fetcher at once, like Ctrl-C.

    The exception unwinds whatever runs: a tick's claim is released (run_due_tick), so the tick
    runs again at the next start and fetches from the watermarks; payloads already enqueued
    are content-addressed, so fetching them again queues nothing twice.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def build_context(
    settings: Settings, *, clock: Clock | None = None, redis: Redis | None = None
) -> FetchContext:
    """The production wiring; tests and benchmarks pass their own clock and Redis."""
    clock = clock or api_clock(settings)
    redis = redis or broker.redis_from(settings)
    limiter = CreditLimiter(
        redis,
        clock,
        per_minute=settings.api_credits_per_minute,
        per_day=settings.api_credits_per_day,
    )
    client = TwelveDataClient(
        settings.api_base_url,
        settings.api_key,
        limiter=limiter,
        clock=clock,
        timeout=settings.http_timeout_seconds,
    )
    return FetchContext(settings=settings, client=client, redis=redis, limiter=limiter, clock=clock)


def _symbols(raw: str) -> list[str]:
    try:
        return [validate_symbol(s) for s in raw.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="run one cycle now and exit")
    commands = parser.add_subparsers(dest="command")
    backfill = commands.add_parser("backfill", help="fetch history since a date, resumable")
    backfill.add_argument("--since", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    backfill.add_argument("--until", type=date.fromisoformat, help="YYYY-MM-DD (default: today)")
    backfill.add_argument("--symbols", type=_symbols, help="comma list (default: SYMBOLS)")
    backfill.add_argument(
        "--interval", choices=INTERVAL_NAMES, help="one of INTERVALS (default: the first)"
    )
    backfill.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=sys.stdout.isatty(),
        help="return once every window is loaded, printing the rows (default: on a terminal)",
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, "fetcher")
    checks: list[Check] = [
        lambda: check_redis(settings.redis_url),
        lambda: check_postgres(settings.role_url("fetcher")),
    ]
    if args.command == "backfill" or args.once:
        exit_if_unreachable(checks, "fetcher")  # a one-shot command: say so and stop
    else:
        wait_until_reachable(checks, log)
    if settings.demo_mode:
        log.warning(
            "DEMO MODE: no TWELVE_DATA_API_KEY set; fetching synthetic data from the sandbox at %s."
            " Set TWELVE_DATA_API_KEY to use the real Twelve Data API.",
            settings.api_base_url,
        )
    else:
        log.info("fetching from %s", settings.api_base_url)
    ctx = build_context(settings)

    if args.command == "backfill":
        unconfigured = [s for s in args.symbols or () if s not in settings.symbols]
        if unconfigured:
            # No tick would keep such a series fresh: say so instead of loading it silently.
            parser.error(
                f"not in SYMBOLS: {', '.join(unconfigured)}; no schedule would refresh"
                " its series. Add it to SYMBOLS first."
            )
        interval = args.interval or settings.interval
        if interval not in settings.intervals:
            parser.error(
                f"--interval {interval} is not in INTERVALS ({', '.join(settings.intervals)});"
                " no schedule would refresh its series. Add it to INTERVALS first."
            )
        ctx = replace(ctx, settings=settings.for_interval(interval))
        try:
            report = run_backfill(
                ctx, args.since, symbols=args.symbols, until=args.until, progress=ProgressBar
            )
            if args.wait:
                done = wait_until_loaded(ctx, report.payload_ids)
                print(
                    f"backfill loaded: {done.windows} windows, {done.bars} bars"
                    f" ({done.changed} rows written or changed); queryable now"
                )
        except (BackfillInterrupted, LoadStalled) as exc:
            log.error("backfill: %s", exc)
            sys.exit(1)
        return
    if args.once:
        run_intervals(ctx)
        # Restatements recorded before this run (this cycle's are found when its loads run).
        run_open_restatements(ctx, check_database=True)
        return
    run_schedule(ctx)


if __name__ == "__main__":
    main()
