"""RQ job of the loader: transformed batches into Postgres, coalesced, one transaction each.

Every batch keeps its own deterministic job (``load-<batch_id>``, enqueued by the transformer).
When a load job runs it first claims its own batch, then also claims other batches whose jobs
are still waiting in the load queue, up to ``LOAD_BATCH_MAX_ROWS`` bars or until
``LOAD_BATCH_MAX_WAIT_SECONDS`` have passed, and writes them all in one transaction.

A claim is one Redis key per batch, set by a Lua script so that two loader workers can never
both own a batch. While its owner works the key holds the owner's job id and RQ worker name (with
a lease of the job timeout, so an owner whose death cannot be seen still frees it in the end);
after the commit it holds ``done:`` and a digest of the batch's content. A job that finds its
batch ``done`` with the content it sees now finishes as a no-op; a job whose batch is owned by a
running job waits for it; a job whose batch is owned by a dead one (its worker killed, or its job
no longer running there) takes the claim over at once. If the transaction fails, the claims are
released and every batch's own job still loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import pandas as pd
import psycopg2
from redis import Redis
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.contract import (
    OLAP_COLUMNS,
    OLAP_KEY,
    QUARANTINE_COLUMNS,
    QUARANTINE_KEY,
    RawPayload,
    column_names,
)
from marketpipe.db import transaction
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.settings import Settings, load_settings
from marketpipe.worker import worker_is_dead
from services.loader.daily import rebuild_daily
from services.loader.upsert import prepare_session, upsert_frame, upsert_rows

log = logging.getLogger("marketpipe.loader")

LINEAGE: Final = ("payload_id", "transformed_at")
CLAIM_PREFIX: Final = f"{broker.KEY_PREFIX}:load-claim:"
DONE_PREFIX: Final = "done:"
# How often a job re-checks a batch owned by another job, and the queue while coalescing.
POLL_SECONDS: Final = 0.05

# KEYS[1] claim key; ARGV: owner, done marker of the content the caller sees, lease seconds.
# Free, our own job's (a retried job, possibly on another worker) or done with other content ->
# ours; done with this content -> nothing to do; owned by another job -> busy.
_CLAIM_SCRIPT: Final = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[2] then return 'done' end
if (not held) or string.match(held, '^[^ ]*') == string.match(ARGV[1], '^[^ ]*')
        or string.sub(held, 1, 5) == 'done:' then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
    return 'claimed'
end
return 'busy'
"""
# Compare-and-set: take a dead owner's claim only if it still holds it (ARGV: expected, owner,
# lease), so of two jobs finding the same dead owner exactly one wins.
_TAKEOVER_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""
_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class BatchBusyError(RuntimeError):
    """Another job held this batch for longer than a job may run; RQ retries this job later."""


@dataclass(frozen=True)
class ClaimedBatch:
    batch_id: str
    payload: RawPayload
    frames: dict[str, pd.DataFrame]
    digest: str

    @property
    def rows(self) -> int:
        return len(self.frames["bars"])

    @property
    def done_marker(self) -> str:
        return DONE_PREFIX + self.digest


@cache
def _settings() -> Settings:
    return load_settings()


def _claim_key(batch_id: str) -> str:
    return CLAIM_PREFIX + batch_id


def read_batch(redis: Redis, batch_id: str) -> ClaimedBatch:
    """The batch's frames, its payload and a digest of exactly the bytes stored."""
    stored = broker.get_batch_ipc(redis, batch_id)
    digest = hashlib.sha256()
    for name in sorted(stored):
        digest.update(name.encode() + b"\0" + stored[name])
    return ClaimedBatch(
        batch_id=batch_id,
        payload=broker.get_payload(redis, batch_id),
        frames={name: broker.ipc_to_frame(data) for name, data in stored.items()},
        digest=digest.hexdigest(),
    )


def claim(redis: Redis, batch: ClaimedBatch, owner: str, lease_seconds: int) -> str:
    """'claimed', 'done' (this content is already loaded) or 'busy' (another job owns it)."""
    state = redis.eval(
        _CLAIM_SCRIPT, 1, _claim_key(batch.batch_id), owner, batch.done_marker, lease_seconds
    )
    return state.decode() if isinstance(state, bytes) else str(state)


def owner_token(job_id: str, worker_name: str | None) -> str:
    """What a claim holds while its owner works: the job, and the worker that runs it."""
    return f"{job_id} {worker_name}" if worker_name else job_id


def owner_is_dead(redis: Redis, holder: str, *, hostname: str | None = None) -> bool:
    """True when the job named by a claim can no longer finish (or release) its batches.

    Dead: its worker is gone (see :func:`marketpipe.worker.worker_is_dead`), or its job is not
    running on that worker any more (a killed work horse: the job failed or waits for its retry).
    A holder without a worker (a load run outside RQ) cannot be judged: only the lease frees it.
    """
    job_id, _, worker_name = holder.partition(" ")
    if not worker_name:
        return False
    if worker_is_dead(redis, worker_name, hostname or socket.gethostname()):
        return True
    try:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return True
    return job.get_status(refresh=False) != JobStatus.STARTED or job.worker_name != worker_name


