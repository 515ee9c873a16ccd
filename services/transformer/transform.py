"""Entry point of the transformer's pure core: raw payloads in, OLAP rows out.

``transform_payloads`` flattens every payload of a batch into typed bars, validates them
(quarantining what fails), and enriches all series at once with their indicators. No I/O.

Output dtypes:
- ``bar_time``, ``transformed_at``, ``quarantined_at``: datetime64[us, UTC];
- ``bar_time_local``: naive datetime64[us] (exchange wall time; UTC for crypto and forex);
- ``trading_date``: naive datetime64[us] normalised to midnight (the loader casts to date);
- numbers: float64 with NaN for NULL (``volume`` NaN where the API has none, never 0);
- ``is_complete``: bool; ``bar_count``: int64; text: object with None for NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from marketpipe.contract import (
    DAILY_COLUMNS,
    OLAP_COLUMNS,
    QUARANTINE_COLUMNS,
    RawPayload,
    column_names,
)
from services.transformer.daily import daily_aggregates
from services.transformer.enrich import enrich
from services.transformer.flatten import flatten_payloads
from services.transformer.timeconv import UTC_DTYPE
from services.transformer.validate import validate
from services.transformer.warmup import drop_warmup

BAR_COLUMNS = column_names(OLAP_COLUMNS)
DAILY_COLUMN_NAMES = column_names(DAILY_COLUMNS)
QUARANTINE_COLUMN_NAMES = column_names(QUARANTINE_COLUMNS)


@dataclass(frozen=True)
class TransformResult:
    bars: pd.DataFrame  # exactly OLAP_COLUMNS, in order
    daily: pd.DataFrame  # exactly DAILY_COLUMNS, in order
    quarantine: pd.DataFrame  # exactly QUARANTINE_COLUMNS, in order ("raw" holds JSON text)


def utc_timestamp(now: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(now)
    if stamp.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return stamp.tz_convert("UTC").as_unit("us")


def transform_payloads(payloads: Sequence[RawPayload], *, now: datetime) -> TransformResult:
    transformed_at = utc_timestamp(now)
    flat = flatten_payloads(payloads)
    checked = validate(flat, now=transformed_at.to_pydatetime())
    bars = enrich(checked.bars, checked.payloads, transformed_at=transformed_at)
    daily = daily_aggregates(
        bars,
        checked.payloads,
        transformed_at=transformed_at,
        series=checked.bars["series"].to_numpy(),
    )
    bars, daily = drop_warmup(bars, daily, payloads)
    quarantine = checked.quarantine.copy()
    quarantine["quarantined_at"] = pd.Series(
        np.full(len(quarantine), transformed_at.tz_localize(None).to_datetime64()),
        dtype="datetime64[us]",
    ).dt.tz_localize("UTC")
    quarantine = quarantine.astype({"quarantined_at": UTC_DTYPE})
    return TransformResult(
        bars=bars[BAR_COLUMNS].reset_index(drop=True),
        daily=daily[DAILY_COLUMN_NAMES].reset_index(drop=True),
        quarantine=quarantine[QUARANTINE_COLUMN_NAMES].reset_index(drop=True),
    )
