"""RQ jobs of the transformer: landed payload id in, transformed batch out, load job enqueued."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache, partial

import pandas as pd
import pyarrow as pa

from marketpipe import broker, raw
from marketpipe.db import adbc_connect
from marketpipe.history import read_history
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE, RESTATE_LOAD_JOB, restatement_batch_id
from marketpipe.settings import Settings, load_settings
from services.transformer.transform import transform_series

log = logging.getLogger("marketpipe.transformer")


@cache
def _settings() -> Settings:
    return load_settings()


def load_job_id(batch_id: str) -> str:
    return f"load-{batch_id}"


def series_frame(symbol: str, interval: str, version: int) -> pa.Table:
    """The batch's series and the version of the stored state its bars continue."""
    return pa.table(
        {
            "symbol": pa.array([symbol], pa.string()),
            "interval": pa.array([interval], pa.string()),
            "seen_version": pa.array([version], pa.int64()),
        }
    )


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
    redis = broker.kept_redis(settings)
    broker.put_batch(
        redis,
        payload_id,
        {
            **result.tables(),
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
    values = payload.body.get("values") if isinstance(payload.body, dict) else None
    rows_in = len(values) if isinstance(values, list) else 0
    # The one line per payload: bars the API sent, bars handed to the loader, bars set aside.
    log.info(
        "payload %s %s %s: %d rows in, %d out, %d quarantined, %d warm-up",
        payload_id[:12],
        payload.symbol,
        payload.interval,
        rows_in,
        result.bars_columns.size,
        result.quarantine_columns.size,
        max(0, rows_in - result.bars_columns.size - result.quarantine_columns.size),
    )
    return {
        "bars": result.bars_columns.size,
        "quarantined": result.quarantine_columns.size,
    }


def transform_restatement(restatement_id: int, payload_ids: list[str]) -> dict[str, int]:
    """All re-fetched windows of a restated series into one batch, and its swap enqueued.

    One batch, so the loader replaces the series in one transaction (readers never see a
    half-restated series). Each window is computed from its own warm-up, never seeded from the
    stored series: that is the history being replaced. Windows emit disjoint bars (each drops
    its warm-up); a bar served by two keeps the newer window's (``payload_ids``: newest first).
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
