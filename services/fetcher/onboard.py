"""Adding a symbol is one step: a newly configured series is backfilled to BACKFILL_SINCE.

``marketpipe.configured_series`` lists every (symbol, interval) of SYMBOLS x INTERVALS the
fetcher has been configured with. :func:`sync_configured` adds the new ones (their backfill due
from BACKFILL_SINCE as seen that day) and marks the ones no longer configured inactive: no tick
fetches them any more, their stored history stays. :func:`run_pending_backfills` runs the due
backfills between ticks with the backfill machinery (windows, the shared credit budget, progress
in Redis, so a restarted fetcher resumes), one replica at a time, and stops before the next tick
is due; each window's progress is written to the series' row for the health page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Final

from marketpipe.db import transaction
from services.fetcher.backfill import PROGRESS_PREFIX, BackfillInterrupted, run_backfill
from services.fetcher.context import FetchContext

log = logging.getLogger("marketpipe.fetcher.onboard")

LOCK_KEY: Final = f"{PROGRESS_PREFIX}:auto:lock"
# Longer than a window takes (a few requests); a crashed holder frees the backfills after it.
LOCK_SECONDS: Final = 600

_ADD: Final = (
    "INSERT INTO marketpipe.configured_series AS c (symbol, interval, backfill_since)"
    " VALUES (%s, %s, %s) ON CONFLICT (symbol, interval) DO UPDATE"
    " SET status = 'active', removed_at = NULL, updated_at = now() WHERE c.status = 'inactive'"
)
_RETIRE: Final = (
    "UPDATE marketpipe.configured_series SET status = 'inactive', removed_at = now(),"
    " updated_at = now() WHERE status = 'active'"
    " AND NOT (symbol || ' ' || interval) = ANY(%s) RETURNING symbol, interval"
)
_PENDING: Final = (
    "SELECT symbol, interval, backfill_since FROM marketpipe.configured_series"
    " WHERE status = 'active' AND backfill_since IS NOT NULL"
    " AND coalesce(backfill_status, 'running') = 'running'"
    " ORDER BY configured_at, symbol, interval"
)
_PROGRESS: Final = (
    "UPDATE marketpipe.configured_series SET backfill_status = %s, windows_done = %s,"
    " windows_total = %s, backfill_message = NULLIF(%s, ''), updated_at = now()"
    " WHERE symbol = %s AND interval = %s"
)


@dataclass(frozen=True)
class PendingBackfill:
    symbol: str
    interval: str
    since: date


def sync_configured(ctx: FetchContext) -> list[PendingBackfill]:
    """Record the configured series (new ones due a backfill), retire the others; what is due."""
    settings = ctx.settings
    since = settings.backfill_start(ctx.clock.now().date())
    wanted = [(s, i) for s in settings.symbols for i in settings.intervals]
    with transaction(settings.role_url("fetcher")) as cur:
        cur.executemany(_ADD, [(s, i, since) for s, i in wanted])
        cur.execute(_RETIRE, ([f"{s} {i}" for s, i in wanted],))
        for symbol, interval in cur.fetchall():
            log.warning(
                "%s %s is no longer configured: not fetched any more, its history is kept"
                " (marked inactive)",
                symbol,
                interval,
            )
        cur.execute(_PENDING)
        return [PendingBackfill(str(s), str(i), d) for s, i, d in cur.fetchall()]


class RecordedProgress:
    """A backfill's progress written to its series' row (the health page reads it)."""

    def __init__(self, ctx: FetchContext, series: PendingBackfill, total: int) -> None:
        self.ctx, self.series, self.total = ctx, series, total
        self.done = 0
        self.write("running", 0)

    def write(self, status: str, done: int, message: str = "") -> None:
        self.done = done
        with transaction(self.ctx.settings.role_url("fetcher")) as cur:
            cur.execute(
                _PROGRESS,
                (status, done, self.total, message, self.series.symbol, self.series.interval),
            )

    def update(self, done: int, note: str = "", **figures: Any) -> None:
        """Windows done; the note and figures are the terminal bar's (the row keeps counts)."""
        self.write("running", done)

    def finish(self) -> None:
        """The windows are fetched; the run's outcome is written by the caller."""


def _backfill_one(ctx: FetchContext, series: PendingBackfill, stop: Callable[[], bool]) -> None:
    sinks: list[RecordedProgress] = []

    def sink(total: int) -> RecordedProgress:
        sinks.append(RecordedProgress(ctx, series, total))
        return sinks[-1]

    narrowed = replace(ctx, settings=ctx.settings.for_interval(series.interval))
    key = f"{PROGRESS_PREFIX}:auto:{series.interval}:{series.symbol}:{series.since.isoformat()}"
    log.info("backfilling %s %s since %s", series.symbol, series.interval, series.since)
    try:
        report = run_backfill(
            narrowed, series.since, symbols=[series.symbol], progress=sink, key=key, stop=stop
        )
    except BackfillInterrupted as exc:
        if sinks:
            sinks[-1].write("running", sinks[-1].done, f"interrupted, resumes: {exc}")
        log.error("backfill of %s %s interrupted (%s); resumes later", *_name(series), exc)
        return
    [progress] = sinks
    if report.errors:
        progress.write("failed", report.windows_done, "; ".join(report.errors.values()))
    elif report.windows_done >= report.windows_total:
        progress.write("done", report.windows_done)
        log.info("backfill of %s %s since %s done", *_name(series), series.since)


def _name(series: PendingBackfill) -> tuple[str, str]:
    return series.symbol, series.interval


def run_pending_backfills(ctx: FetchContext, *, stop: Callable[[], bool]) -> int:
    """Backfill the configured series that still need it until ``stop()``; how many were due."""
    pending = sync_configured(ctx)
    if not pending or stop():
        return len(pending)
    if not ctx.redis.set(LOCK_KEY, "1", nx=True, ex=LOCK_SECONDS):
        return len(pending)  # another replica backfills
    try:
        for series in pending:
            if stop():
                break
            _backfill_one(ctx, series, stop)
            ctx.redis.expire(LOCK_KEY, LOCK_SECONDS)
    finally:
        ctx.redis.delete(LOCK_KEY)
    return len(pending)
