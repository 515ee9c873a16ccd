"""The hourly tick on real workers: the first tick against the steady tick (gap + overlap).

Run: .venv/bin/python -m bench.bench_tick [--symbols 8,50] [--steady 3] [--workers 2]
     [--fork-per-job]

Per symbol count, on its own scratch database and Redis db: the sandbox in-process (HTTP,
unlimited credits, its clock frozen on a Wednesday mid-session and moved an hour per tick), the
production fetcher cycle in this process, and ``--workers`` transformer and as many loader
worker processes (``python -m services.transformer`` / ``services.loader``, warm: started and
registered before the first tick). A tick is timed from the cycle's start until every payload it
landed is loaded (its run-log row commits with its bars, so every newest bar is queryable).

Figures: the first tick (empty database, FETCH_OUTPUTSIZE bars each) is the baseline of the
steady ticks (one new bar each, asked as gap + FETCH_OVERLAP_BARS); bars fetched and raw bytes
landed (``pg_column_size`` of the JSONB bodies) per steady tick against what the warm-up design
fetched for the same tick (gap + warm-up per symbol, asked from the sandbox in the same run and
sized by the same function, not landed); raw bytes are the answers as JSONB text
(``octet_length(body::text)``, before TOAST compression). For the first symbol count,
``raw_payloads`` growth over a simulated day of 24 hourly ticks (bodies, and the table on disk).
Goals: 50 symbols' steady tick <= 3 s and faster than the first tick; bars and raw bytes per
steady tick <= 1/20 of the warm-up design's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg2
from redis import Redis
from rq import Worker
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from marketpipe.market import asset_class_of
from marketpipe.migrate import migrate
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import DEFAULT_SYMBOLS, Settings
from services.fetcher.__main__ import build_context
from services.fetcher.client import MarketDataClient, SeriesAnswer, SeriesQuery
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.series import warmup_bars
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.support.clock import InProcessClock
from tests.support.scratch import scratch_database, scratch_redis

REPO_ROOT = Path(__file__).resolve().parents[1]
# A Wednesday, 11:05 in New York: stocks mid-session, every series has a new bar each hour.
FIRST_TICK = datetime(2026, 3, 11, 15, 5, tzinfo=UTC)
MORE_SYMBOLS = (
    *("META", "TSLA", "JPM"),
    *("EUR/USD", "GBP/USD", "USD/JPY"),
    *(f"SYN{n:04d}" for n in range(1, 201)),
)


@dataclass
class Tick:
    seconds: float
    payloads: int
    bars: int
    raw_bytes: int
    # Per queue: mean seconds a job waited (enqueued -> started) and ran (started -> ended).
    jobs: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Where the tick's time went (:func:`timeline`), seconds by phase.
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class TimedClient:
    """The fetcher's API client, its calls timed (wall clock, as RQ stamps its jobs)."""

    client: MarketDataClient
    calls: list[tuple[float, float]] = field(default_factory=list)

    def time_series(self, symbols: Sequence[str], query: SeriesQuery) -> list[SeriesAnswer]:
        started = time.time()
        try:
            return self.client.time_series(symbols, query)
        finally:
            self.calls.append((started, time.time()))

    def reference(self, endpoint: str, symbol: str = "") -> list[dict[str, Any]]:
        started = time.time()
        try:
            return self.client.reference(endpoint, symbol)
        finally:
            self.calls.append((started, time.time()))

    def sync_clock(self) -> None:
        self.client.sync_clock()


@dataclass
class JobStamps:
    queue: str
    worker: str
    enqueued: float
    dequeued: float  # the worker took it (its execution was made)
    started: float  # the job function was called
    ended: float  # it returned
    finished: float  # RQ stored its result (ms precision: a Redis stream id)


