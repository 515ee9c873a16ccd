"""FETCH_SCHEDULE ticks on the API's clock: one replica per tick, missed ticks caught up once.

Each tick is claimed with ``SET NX`` on a key named after the tick, so of several replicas
exactly one runs it. ``last-tick`` records the newest tick done; a fetcher that was down runs
only the latest tick that fell due meanwhile (its cycle fetches everything since the
watermarks, so one catch-up covers every missed hour). Without Redis state the latest due tick
runs at start, which is what a fresh deployment wants too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Final

from cronsim import CronSim

from marketpipe.market import INTRADAY_MINUTES
from marketpipe.reach import SERVER_LOST, outage_line
from marketpipe.ticks import LAST_TICK_KEY, claim_key, tick_text
from services.fetcher.context import FetchContext
from services.fetcher.cycle import CycleReport, run_intervals
from services.fetcher.onboard import run_pending_backfills
from services.fetcher.restate import run_open_restatements
from services.fetcher.runlog import FetchRun, record
from services.fetcher.series import parse_utc

log = logging.getLogger("marketpipe.fetcher.schedule")

# A tick's claim outlives any cycle (a cycle of 120 symbols on 8 credits a minute takes 15 min);
# a crashed owner's tick is released when the next tick comes anyway.
TICK_LEASE_SECONDS: Final = 3600
RETRY_AFTER_FAILURE_SECONDS: Final = 60.0
# Missed ticks get a 'skipped' row each, up to this many (a month of hourly ticks).
MAX_SKIPPED_ROWS: Final = 31 * 24

# Only touch last-tick forwards: a slow replica finishing an older tick must not move it back.
_ADVANCE: Final = """
local held = redis.call('GET', KEYS[1])
if (not held) or held < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def latest_tick(expression: str, now: datetime) -> datetime:
    """The newest scheduled time at or before ``now``."""
    result: datetime = next(iter(CronSim(expression, now + timedelta(seconds=1), reverse=True)))
    return result


def next_tick(expression: str, now: datetime) -> datetime:
    result: datetime = next(iter(CronSim(expression, now)))
    return result


def due_tick(expression: str, last_done: datetime | None, now: datetime) -> datetime | None:
    """The one tick to run now (the latest due), or None if it is done already."""
    latest = latest_tick(expression, now)
    return latest if last_done is None or latest > last_done else None


def tick_run_id(interval: str, tick: datetime) -> str:
    return f"fetch:{interval}:{tick_text(tick)}"


def missed_ticks(expression: str, last_done: datetime, tick: datetime) -> list[datetime]:
    """The scheduled times after ``last_done`` and before ``tick`` (at most MAX_SKIPPED_ROWS)."""
    missed: list[datetime] = []
    for when in CronSim(expression, last_done):
        if when >= tick or len(missed) >= MAX_SKIPPED_ROWS:
            break
        missed.append(when)
    return missed


def _record_skipped(ctx: FetchContext, missed: list[datetime], tick: datetime) -> None:
    # Intraday series only: a calendar interval's tick without a bar end asks nothing anyway.
    for interval in ctx.settings.intervals:
        if interval not in INTRADAY_MINUTES:
            continue
        for when in missed:
            record(
                ctx.settings,
                FetchRun(
                    run_id=tick_run_id(interval, when),
                    component="fetcher",
                    status="skipped",
                    interval=interval,
                    started_at=when,
                    message=(
                        f"no fetcher ran it; the catch-up at {tick_text(tick)} fetched its bars"
                    ),
                ),
            )


def _record_failed(ctx: FetchContext, tick: datetime, exc: BaseException) -> None:
    """Best effort: when the database is what failed, the log line is all there is."""
    try:
        record(
            ctx.settings,
            FetchRun(
                run_id=tick_run_id(ctx.settings.interval, tick),
                component="fetcher",
                status="failed",
                interval=ctx.settings.interval,
                started_at=tick,
                message=f"{type(exc).__name__}: {exc}",
            ),
        )
    except Exception as write_error:
        log.warning("could not record the failed tick: %s", outage_line(write_error))