def take_over(redis: Redis, batch_id: str, dead_holder: str, owner: str, lease: int) -> bool:
    """Move a dead owner's claim to ``owner``; False if it changed hands meanwhile."""
    taken = redis.eval(_TAKEOVER_SCRIPT, 1, _claim_key(batch_id), dead_holder, owner, lease)
    return bool(taken)


def _holder(redis: Redis, batch_id: str) -> str | None:
    held = redis.get(_claim_key(batch_id))
    return held.decode() if isinstance(held, bytes) else held


def release(redis: Redis, batch_ids: Sequence[str], owner: str) -> None:
    for batch_id in batch_ids:
        redis.eval(_RELEASE_SCRIPT, 1, _claim_key(batch_id), owner)


def mark_done(redis: Redis, batches: Sequence[ClaimedBatch], ttl_seconds: int) -> None:
    with redis.pipeline() as pipe:
        for batch in batches:
            pipe.set(_claim_key(batch.batch_id), batch.done_marker, ex=ttl_seconds)
        pipe.execute()


def _land_raw(cur: Any, payload: RawPayload) -> None:
    cur.execute(
        "INSERT INTO marketpipe.raw_payloads"
        " (payload_id, source, endpoint, symbol, interval, fetched_at, request, body, instrument)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payload_id) DO NOTHING",
        (
            payload.payload_id,
            payload.source,
            payload.endpoint,
            payload.symbol,
            payload.interval,
            payload.fetched_at,
            json.dumps(payload.request),
            json.dumps(payload.body),
            json.dumps(payload.instrument),
        ),
    )


def _advance_watermarks(cur: Any, bars: pd.DataFrame) -> None:
    complete = bars[bars["is_complete"].astype(bool)]
    if complete.empty:
        return
    latest = complete.groupby(["symbol", "interval"], as_index=False)["bar_time"].max()
    for row in latest.itertuples(index=False):
        cur.execute(
            "INSERT INTO marketpipe.watermarks AS w (symbol, interval, last_complete_bar)"
            " VALUES (%s, %s, %s) ON CONFLICT (symbol, interval) DO UPDATE"
            " SET last_complete_bar = EXCLUDED.last_complete_bar, updated_at = now()"
            " WHERE EXCLUDED.last_complete_bar > w.last_complete_bar",
            (row.symbol, row.interval, row.bar_time.to_pydatetime()),
        )


def _log_run(cur: Any, batch: ClaimedBatch, loaded: int, started_at: datetime) -> None:
    bars, quarantine = batch.frames["bars"], batch.frames["quarantine"]
    if bars.empty:
        status = "failed" if not quarantine.empty else "no_data"
    else:
        status = "partial" if not quarantine.empty else "ok"
    reasons = sorted(set(quarantine["reason"])) if not quarantine.empty else []
    payload = batch.payload
    cur.execute(
        "INSERT INTO marketpipe.pipeline_runs (run_id, component, status, symbol, interval,"
        " payload_id, rows_in, rows_loaded, rows_quarantined, message, started_at)"
        " VALUES (%s, 'loader', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (run_id) DO NOTHING",
        (
            f"load:{payload.payload_id}",
            status,
            payload.symbol,
            payload.interval,
            payload.payload_id,
            len(bars) + len(quarantine),
            loaded,
            len(quarantine),
            "; ".join(reasons)[:2000] or None,
            started_at,
        ),
    )


def _combined(batches: Sequence[ClaimedBatch], name: str, key: Sequence[str]) -> pd.DataFrame:
    """One frame of every batch's rows; on a repeated key the latest fetch wins."""
    frames = [b.frames[name] for b in batches if not b.frames[name].empty]
    if not frames:
        return batches[0].frames[name]
    if len(frames) == 1:
        return frames[0]
    # ON CONFLICT may touch a row only once per statement: overlapping fetches of one series
    # repeat bars, and the batches are in fetch order, so keeping the last keeps the newest.
    return pd.concat(frames, ignore_index=True).drop_duplicates(list(key), keep="last")