def tick_jobs(redis: Redis, ids: list[str]) -> list[JobStamps]:
    """RQ's own stamps of this tick's transform and load jobs."""
    stamps = []
    for queue in (TRANSFORM_QUEUE, LOAD_QUEUE):
        registry = FinishedJobRegistry(queue, connection=redis, serializer=JSONSerializer)
        for job in Job.fetch_many(
            registry.get_job_ids(), connection=redis, serializer=JSONSerializer
        ):
            if job is None or not job.args or job.args[0] not in ids:
                continue
            result = job.latest_result()
            assert result is not None and result.execution_started_at is not None
            assert job.enqueued_at and job.started_at and job.ended_at
            stamps.append(
                JobStamps(
                    queue,
                    job.worker_name or "",
                    job.enqueued_at.timestamp(),
                    result.execution_started_at.timestamp(),
                    job.started_at.timestamp(),
                    job.ended_at.timestamp(),
                    result.created_at.timestamp(),
                )
            )
    return stamps


def job_times(stamps: list[JobStamps]) -> dict[str, tuple[float, float]]:
    """Per queue: mean seconds a job waited (enqueued -> started) and ran (started -> ended)."""
    times = {}
    for queue in (TRANSFORM_QUEUE, LOAD_QUEUE):
        jobs = [s for s in stamps if s.queue == queue]
        if jobs:
            waits = statistics.mean(s.started - s.enqueued for s in jobs)
            times[queue] = (waits, statistics.mean(s.ended - s.started for s in jobs))
    return times


def timeline(
    started: float, calls: list[tuple[float, float]], stamps: list[JobStamps], done: float
) -> dict[str, float]:
    """Where one tick's time went: the fetch, queue waits, RQ's part of a job, the job bodies.

    Means are per job. RQ's part of a job: ``rq before`` (dequeued -> function called: the
    fork and the start bookkeeping), ``rq after`` (returned -> result stored) and ``rq between``
    (result stored -> the same worker's next dequeue, when that job was already waiting: the
    horse's exit, heartbeat and dequeue).
    """
    transform = [s for s in stamps if s.queue == TRANSFORM_QUEUE]
    load = [s for s in stamps if s.queue == LOAD_QUEUE]
    phases = {
        "http calls": sum(end - begin for begin, end in calls),
        "first enqueue": min(s.enqueued for s in transform) - started,
        "last enqueue": max(s.enqueued for s in transform) - started,
    }
    for name, jobs in (("transform", transform), ("load", load)):
        phases[f"{name} wait"] = statistics.mean(s.dequeued - s.enqueued for s in jobs)
        phases[f"{name} rq before"] = statistics.mean(s.started - s.dequeued for s in jobs)
        phases[f"{name} body"] = statistics.mean(s.ended - s.started for s in jobs)
        phases[f"{name} rq after"] = statistics.mean(s.finished - s.ended for s in jobs)
        gaps = []
        by_worker: dict[str, list[JobStamps]] = {}
        for s in jobs:
            by_worker.setdefault(s.worker, []).append(s)
        for runs in by_worker.values():
            runs.sort(key=lambda s: s.dequeued)
            gaps += [b.dequeued - a.finished for a, b in pairwise(runs) if b.enqueued < a.finished]
        phases[f"{name} rq between"] = statistics.mean(gaps) if gaps else 0.0
    last = max(load, key=lambda s: s.ended)
    phases["last load ended"] = last.ended - started
    phases["last bar seen queryable"] = done - started
    return phases


def _query(settings: Settings, statement: str, *params: object) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


