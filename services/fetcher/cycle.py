"""One fetch cycle: ask the API what is new for every symbol, land it, enqueue its transform.

A cycle asks each series for the bars since its watermark plus the indicators' warm-up, in
batches sized to the credits left this minute, and enqueues a payload only when the answer holds
bars newer than the watermark or a still-open bar that changed. Permanent API errors (unknown or
plan-gated symbol, bad key) travel the pipeline as the API's own error object, so the loader
writes them to ``marketpipe.pipeline_runs`` with the API's message; transient ones were already
retried by the client and are left for the next tick (no watermark moved, nothing is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis import Redis

from marketpipe import broker, raw
from marketpipe.contract import RawPayload
from marketpipe.intervals import MAX_BATCH_SYMBOLS
from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.client import ApiError, MarketDataClient, SeriesAnswer
from services.fetcher.clock import Clock
from services.fetcher.limiter import CreditLimiter
from services.fetcher.reference import instruments
from services.fetcher.series import (
    asset_class_of,
    has_new_data,
    outputsize_for,
    transform_job_id,
    view_series,
    warmup_bars,
)
from services.fetcher.state import load_states, save_state

log = logging.getLogger("marketpipe.fetcher")

ENQUEUED_PREFIX = "marketpipe:fetch:enqueued"
BAD_SYMBOL_PREFIX = "marketpipe:fetch:bad-symbol"


@dataclass
class Fetcher:
    """Everything a cycle or a backfill needs; built once per process (or per test)."""

    settings: Settings
    client: MarketDataClient
    redis: Redis
    limiter: CreditLimiter
    clock: Clock

    def instruments(self, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
        refresh = timedelta(hours=self.settings.reference_refresh_hours)
        return instruments(self.client, self.redis, symbols, self.clock.now(), refresh)


@dataclass
class CycleReport:
    enqueued: list[str] = field(default_factory=list)
    already_queued: list[str] = field(default_factory=list)
    no_new_data: list[str] = field(default_factory=list)
    api_errors: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)  # transient; next tick tries again
    skipped: list[str] = field(default_factory=list)  # known-bad symbols


def enqueue_payload(redis: Redis, settings: Settings, payload: RawPayload, job_id: str) -> bool:
    """Store the payload and enqueue its transform job once; False if that job was enqueued.

    A marker set with NX decides, atomically across replicas and restarts, who enqueues; it
    lives as long as the payload blob, so the same work is never queued twice meanwhile.
    """
    raw.land_payload(settings.role_url("fetcher"), payload)
    marker = f"{ENQUEUED_PREFIX}:{job_id}"
    if not redis.set(marker, payload.payload_id, nx=True, ex=settings.blob_ttl_seconds):
        return False
    try:
        broker.queue(TRANSFORM_QUEUE, redis, settings).enqueue(
            TRANSFORM_JOB,
            args=(payload.payload_id,),
            job_id=job_id,
            retry=broker.default_retry(),
            description=f"transform {payload.symbol} {payload.interval}",
        )
    except BaseException:
        redis.delete(marker)
        raise
    return True


def is_bad_symbol_error(body: dict[str, Any]) -> bool:
    """Unknown or plan-gated symbol: asking again within the day would be refused again."""
    code = body.get("code")
    message = str(body.get("message", "")).lower()
    return code in (403, 404) or (code == 400 and "symbol" in message)


def land(
    fx: Fetcher,
    answer: SeriesAnswer,
    request: dict[str, Any],
    instrument: dict[str, Any],
) -> tuple[bool, RawPayload]:
    """Build the payload of an answer and enqueue it under its window's job id."""
    payload = RawPayload.build(
        source=fx.settings.data_source,  # type: ignore[arg-type]
        symbol=answer.symbol,
        interval=fx.settings.interval,
        body=answer.body,
        request=request,
        instrument=instrument,
        fetched_at=answer.served_at,
    )
    view = view_series(answer.body, fx.settings.interval, answer.served_at)
    job_id = transform_job_id(
        answer.symbol, fx.settings.interval, (view.oldest, view.newest), payload.payload_id
    )
    return enqueue_payload(fx.redis, fx.settings, payload, job_id), payload