def write_batches(cur: Any, batches: Sequence[ClaimedBatch], started_at: datetime) -> int:
    """Raw payloads, bars, daily bars rebuilt from them, quarantine, run log and watermarks."""
    batches = sorted(batches, key=lambda b: b.payload.fetched_at)
    prepare_session(cur)
    for batch in batches:
        _land_raw(cur, batch.payload)
    bars = _combined(batches, "bars", OLAP_KEY)
    changed = upsert_rows(
        cur,
        "bars",
        bars,
        column_names(OLAP_COLUMNS),
        OLAP_KEY,
        compare_exclude=LINEAGE,
        count_by="payload_id",
    )
    # From the bars now stored, never from the transformer's frames (services/loader/daily.py).
    rebuild_daily(cur, bars)
    upsert_frame(
        cur,
        "quarantine",
        _combined(batches, "quarantine", QUARANTINE_KEY),
        column_names(QUARANTINE_COLUMNS),
        QUARANTINE_KEY,
        compare_exclude=("quarantined_at",),
    )
    _advance_watermarks(cur, bars)
    for batch in batches:
        _log_run(cur, batch, changed.get(batch.payload.payload_id, 0), started_at)
    return sum(changed.values())


def _pending_batch_ids(redis: Redis, settings: Settings) -> list[str]:
    """Batch ids of the load jobs waiting in the queue, oldest first."""
    job_ids = broker.queue(LOAD_QUEUE, redis, settings).get_job_ids()
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer)
    return [
        str(job.args[0])
        for job in jobs
        if job is not None and job.func_name == LOAD_JOB and len(job.args) == 1
    ]


def _claim_own(redis: Redis, batch_id: str, owner: str, lease: int) -> ClaimedBatch | None:
    """Our batch, claimed; None if it is already loaded (a coalescing job took it)."""
    deadline = time.monotonic() + lease
    while True:
        # Re-read each round: if the content changed meanwhile, we load (and mark) the new one.
        batch = read_batch(redis, batch_id)
        state = claim(redis, batch, owner, lease)
        if state == "claimed":
            return batch
        if state == "done":
            return None
        holder = _holder(redis, batch_id)
        if holder and owner_is_dead(redis, holder):
            if take_over(redis, batch_id, holder, owner, lease):
                log.warning("batch %s: took over the claim of dead owner %s", batch_id, holder)
            continue  # ours now, or someone else's: claim() tells on the next round
        if time.monotonic() > deadline:
            raise BatchBusyError(f"batch {batch_id} has been owned by another job for {lease} s")
        time.sleep(POLL_SECONDS)


def _coalesce(
    redis: Redis, settings: Settings, own: ClaimedBatch, owner: str
) -> list[ClaimedBatch]:
    """Our batch plus pending ones we could claim, within the row limit and the short wait."""
    batches, rows, seen = [own], own.rows, {own.batch_id}
    deadline = time.monotonic() + settings.load_batch_max_wait_seconds
    while rows < settings.load_batch_max_rows:
        for batch_id in _pending_batch_ids(redis, settings):
            if batch_id in seen:
                continue
            seen.add(batch_id)
            try:
                batch = read_batch(redis, batch_id)
            except broker.MissingBlobError:
                continue  # its own job reports that
            if rows + batch.rows > settings.load_batch_max_rows:
                continue
            if claim(redis, batch, owner, settings.job_timeout_seconds) == "claimed":
                batches.append(batch)
                rows += batch.rows
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return batches


def _commit(settings: Settings, batches: Sequence[ClaimedBatch]) -> int:
    started_at = datetime.now(UTC)
    with transaction(settings.role_url("loader")) as cur:
        return write_batches(cur, batches, started_at)


def load_batch(batch_id: str) -> dict[str, Any]:
    """RQ entry point: load this batch and the pending ones it coalesces, all or nothing."""
    settings = _settings()
    job = get_current_job()
    owner = (
        owner_token(job.id, job.worker_name)
        if job is not None
        else f"direct-{secrets.token_hex(8)}"
    )
    return run_load(settings, broker.redis_from(settings), batch_id, owner)


def run_load(settings: Settings, redis: Redis, batch_id: str, owner: str) -> dict[str, Any]:
    """Claim, coalesce and commit (see the module docstring); the job's JSON result."""
    own = _claim_own(redis, batch_id, owner, settings.job_timeout_seconds)
    if own is None:
        return {"loaded": [], "already_loaded": True, "bars_changed": 0}
    batches = _coalesce(redis, settings, own, owner)
    try:
        try:
            changed = _commit(settings, batches)
        except psycopg2.Error as exc:
            if len(batches) == 1 or isinstance(exc, psycopg2.OperationalError):
                raise
            # A bad batch must not hold back the ones coalesced with it: give the others back
            # to their own jobs and load ours alone (which fails again only if ours is the bad one).
            log.warning("coalesced load of %d batches failed (%s); alone now", len(batches), exc)
            release(redis, [b.batch_id for b in batches[1:]], owner)
            batches = [own]
            changed = _commit(settings, batches)
    except BaseException:
        release(redis, [b.batch_id for b in batches], owner)
        raise
    mark_done(redis, batches, settings.blob_ttl_seconds)
    log.info("loaded %d batch(es), %d bars changed", len(batches), changed)
    return {
        "loaded": [b.batch_id for b in batches],
        "already_loaded": False,
        "bars_changed": changed,
        "bars": sum(b.rows for b in batches),
    }
