"""Recovery commands (the workers do the work; run them where REDIS_URL and DATABASE_URL point).

python -m services.ops status                     # fetch cycles, backfill windows, loads, queues
python -m services.ops requeue-failed [--queue marketpipe-transform] [--queue ...]
python -m services.ops replay --since 2026-03-01 --until 2026-03-02 [--symbols AAPL,BTC/USD]
python -m services.ops restate --symbol AAPL [--interval 1h] [--wait 600]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from redis import Redis

from marketpipe import broker
from marketpipe.reach import check_postgres, check_redis, exit_if_unreachable
from marketpipe.settings import (
    INTERVAL_NAMES,
    ServiceRole,
    Settings,
    load_settings,
    validate_symbol,
)
from services.ops.commands import (
    QUEUES,
    NothingToRestate,
    replay,
    request_restatement,
    requeue_failed,
    restatement_status,
)
from services.ops.status import status_report


def _instant(raw: str) -> datetime:
    """ISO date or date-time; naive means UTC (the tables store UTC)."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _symbols(raw: str) -> list[str]:
    try:
        return [validate_symbol(s) for s in raw.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="the run log's summary and the queues")
    status.add_argument("--limit", type=int, default=10, help="fetch runs shown (default 10)")
    requeue = commands.add_parser("requeue-failed", help="failed jobs back onto their queues")
    requeue.add_argument(
        "--queue", action="append", choices=QUEUES, help="repeatable (default: every queue)"
    )
    play = commands.add_parser(
        "replay", help="re-transform and reload payloads fetched in [since, until)"
    )
    play.add_argument("--since", type=_instant, required=True, help="ISO date or date-time, UTC")
    play.add_argument("--until", type=_instant, required=True, help="ISO date or date-time, UTC")
    play.add_argument("--symbols", type=_symbols, help="comma list (default: every symbol)")
    play.add_argument("--dry-run", action="store_true", help="only list what would be replayed")
    restate = commands.add_parser(
        "restate",
        help="re-fetch a series' whole stored history and swap it in (the fetcher does it)",
    )
    restate.add_argument("--symbol", type=validate_symbol, required=True)
    restate.add_argument(
        "--interval", choices=INTERVAL_NAMES, help="default: the first of INTERVALS"
    )
    restate.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for it to be restated"
    )
    args = parser.parse_args(argv)

    settings = load_settings()
    role: ServiceRole = "reader" if args.command == "status" else "loader"  # replay: raw rows
    exit_if_unreachable(
        [lambda: check_redis(settings.redis_url), lambda: check_postgres(settings.role_url(role))],
        "ops",
    )
    redis = broker.redis_from(settings)
    if args.command == "status":
        print(status_report(settings, redis, limit=args.limit))
        return 0
    if args.command == "restate":
        return _restate(parser, settings, redis, args)
    if args.command == "requeue-failed":
        moved = requeue_failed(redis, settings, args.queue or QUEUES)
        for name, count in moved.items():
            print(f"{name}: {count} failed job(s) requeued")
        return 0
    if args.until <= args.since:
        parser.error("--until must be after --since")
    report = replay(redis, settings, args.since, args.until, args.symbols, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replaying"
    print(f"{verb} {len(report.enqueued)} payload(s) fetched in [{args.since}, {args.until})")
    for symbol, count in sorted(report.symbols.items()):
        print(f"  {symbol}: {count}")
    return 0


def _restate(
    parser: argparse.ArgumentParser, settings: Settings, redis: Redis, args: argparse.Namespace
) -> int:
    interval = args.interval or settings.interval
    try:
        request = request_restatement(redis, settings, args.symbol, interval)
    except NothingToRestate as exc:
        parser.error(str(exc))
    verb = "recorded" if request.opened else "already open:"
    print(
        f"restatement #{request.restatement_id} of {args.symbol} {interval} {verb}; the fetcher"
        " re-fetches its stored history and the loader swaps it in (marketpipe.restatements)"
    )
    deadline = time.monotonic() + args.wait
    while args.wait:
        status, message = restatement_status(settings, request.restatement_id)
        if status != "detected":
            print(f"{status}: {message or ''}")
            return 0 if status == "restated" else 1
        if time.monotonic() > deadline:
            print(f"not restated after {args.wait:.0f} s (is the fetcher running?)")
            return 1
        time.sleep(1.0)  # polling the status row; the deadline decides
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
