"""RQ jobs of the transformer: landed payload id in, transformed batch out, load job enqueued."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import pandas as pd

from marketpipe import broker, raw
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE, RESTATE_LOAD_JOB, restatement_batch_id
from marketpipe.settings import Settings, load_settings
from services.transformer.transform import transform_series


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
        {"bars": result.bars, "quarantine": result.quarantine, "observed": result.observed},
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


def transform_restatement(restatement_id: int, payload_ids: list[str]) -> dict[str, int]:
    """All re-fetched windows of a restated series into one batch, and its swap enqueued.

    One batch, so the loader replaces the series in one transaction (readers never see a
    half-restated series). Windows emit disjoint bars (each drops its warm-up); a bar served by
    two windows keeps the newer window's values (``payload_ids`` come newest window first).
    """
    settings = _settings()
    url = settings.role_url("transformer")
    now = datetime.now(UTC)
    results = [transform_series(raw.read_payload(url, p), now=now) for p in payload_ids]
    bars = pd.concat([r.bars for r in results], ignore_index=True)
    bars = bars.drop_duplicates(["symbol", "interval", "bar_time"], keep="first")
    bars = bars.sort_values("bar_time", kind="stable").reset_index(drop=True)
    quarantine = pd.concat([r.quarantine for r in results], ignore_index=True)
    quarantine = quarantine.drop_duplicates(["payload_id", "row_key", "reason"])
    redis = broker.redis_from(settings)
    batch_id = restatement_batch_id(restatement_id)
    broker.put_batch(
        redis, batch_id, {"bars": bars, "quarantine": quarantine}, settings.blob_ttl_seconds
    )
    broker.queue(LOAD_QUEUE, redis, settings).enqueue(
        RESTATE_LOAD_JOB,
        args=(restatement_id,),
        job_id=load_job_id(batch_id),
        retry=broker.default_retry(),
        description=f"restate #{restatement_id}",
    )
    return {"bars": len(bars), "quarantined": len(quarantine), "windows": len(payload_ids)}
