"""One fetch cycle: ask the API for every configured symbol, land each answer, enqueue its job."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis import Redis

from marketpipe import broker
from marketpipe.contract import RawPayload
from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.client import ApiError, MarketDataClient

log = logging.getLogger("marketpipe.fetcher")


@dataclass
class CycleReport:
    enqueued: list[str] = field(default_factory=list)
    already_queued: list[str] = field(default_factory=list)
    api_errors: dict[str, str] = field(default_factory=dict)


def transform_job_id(payload_id: str) -> str:
    return f"transform-{payload_id}"


def enqueue_payload(redis: Redis, settings: Settings, payload: RawPayload) -> bool:
    """Store the payload and enqueue its transform job once; False if that job already exists."""
    broker.put_payload(redis, payload, settings.blob_ttl_seconds)
    job_id = transform_job_id(payload.payload_id)
    transform_queue = broker.queue(TRANSFORM_QUEUE, redis, settings)
    if transform_queue.fetch_job(job_id) is not None:
        return False
    transform_queue.enqueue(
        TRANSFORM_JOB,
        args=(payload.payload_id,),
        job_id=job_id,
        retry=broker.default_retry(),
        description=f"transform {payload.symbol} {payload.interval}",
    )
    return True


def run_cycle(
    settings: Settings,
    client: MarketDataClient,
    redis: Redis,
    *,
    batch_size: int = 8,
) -> CycleReport:
    report = CycleReport()
    symbols = list(settings.symbols)
    for start in range(0, len(symbols), batch_size):
        chunk = symbols[start : start + batch_size]
        request = {"interval": settings.interval, "outputsize": settings.fetch_outputsize}
        try:
            answers = client.time_series(chunk, settings.interval, settings.fetch_outputsize)
        except ApiError as exc:
            for symbol in chunk:
                report.api_errors[symbol] = str(exc)
            log.error("time_series for %s failed: %s", ",".join(chunk), exc)
            continue
        for answer in answers:
            if answer.is_error:
                report.api_errors[answer.symbol] = str(answer.body.get("message", answer.body))
                log.warning("API error for %s: %s", answer.symbol, answer.body.get("message"))
            # Error bodies travel too: the loader records them, so nothing vanishes silently.
            payload = RawPayload.build(
                source=settings.data_source,  # type: ignore[arg-type]
                symbol=answer.symbol,
                interval=settings.interval,
                body=answer.body,
                request={**request, "symbol": answer.symbol},
                fetched_at=answer.served_at,
            )
            if enqueue_payload(redis, settings, payload):
                report.enqueued.append(answer.symbol)
            else:
                report.already_queued.append(answer.symbol)
    log.info(
        "cycle done: %d enqueued, %d unchanged, %d API errors",
        len(report.enqueued),
        len(report.already_queued),
        len(report.api_errors),
    )
    return report
