"""Entry point of the transformer's pure core: one raw payload in, its OLAP rows out.

``transform_series`` runs one series (one symbol, one interval: every transform job carries
exactly one payload) through flatten -> validate (quarantining what fails) -> drop the warm-up
bars (and a tick's bars from before the stored series' first, services/transformer/warmup.py)
-> enrich, continuing the stored series that ``history`` returns (the one place it reads
the database, injected by the job; marketpipe/history.py). No I/O of its own. Daily bars are
built by the loader from the stored bars (services/loader/daily.py), so no daily row ever
comes from a bar that is not stored.

Output dtypes:
- ``bar_time``, ``transformed_at``, ``quarantined_at``: datetime64[us, UTC];
- ``bar_time_local``: naive datetime64[us] (exchange wall time; UTC for crypto and forex);
- ``trading_date``: naive datetime64[us] normalised to midnight (the loader casts to date);
- numbers: float64 with NaN for NULL (``volume`` NaN where the API has none, never 0);
- ``is_complete``: bool; ``bar_count``: int64; text: object with None for NULL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import pandas as pd
import pyarrow as pa

from marketpipe.contract import OBSERVED_COLUMNS, OLAP_COLUMNS, QUARANTINE_COLUMNS, RawPayload
from marketpipe.indicators import StoredHistory
from services.transformer.enrich import ContractColumns, empty_columns, enrich, observed
from services.transformer.flatten import PayloadRejection, flatten
from services.transformer.validate import QuarantineRecord, rejection_record, validate
from services.transformer.warmup import drop_before_series, drop_warmup


@dataclass(frozen=True)
class TransformResult:
    """The batch's tables as columns; ``bars`` & co. build their frames on first use."""

    bars_columns: ContractColumns  # exactly OLAP_COLUMNS, in order
    quarantine_columns: ContractColumns  # QUARANTINE_COLUMNS ("raw" holds JSON text)
    series_version: int = 0  # marketpipe.series_versions as the history was read (0: none)
    # OBSERVED_COLUMNS of every valid bar, warm-up included: what the restatement check compares
    observed_columns: ContractColumns = field(
        default_factory=lambda: empty_columns(OBSERVED_COLUMNS)
    )

    @cached_property
    def bars(self) -> pd.DataFrame:
        return self.bars_columns.frame()

    @cached_property
    def quarantine(self) -> pd.DataFrame:
        return self.quarantine_columns.frame()

    @cached_property
    def observed(self) -> pd.DataFrame:
        return self.observed_columns.frame()

    def tables(self) -> dict[str, pa.Table]:
        """The batch's bars, quarantine and observed tables as the loader reads them."""
        return {
            "bars": self.bars_columns.table(),
            "quarantine": self.quarantine_columns.table(),
            "observed": self.observed_columns.table(),
        }


# The stored history before a first new bar (UTC), with the series' version.
HistoryReader = Callable[[datetime], tuple[StoredHistory, int]]


def utc_timestamp(now: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(now)
    if stamp.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return stamp.tz_convert("UTC").as_unit("us")


def first_time(bars: pd.DataFrame) -> datetime:
    """The first bar's time (validate's naive UTC) as an aware datetime."""
    stamp = pd.Timestamp(bars["bar_time"].iloc[0])
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).to_pydatetime()


def transform_series(
    payload: RawPayload, *, now: datetime, history: HistoryReader | None = None
) -> TransformResult:
    """Transform one payload; ``now`` (timezone-aware) stamps ``transformed_at`` only.

    ``history`` gives the stored series the bars continue (None: the payload is the series).

    Which bars are "in the future" is judged by the API's own clock as the payload recorded it
    (``payload.fetched_at``, which the fetcher takes from the answer's Date header), never by
    the transformer's clock: the two may disagree, and only the API knows what it had.
    """
    transformed_at = utc_timestamp(now)
    flat = flatten(payload)
    if isinstance(flat, PayloadRejection):
        return TransformResult(
            bars_columns=empty_columns(OLAP_COLUMNS),
            quarantine_columns=quarantine_columns(
                [rejection_record(payload, flat)], transformed_at
            ),
        )
    checked = validate(flat)
    kept = drop_warmup(checked.bars, payload)
    stored, version = None, 0
    if history is not None and len(kept):
        stored, version = history(first_time(kept))
        continued = drop_before_series(kept, payload, stored.series_start)
        if len(continued) < len(kept):
            kept = continued
            if len(kept):
                stored, version = history(first_time(kept))
    return TransformResult(
        bars_columns=enrich(kept, flat, transformed_at=transformed_at, history=stored),
        quarantine_columns=quarantine_columns(checked.quarantine, transformed_at),
        series_version=version,
        observed_columns=observed(checked.bars, flat),
    )


def quarantine_columns(
    records: list[QuarantineRecord], transformed_at: pd.Timestamp
) -> ContractColumns:
    values: dict[str, Any] = {
        name: [record.get(name) for record in records]
        for name, _ in QUARANTINE_COLUMNS
        if name != "quarantined_at"
    }
    values["quarantined_at"] = transformed_at
    return ContractColumns(QUARANTINE_COLUMNS, values, len(records))
