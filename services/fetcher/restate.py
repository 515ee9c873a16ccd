"""Restating a series: re-fetch its whole stored history, then have it swapped in whole.

The loader records a restatement when a payload re-serves stored bars differently
(services/loader/restatement.py); ``ops restate`` records one on demand. The fetcher, which alone
holds the API key, runs each open one: the backfill machinery (windows of at most 5000 bars with
their warm-up, the shared credit budget, resumable progress in Redis) fetches the series from its
first stored bar to now, every answer is landed raw first, and one transform job turns all
windows into one batch that one load job swaps in, in one transaction. The restatement's row
turns 'restated' in that transaction; until then it stays open and a restarted fetcher resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import psycopg2

from marketpipe import broker, raw
from marketpipe.db import connect
from marketpipe.queues import RESTATE_TRANSFORM_JOB, RESTATEMENT_PENDING_KEY, TRANSFORM_QUEUE
from marketpipe.runs import restatement_run_id
from services.fetcher.backfill import (
    PROGRESS_TTL_SECONDS,
    BackfillInterrupted,
    HandOn,
    run_backfill,
)
from services.fetcher.client import SeriesAnswer
from services.fetcher.context import FetchContext
from services.fetcher.handoff import payload_of
from services.fetcher.runlog import FetchRun, record

log = logging.getLogger("marketpipe.fetcher.restate")

RESTATE_PREFIX: Final = "marketpipe:restate"
# A restatement whose re-fetch failed for good (the API refuses the symbol) is tried again after
# this long, not at every poll (each try costs credits).
RETRY_AFTER_ERROR_SECONDS: Final = 3600

_OPEN_SQL: Final = (
    "SELECT restatement_id, symbol, interval, kind, history_from FROM marketpipe.restatements"
    " WHERE status = 'detected' ORDER BY detected_at, restatement_id"
)


@dataclass(frozen=True)
class OpenRestatement:
    restatement_id: int
    symbol: str
    interval: str
    kind: str
    history_from: datetime | None


def progress_key(restatement_id: int) -> str:
    return f"{RESTATE_PREFIX}:{restatement_id}"


def open_restatements(ctx: FetchContext) -> list[OpenRestatement]:
    """Restatements waiting for their re-fetch; empty (and logged) if Postgres does not answer."""
    try:
        conn = connect(
            ctx.settings.role_url("fetcher"),
            connect_timeout=5,
            options="-c default_transaction_read_only=on",
        )
    except psycopg2.Error as exc:
        log.warning("restatements unavailable (%s); checking again later", exc)
        return []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_OPEN_SQL)
            return [OpenRestatement(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4]) for r in cur]
    except psycopg2.Error as exc:
        log.warning("restatements unavailable (%s); checking again later", exc)
        return []
    finally:
        conn.close()


def _collector(key: str) -> HandOn:
    """A backfill hand-on that lands each window's answer and notes its payload id."""

    def collect(
        ctx: FetchContext,
        answer: SeriesAnswer,
        request: dict[str, Any],
        instrument: dict[str, Any],
    ) -> bool:
        payload = payload_of(ctx, answer, request, instrument)
        raw.land_payload(ctx.settings.role_url("fetcher"), payload)  # raw first, as always
        ctx.redis.hset(key, f"payload:{request['since']}", payload.payload_id)
        return True

    return collect


def _record(
    ctx: FetchContext, restatement: OpenRestatement, started_at: datetime, **fields: Any
) -> None:
    record(
        ctx.settings,
        FetchRun(
            run_id=restatement_run_id(restatement.restatement_id),
            component="restatement",
            interval=restatement.interval,
            symbol=restatement.symbol,
            started_at=started_at,
            **fields,
        ),
    )


def run_restatement(ctx: FetchContext, restatement: OpenRestatement) -> bool:
    """Re-fetch one series and enqueue its swap; False if it is not done (retried later)."""
    key = progress_key(restatement.restatement_id)
    if ctx.redis.hget(key, "enqueued") or ctx.redis.exists(f"{key}:retry-after"):
        return False
    if restatement.history_from is None:
        log.warning(
            "restatement %d: %s %s has no stored bars; nothing to restate",
            restatement.restatement_id,
            restatement.symbol,
            restatement.interval,
        )
        return False
    series_ctx = replace(ctx, settings=ctx.settings.for_interval(restatement.interval))
    since = restatement.history_from.date()
    log.warning(
        "restating %s %s since %s (restatement %d, %s)",
        restatement.symbol,
        restatement.interval,
        since,
        restatement.restatement_id,
        restatement.kind,
    )
    started_at = ctx.clock.now()
    what = f"{restatement.kind} #{restatement.restatement_id} since {since}"
    _record(ctx, restatement, started_at, status="running", message=f"{what}: re-fetching")
    try:
        report = run_backfill(
            series_ctx, since, symbols=[restatement.symbol], key=key, hand_on=_collector(key)
        )
    except BackfillInterrupted as exc:
        log.error("restatement %d interrupted (%s); resumes later", restatement.restatement_id, exc)
        _record(ctx, restatement, started_at, status="failed", message=f"{what}: {exc}")
        return False
    if report.errors:
        _record(
            ctx,
            restatement,
            started_at,
            status="failed",
            credits=report.credits,
            api_errors=len(report.errors),
            message=f"{what}: the API refused the re-fetch, retried later",
        )
        log.error(
            "restatement %d: the API refused the re-fetch (%s); trying again in %d s",
            restatement.restatement_id,
            "; ".join(report.errors.values()),
            RETRY_AFTER_ERROR_SECONDS,
        )
        ctx.redis.set(f"{key}:retry-after", 1, ex=RETRY_AFTER_ERROR_SECONDS)
        return False
    saved = {
        k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
        for k, v in ctx.redis.hgetall(key).items()
    }
    # Newest window first: the order the swap's transform prefers a window's values in.
    payload_ids = [
        saved[k] for k in sorted((k for k in saved if k.startswith("payload:")), reverse=True)
    ]
    # Before the enqueue: the swap closes this row, and a 'running' written after would undo it.
    _record(
        ctx,
        restatement,
        started_at,
        status="running",
        credits=report.credits,
        waited_seconds=report.waited_seconds,
        windows=len(payload_ids),
        message=f"{what}: {len(payload_ids)} windows fetched, swap enqueued",
    )
    broker.queue(TRANSFORM_QUEUE, ctx.redis, ctx.settings).enqueue(
        RESTATE_TRANSFORM_JOB,
        args=(restatement.restatement_id, payload_ids),
        job_id=f"transform-restatement-{restatement.restatement_id}",
        retry=broker.default_retry(),
        description=f"restate #{restatement.restatement_id} {restatement.symbol}",
    )
    ctx.redis.hset(key, "enqueued", 1)
    ctx.redis.expire(key, PROGRESS_TTL_SECONDS)
    log.info(
        "restatement %d: %d windows (%d credits) fetched, swap enqueued",
        restatement.restatement_id,
        len(payload_ids),
        report.credits,
    )
    return True


def run_open_restatements(ctx: FetchContext, *, check_database: bool = False) -> int:
    """Run every open restatement when one was flagged (or ``check_database``); how many ran."""
    flagged = ctx.redis.getdel(RESTATEMENT_PENDING_KEY)
    if not flagged and not check_database:
        return 0
    ran = 0
    for restatement in open_restatements(ctx):
        ran += run_restatement(ctx, restatement)
    return ran