TickReports = dict[str, CycleReport]


def run_due_tick(ctx: FetchContext) -> tuple[datetime | None, TickReports | None]:
    """Run the due tick if this replica wins it: (tick, reports by interval); (tick, None) if
    another won. Every interval of INTERVALS is fetched in the tick (market.py's calendar
    intervals only for the series whose bar ended since; services/fetcher/cycle.py)."""
    expression = ctx.settings.fetch_schedule
    last_done = parse_utc(ctx.redis.get(LAST_TICK_KEY))
    tick = due_tick(expression, last_done, ctx.clock.now())
    if tick is None:
        return None, None
    claim = claim_key(tick)
    if not ctx.redis.set(claim, secrets.token_hex(8), nx=True, ex=TICK_LEASE_SECONDS):
        log.info("tick %s is run by another fetcher", tick_text(tick))
        return tick, None
    missed = missed_ticks(expression, last_done, tick) if last_done is not None else []
    if missed:
        log.info(
            "catching up once for %d tick(s) missed since %s", len(missed), tick_text(missed[0])
        )
    log.info("tick %s", tick_text(tick))
    try:
        if missed:
            _record_skipped(ctx, missed, tick)
        report = run_intervals(ctx, run_id=lambda interval: tick_run_id(interval, tick))
    except BaseException as exc:
        ctx.redis.delete(claim)  # let this or another replica try the tick again
        if isinstance(exc, Exception):
            _record_failed(ctx, tick, exc)
        raise
    ctx.redis.eval(_ADVANCE, 1, LAST_TICK_KEY, tick_text(tick))
    return tick, report


def _due(ctx: FetchContext, tick: datetime) -> bool:
    return ctx.clock.now() >= tick


def run_schedule(ctx: FetchContext, *, until: Callable[[], bool] = lambda: False) -> int:
    """Tick for ever (or until ``until()``); returns how many ticks this replica ran.

    Between ticks it wakes every RESTATEMENT_POLL_SECONDS (a setting) for restatements the
    loader flagged (one Redis GET), so a series found restated is re-fetched before the next
    tick (services/fetcher/restate.py), and backfills newly configured series until the next
    tick is due (services/fetcher/onboard.py).
    """
    ran = 0
    # Before the first tick is named: our wall clock is not the API's (a restarted fetcher on
    # an accelerated or lagging API named a tick from wall time and skipped the API's ticks).
    ctx.client.sync_clock()
    while not until():
        try:
            _, report = run_due_tick(ctx)
        except SERVER_LOST as exc:
            pause = RETRY_AFTER_FAILURE_SECONDS
            log.error("tick failed: %s; retrying in %.0f s", outage_line(exc), pause)
            ctx.clock.sleep(RETRY_AFTER_FAILURE_SECONDS)
            continue
        except Exception:
            log.exception("tick failed; retrying in %.0f s", RETRY_AFTER_FAILURE_SECONDS)
            ctx.clock.sleep(RETRY_AFTER_FAILURE_SECONDS)
            continue
        ran += report is not None
        try:
            # Every tick reads the table (a flag lost with Redis); between ticks, the flag only.
            run_open_restatements(ctx, check_database=report is not None)
        except Exception:
            log.exception("restatements failed; trying again at the next wake-up")
        upcoming = next_tick(ctx.settings.fetch_schedule, ctx.clock.now())
        try:
            # New symbols' history, between ticks: it stops (resumably) when the tick is due.
            run_pending_backfills(ctx, stop=partial(_due, ctx, upcoming))
        except SERVER_LOST as exc:
            log.error("backfills of new series wait: %s", outage_line(exc))
        except Exception:
            log.exception("backfills of new series failed; trying again at the next wake-up")
        now = ctx.clock.now()
        upcoming = next_tick(ctx.settings.fetch_schedule, now)
        if report is not None:
            log.info("next tick at %s", tick_text(upcoming))
        poll = ctx.settings.restatement_poll_seconds
        ctx.clock.sleep(min((upcoming - now).total_seconds(), poll))
    return ran
