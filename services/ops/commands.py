"""The recovery commands behind ``python -m services.ops``, importable for tests.

Both only enqueue work for the ordinary workers (nothing is transformed or loaded in this
process), so a recovery runs at the workers' scale and under their retry policy, and a replay
is as idempotent as any load: the loader's upsert changes only rows whose values differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import FailedJobRegistry

from marketpipe import broker, raw
from marketpipe.db import transaction
from marketpipe.queues import LOAD_QUEUE, RESTATEMENT_PENDING_KEY, TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings

QUEUES = (TRANSFORM_QUEUE, LOAD_QUEUE)


def replay_job_id(payload_id: str) -> str:
    # Deterministic: replaying the same window twice while the first replay is still queued
    # replaces the queued job instead of transforming the payload twice.
    return f"replay-{payload_id}"


def requeue_failed(
    redis: Redis, settings: Settings, queues: Sequence[str] = QUEUES
) -> dict[str, int]:
    """Move every job of the failed-job registries back onto its queue; count per queue."""
    moved: dict[str, int] = {}
    for name in queues:
        queue = broker.queue(name, redis, settings)
        registry = FailedJobRegistry(queue=queue)
        job_ids = registry.get_job_ids()
        count = 0
        for job_id in job_ids:
            try:
                # RQ resets the job's state and pushes it to the end of its queue.
                registry.requeue(job_id)
            except (NoSuchJobError, InvalidJobOperation):
                # The job's hash expired, or another operator requeued it meanwhile.
                registry.remove(job_id)
                continue
            count += 1
        moved[name] = count
    return moved


@dataclass
class ReplayReport:
    enqueued: list[str] = field(default_factory=list)  # payload ids, in fetch order
    symbols: dict[str, int] = field(default_factory=dict)


def replay(
    redis: Redis,
    settings: Settings,
    since: datetime,
    until: datetime,
    symbols: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-transform and reload every payload landed in the window, without calling the API.

    Every answer was landed before its transform was enqueued, so this covers the payloads
    whose transform failed as well as those whose rows were damaged later.
    """
    report = ReplayReport()
    transform = broker.queue(TRANSFORM_QUEUE, redis, settings)
    # The loader role reads raw_payloads (compose: ops runs in a loader container).
    loader = settings.role_url("loader")
    landed = [
        payload
        for interval in settings.intervals
        for payload in raw.landed_payloads(loader, since, until, interval, symbols)
    ]
    for payload in landed:
        report.enqueued.append(payload.payload_id)
        report.symbols[payload.symbol] = report.symbols.get(payload.symbol, 0) + 1
        if dry_run:
            continue
        transform.enqueue(
            TRANSFORM_JOB,
            args=(payload.payload_id,),
            job_id=replay_job_id(payload.payload_id),
            retry=broker.default_retry(),
            description=f"replay {payload.symbol} {payload.interval}",
        )
    return report


_REQUEST_RESTATEMENT = (
    "INSERT INTO marketpipe.restatements (symbol, interval, kind, history_from)"
    " SELECT %s, %s, 'requested', min(bar_time) FROM marketpipe.bars"
    " WHERE symbol = %s AND interval = %s HAVING count(*) > 0"
    " ON CONFLICT (symbol, interval) WHERE status = 'detected' DO NOTHING"
    " RETURNING restatement_id"
)


class NothingToRestate(LookupError):
    """The series has no stored bars: a backfill, not a restatement, is what it needs."""


@dataclass(frozen=True)
class RestateRequest:
    restatement_id: int
    opened: bool  # False: the series already had an open restatement, which this joins


def request_restatement(
    redis: Redis, settings: Settings, symbol: str, interval: str
) -> RestateRequest:
    """Record an on-demand restatement of a stored series and flag it for the fetcher."""
    # The loader's role writes restatements (compose: ops runs in a loader container).
    with transaction(settings.role_url("loader")) as cur:
        cur.execute(_REQUEST_RESTATEMENT, (symbol, interval, symbol, interval))
        made = cur.fetchall()
        if made:
            request = RestateRequest(int(made[0][0]), True)
        else:
            cur.execute(
                "SELECT restatement_id FROM marketpipe.restatements"
                " WHERE symbol = %s AND interval = %s AND status = 'detected'",
                (symbol, interval),
            )
            found = cur.fetchall()
            if not found:
                raise NothingToRestate(
                    f"no stored bars of {symbol} {interval}: backfill it instead"
                )
            request = RestateRequest(int(found[0][0]), False)
    redis.set(RESTATEMENT_PENDING_KEY, request.restatement_id)
    return request


def restatement_status(settings: Settings, restatement_id: int) -> tuple[str, str | None]:
    """(status, message) of a restatement."""
    with transaction(settings.role_url("loader")) as cur:
        cur.execute(
            "SELECT status, message FROM marketpipe.restatements WHERE restatement_id = %s",
            (restatement_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise LookupError(f"no restatement {restatement_id}")
    return str(row[0]), row[1]
