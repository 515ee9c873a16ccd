"""RQ jobs of the transformer: landed payload id in, transformed batch out, load job enqueued."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache

from marketpipe import broker, raw
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.settings import Settings, load_settings
from services.transformer.transform import transform_series

log = logging.getLogger("marketpipe.transformer")


@cache
def _settings() -> Settings:
    return load_settings()


def load_job_id(batch_id: str) -> str:
    return f"load-{batch_id}"


def transform_payload(payload_id: str) -> dict[str, int]:
    """Transform one landed payload; the batch id is the payload id, so replays overwrite."""
    settings = _settings()
    payload = raw.read_payload(settings.role_url("transformer"), payload_id)
    result = transform_series(payload, now=datetime.now(UTC))
    redis = broker.redis_from(settings)
    broker.put_batch(
        redis,
        payload_id,
        {"bars": result.bars, "quarantine": result.quarantine},
        settings.blob_ttl_seconds,
    )
    broker.queue(LOAD_QUEUE, redis, settings).enqueue(
        LOAD_JOB,
        args=(payload_id,),
        job_id=load_job_id(payload_id),
        retry=broker.default_retry(),
        description=f"load {payload.symbol} {payload.interval}",
    )
    values = payload.body.get("values") if isinstance(payload.body, dict) else None
    rows_in = len(values) if isinstance(values, list) else 0
    # The one line per payload: bars the API sent, bars handed to the loader, bars set aside.
    log.info(
        "payload %s %s %s: %d rows in, %d out, %d quarantined, %d warm-up",
        payload_id[:12],
        payload.symbol,
        payload.interval,
        rows_in,
        len(result.bars),
        len(result.quarantine),
        max(0, rows_in - len(result.bars) - len(result.quarantine)),
    )
    return {
        "bars": len(result.bars),
        "quarantined": len(result.quarantine),
    }