def record_error(fx: Fetcher, answer: SeriesAnswer, request: dict[str, Any]) -> str:
    """A permanent error goes to the run log via the pipeline; never retried. Its message."""
    message = str(answer.body.get("message", answer.body))
    log.warning("API error for %s: %s", answer.symbol, message)
    land(fx, answer, request, {})
    if is_bad_symbol_error(answer.body):
        fx.redis.set(
            f"{BAD_SYMBOL_PREFIX}:{answer.symbol}",
            message[:500],
            ex=int(fx.settings.reference_refresh_hours * 3600),
        )
    return message


def run_cycle(fx: Fetcher, symbols: Sequence[str] | None = None) -> CycleReport:
    settings, report = fx.settings, CycleReport()
    interval = settings.interval
    wanted = list(symbols or settings.symbols)
    bad = fx.redis.mget([f"{BAD_SYMBOL_PREFIX}:{s}" for s in wanted])
    report.skipped = [s for s, flag in zip(wanted, bad, strict=True) if flag]
    wanted = [s for s in wanted if s not in report.skipped]
    if report.skipped:
        log.info("skipping symbols the API refused today: %s", ", ".join(report.skipped))
    attrs = fx.instruments(wanted)
    states = load_states(settings, fx.redis, wanted, interval)
    now = fx.clock.now()
    sizes = {
        s: outputsize_for(
            states[s].fetch_from,
            now,
            interval,
            asset_class_of(s, attrs.get(s)),
            settings.fetch_outputsize,
        )
        for s in wanted
    }
    remaining = wanted
    while remaining:
        # As many symbols as there are credits this minute: a batch costing more than what is
        # left would be refused whole.
        grant = fx.limiter.acquire(min(len(remaining), MAX_BATCH_SYMBOLS), at_least=1)
        batch, remaining = remaining[: grant.credits], remaining[grant.credits :]
        outputsize = max(sizes[s] for s in batch)  # one size per request; the cost is the same
        try:
            answers = fx.client.time_series(
                batch, interval, outputsize=outputsize, paid=grant.credits
            )
        except ApiError as exc:
            if exc.transient:
                for symbol in batch:
                    report.deferred[symbol] = str(exc)
                log.error("time_series for %s failed, next tick retries: %s", batch, exc)
                continue
            answers = [SeriesAnswer(s, exc.as_body(), fx.clock.now()) for s in batch]
        for answer in answers:
            state = states[answer.symbol]
            request = {
                "symbol": answer.symbol,
                "interval": interval,
                "outputsize": outputsize,
                # Bars at or before `since` are there as warm-up for the new ones.
                "since": state.fetch_from.isoformat() if state.fetch_from else None,
                "warmup_bars": warmup_bars(
                    interval, asset_class_of(answer.symbol, attrs.get(answer.symbol))
                ),
            }
            if answer.is_error:
                if answer.error_code in (None, 429) or (answer.error_code or 0) >= 500:
                    report.deferred[answer.symbol] = str(answer.body.get("message"))
                else:
                    report.api_errors[answer.symbol] = record_error(fx, answer, request)
                continue
            view = view_series(answer.body, interval, answer.served_at)
            if not has_new_data(view, state.seen, state.open_signature):
                report.no_new_data.append(answer.symbol)
                log.info("no new data for %s %s", answer.symbol, interval)
                continue
            enqueued, _ = land(fx, answer, request, attrs.get(answer.symbol, {}))
            (report.enqueued if enqueued else report.already_queued).append(answer.symbol)
            save_state(fx.redis, answer.symbol, interval, view.newest_complete, view.open_signature)
    log.info(
        "cycle done: %d enqueued, %d no new data, %d already queued, %d API errors, %d deferred",
        len(report.enqueued),
        len(report.no_new_data),
        len(report.already_queued),
        len(report.api_errors),
        len(report.deferred),
    )
    return report
