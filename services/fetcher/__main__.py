"""Fetcher service: ticks of FETCH_SCHEDULE for ever; `--once`: one cycle now; `backfill`.

python -m services.fetcher                      # the schedule (one replica per tick)
python -m services.fetcher --once               # one cycle now, then exit
python -m services.fetcher backfill --since 2024-01-01 [--symbols AAPL,BTC/USD]
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date

from redis import Redis

from marketpipe import broker
from marketpipe.settings import Settings, load_settings, validate_symbol
from services.fetcher.backfill import BackfillInterrupted, ProgressBar, run_backfill
from services.fetcher.client import TwelveDataClient
from services.fetcher.clock import ApiDateClock, Clock
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.limiter import CreditLimiter
from services.fetcher.schedule import run_schedule

log = logging.getLogger("marketpipe.fetcher")


def build_context(
    settings: Settings, *, clock: Clock | None = None, redis: Redis | None = None
) -> FetchContext:
    """The production wiring; tests and benchmarks pass their own clock and Redis."""
    clock = clock or ApiDateClock()
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
    args = parser.parse_args(argv)

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
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
        try:
            run_backfill(
                ctx, args.since, symbols=args.symbols, until=args.until, progress=ProgressBar
            )
        except BackfillInterrupted as exc:
            log.error("backfill interrupted: %s", exc)
            sys.exit(1)
        return
    if args.once:
        run_cycle(ctx)
        return
    run_schedule(ctx)


if __name__ == "__main__":
    main()
