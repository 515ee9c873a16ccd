"""RQ job of the loader: one transformed batch into Postgres in one transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pandas as pd

from marketpipe import broker
from marketpipe.contract import (
    DAILY_COLUMNS,
    DAILY_KEY,
    OLAP_COLUMNS,
    OLAP_KEY,
    QUARANTINE_COLUMNS,
    QUARANTINE_KEY,
    RawPayload,
    column_names,
)
from marketpipe.db import transaction
from marketpipe.settings import Settings, load_settings
from services.loader.upsert import upsert_frame

LINEAGE = ("payload_id", "transformed_at")


@cache
def _settings() -> Settings:
    return load_settings()


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
    complete = bars[bars["is_complete"]]
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


def _log_run(
    cur: Any,
    payload: RawPayload,
    bars: pd.DataFrame,
    quarantine: pd.DataFrame,
    loaded: int,
    started_at: datetime,
) -> None:
    if bars.empty:
        status = "failed" if not quarantine.empty else "no_data"
    else:
        status = "partial" if not quarantine.empty else "ok"
    reasons = sorted(set(quarantine["reason"])) if not quarantine.empty else []
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


def load_batch(batch_id: str) -> dict[str, int]:
    """Raw payload, bars, daily aggregates, quarantine, run log and watermark: all or nothing."""
    started_at = datetime.now(UTC)
    settings = _settings()
    redis = broker.redis_from(settings)
    payload = broker.get_payload(redis, batch_id)
    frames = broker.get_batch(redis, batch_id)
    bars, daily, quarantine = frames["bars"], frames["daily"], frames["quarantine"]
    with transaction(settings.role_url("loader")) as cur:
        _land_raw(cur, payload)
        changed = upsert_frame(
            cur, "bars", bars, column_names(OLAP_COLUMNS), OLAP_KEY, compare_exclude=LINEAGE
        )
        upsert_frame(
            cur,
            "daily_bars",
            daily,
            column_names(DAILY_COLUMNS),
            DAILY_KEY,
            compare_exclude=LINEAGE,
        )
        upsert_frame(
            cur,
            "quarantine",
            quarantine,
            column_names(QUARANTINE_COLUMNS),
            QUARANTINE_KEY,
            compare_exclude=("quarantined_at",),
        )
        _advance_watermarks(cur, bars)
        _log_run(cur, payload, bars, quarantine, changed, started_at)
    return {"bars_changed": changed, "bars": len(bars), "quarantined": len(quarantine)}
