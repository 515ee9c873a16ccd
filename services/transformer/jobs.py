"""RQ jobs of the transformer: landed payload id in, transformed batch out, load job enqueued."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, partial

import pandas as pd

from marketpipe import broker, raw
from marketpipe.db import adbc_connect
from marketpipe.history import read_history
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.settings import Settings, load_settings
from services.transformer.transform import transform_series


@cache
def _settings() -> Settings:
    return load_settings()


def load_job_id(batch_id: str) -> str:
    return f"load-{batch_id}"


def series_frame(symbol: str, interval: str, version: int) -> pd.DataFrame:
    """The batch's series and the version of the stored state its bars continue."""
    return pd.DataFrame({"symbol": [symbol], "interval": [interval], "seen_version": [version]})


def transform_payload(payload_id: str) -> dict[str, int]:
    """RQ entry point (``marketpipe.queues.TRANSFORM_JOB``)."""
    return transform(_settings(), payload_id)


def transform(settings: Settings, payload_id: str) -> dict[str, int]:
    """Transform one landed payload; the batch id is the payload id, so replays overwrite."""
    url = settings.role_url("transformer")
    payload = raw.read_payload(url, payload_id)
    # Read-only: the transformer's role may only SELECT (the payload, the stored series).
    with adbc_connect(url) as conn, conn.cursor() as cur:
        result = transform_series(
            payload,
            now=datetime.now(UTC),
            history=partial(read_history, cur, payload.symbol, payload.interval),
        )
        conn.rollback()
    redis = broker.redis_from(settings)
    broker.put_batch(
        redis,
        payload_id,
        {
            "bars": result.bars,
            "quarantine": result.quarantine,
            "series": series_frame(payload.symbol, payload.interval, result.series_version),
        },
        settings.blob_ttl_seconds,
    )
    broker.queue(LOAD_QUEUE, redis, settings).enqueue(
        LOAD_JOB,
        args=(payload_id,),
        job_id=load_job_id(payload_id),
        retry=broker.default_retry(),
        description=f"load {payload.symbol} {payload.interval}",
    )
    return {
        "bars": len(result.bars),
        "quarantined": len(result.quarantine),
    }