@contextmanager
def worker_processes(
    settings: Settings, redis: Redis, count: int, logs: Path, *, in_process: bool
) -> Iterator[None]:
    """``count`` transformer and ``count`` loader workers, registered before it yields."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWELVE_DATA_", "SANDBOX_"))}
    env.update(
        WORKER_IN_PROCESS="1" if in_process else "0",
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO_ROOT),
    )
    processes = []
    for module in ("services.transformer", "services.loader"):
        for n in range(count):
            log = (logs / f"{module}.{n}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", module], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
            )
    try:
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=redis)) < 2 * count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"workers did not start; see {logs}")
            time.sleep(0.1)  # polling interval; the deadline decides
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def free_redis_db(redis_base: str) -> Iterator[str]:
    """A scratch Redis db; on a shared server all 15 may be claimed for a while: wait."""
    deadline = time.monotonic() + 600
    while True:
        try:
            with scratch_redis(redis_base) as url:
                yield url
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)  # polling interval; the deadline decides


def run_tick(ctx: FetchContext, settings: Settings, known: set[str]) -> Tick:
    """One fetch cycle, timed until every payload it landed is loaded."""
    client = ctx.client
    assert isinstance(client, TimedClient)
    calls_before = len(client.calls)
    wall_started = time.time()
    started = time.perf_counter()
    run_cycle(ctx)
    landed = _query(
        settings,
        "SELECT payload_id, octet_length(body::text), jsonb_array_length(body->'values')"
        " FROM marketpipe.raw_payloads WHERE NOT (payload_id = ANY(%s))",
        list(known),
    )
    ids = [row[0] for row in landed]
    deadline = time.monotonic() + 300
    # One connection for the polling: a connection per poll would load the cores it measures.
    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT count(*) FROM marketpipe.pipeline_runs WHERE payload_id = ANY(%s)",
                    (ids,),
                )
                (done,) = cur.fetchone()
                if done == len(ids):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {len(ids)} payloads loaded")
                time.sleep(0.02)  # polling interval; the deadline decides
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    loaded_at = time.time()
    known.update(ids)
    stamps = tick_jobs(ctx.redis, ids)
    calls = client.calls[calls_before:]
    return Tick(
        seconds,
        len(ids),
        sum(r[2] for r in landed),
        sum(r[1] for r in landed),
        job_times(stamps),
        timeline(wall_started, calls, stamps, loaded_at),
    )


def warmup_design_tick(
    ctx: FetchContext, settings: Settings, sandbox: SandboxServer, asked_from: int
) -> tuple[int, int]:
    """Bars and JSONB text bytes the warm-up design fetched for the steady tick just run."""
    gaps: dict[str, int] = {}
    for request in sandbox.api.requests_seen()[asked_from:]:
        for symbol in request["symbols"]:
            gaps[symbol] = request["outputsize"] - settings.fetch_overlap_bars
    bodies = []
    for symbol, gap in gaps.items():
        asset_class = asset_class_of(symbol)
        size = min(5000, gap + warmup_bars(settings.interval, asset_class))
        [answer] = ctx.client.time_series([symbol], SeriesQuery(settings.interval, size))
        bodies.append(answer.body)
    texts = [json.dumps(body) for body in bodies]
    [(size,)] = _query(
        settings, "SELECT sum(octet_length(b::jsonb::text)) FROM unnest(%s::text[]) AS b", texts
    )
    bars = sum(len(body.get("values") or []) for body in bodies)
    return bars, int(size)


def bench_symbols(
    symbols: tuple[str, ...], args: argparse.Namespace, *, day: bool
) -> dict[str, Any]:
    pg = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    plan = SandboxSettings(
        port=0,
        clock_start=FIRST_TICK.isoformat(),
        clock_speed=0,
        credits_per_minute=1_000_000,
        credits_per_day=100_000_000,
    )
    with ExitStack() as stack:
        db_url = stack.enter_context(scratch_database(pg, prefix="marketpipe_bench"))
        migrate(Settings(database_url=db_url))
        redis_url = stack.enter_context(free_redis_db(redis_base))
        sandbox = stack.enter_context(SandboxServer(plan))
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_tick_")))
        settings = Settings(
            database_url=db_url,
            redis_url=redis_url,
            twelve_data_base_url=sandbox.url,
            symbols=symbols,
            interval="1h",
            api_credits_per_minute=100_000,
            api_credits_per_day=100_000_000,
            log_level="WARNING",
        )
        redis = Redis.from_url(redis_url)
        ctx = build_context(settings, clock=InProcessClock(sandbox.clock), redis=redis)
        ctx.client = TimedClient(ctx.client)
        stack.enter_context(
            worker_processes(settings, redis, args.workers, logs, in_process=args.in_process)
        )
        known: set[str] = set()
        first = run_tick(ctx, settings, known)
        steady: list[Tick] = []
        design: tuple[int, int] = (0, 0)
        for n in range(args.steady):
            sandbox.clock.advance(3600)
            asked_from = len(sandbox.api.requests_seen())
            steady.append(run_tick(ctx, settings, known))
            if n == 0:
                design = warmup_design_tick(ctx, settings, sandbox, asked_from)
        figures: dict[str, Any] = {"first": first, "steady": steady, "design": design}
        if day:
            [(table_before,)] = _query(
                settings, "SELECT pg_total_relation_size('marketpipe.raw_payloads')"
            )
            day_ticks = []
            for _ in range(24):
                sandbox.clock.advance(3600)
                day_ticks.append(run_tick(ctx, settings, known))
            [(table_after,)] = _query(
                settings, "SELECT pg_total_relation_size('marketpipe.raw_payloads')"
            )
            figures["day"] = (sum(t.raw_bytes for t in day_ticks), table_after - table_before)
            figures["day_bars"] = sum(t.bars for t in day_ticks)
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", default="8,50", help="symbol counts, comma-separated")
    parser.add_argument("--steady", type=int, default=3, help="steady ticks per symbol count")
    parser.add_argument("--workers", type=int, default=2, help="transformers (and loaders)")
    parser.add_argument(
        "--fork-per-job",
        dest="in_process",
        action="store_false",
        help="WORKER_IN_PROCESS=false: RQ's work horse forked per job (the default runs jobs in"
        " the worker process)",
    )
    args = parser.parse_args()
    ok = True
    counts = [int(n) for n in args.symbols.split(",")]
    print(
        f"sandbox over HTTP, unlimited credits; {args.workers} transformer + {args.workers}"
        f" loader workers ({'jobs in process' if args.in_process else 'a fork per job'});"
        " FETCH_OUTPUTSIZE 300, FETCH_OVERLAP_BARS 24"
    )
    for index, count in enumerate(counts):
        symbols = (*DEFAULT_SYMBOLS, *MORE_SYMBOLS)[:count]
        figures = bench_symbols(tuple(symbols), args, day=index == 0)
        first, steady = figures["first"], figures["steady"]
        times = [t.seconds for t in steady]
        median = statistics.median(times)
        ratio = first.seconds / median
        one = steady[0]
        design_bars, design_bytes = figures["design"]
        print(f"{count} symbols:")
        print(
            f"  first tick (baseline): {first.seconds:.2f} s, {first.payloads} payloads,"
            f" {first.bars} bars, {first.raw_bytes / 1e6:.2f} MB raw"
        )
        print(
            f"  steady tick: median {median:.2f} s ({min(times):.2f}-{max(times):.2f},"
            f" {len(times)} ticks), {ratio:.1f}x faster than the first tick"
        )
        print(
            f"  per steady tick: {one.bars} bars fetched ({one.bars / max(1, one.payloads):.0f}"
            f" per symbol), {one.raw_bytes / 1e3:.0f} kB raw landed; warm-up design: "
            f"{design_bars} bars, {design_bytes / 1e3:.0f} kB"
            f" (bars {one.bars / design_bars:.3f}x, bytes {one.raw_bytes / design_bytes:.3f}x,"
            " goal <= 0.05x)"
        )
        for queue, (wait, run) in one.jobs.items():
            print(
                f"    {queue} jobs of a steady tick: mean wait {wait:.2f} s, mean run {run:.2f} s"
            )
        print("  timeline of the median steady tick (s from its start; per job: means):")
        middle = sorted(steady, key=lambda t: t.seconds)[len(steady) // 2]
        for phase, seconds in middle.phases.items():
            print(f"    {phase}: {seconds:.3f}")
        print(
            "    first tick: "
            + ", ".join(f"{phase} {seconds:.3f}" for phase, seconds in first.phases.items())
        )
        if "day" in figures:
            raw_bytes, table = figures["day"]
            days_design = design_bytes * 24 * count / max(1, one.payloads)
            print(
                f"  raw_payloads per simulated day (24 ticks): {figures['day_bars']} bars,"
                f" {raw_bytes / 1e6:.2f} MB of JSONB text, table +{table / 1e6:.2f} MB on disk;"
                f" the warm-up design's 24 steady ticks: ~{days_design / 1e6:.1f} MB"
            )
        ok = ok and one.bars <= 0.05 * design_bars and one.raw_bytes <= 0.05 * design_bytes
        ok = ok and median < first.seconds and (count < 50 or median <= 3.0)
    print("goals met" if ok else "GOALS MISSED", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
