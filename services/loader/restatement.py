"""Restatements: the vendor changed bars we had stored, found for free and swapped in whole.

**Detection.** Every payload re-serves bars we hold (the fetcher's overlap and warm-up). Before a
batch is merged, its ``observed`` bars (every valid bar of the payload, warm-up included) are
matched with the stored bars where both are complete and the stored one was written by another
payload (a replay of the same answer repairs our copy instead), and the raw values compared with
the loader's rule (a float differs beyond 1e-12 relative, upsert.py). When some differ:

* a **split** (or any adjustment by a factor): every differing bar has all four prices in one
  ratio r = stored / new (r != 1) and its volume in the inverse ratio. The API prints prices with
  at most six decimals (../shared/twelvedata-api.md: ragged decimals), so a price may be off r by
  half a unit of the sixth decimal of the new price, and a volume by half a share;
* anything else is a **correction**, recorded with its largest relative difference.

A batch that reveals a restatement is **not merged** (old and new prices would mix): its raw
payload stays landed, the finding goes to ``marketpipe.restatements`` (one open row per series)
and a WARNING to the log; the fetcher then re-fetches the series' whole stored history.

**The swap.** :func:`swap_series` writes the re-fetched series in one transaction, so a reader
sees the old series or the new one, never a mixture: upsert the new bars, remove (through
``marketpipe.remove_restated_bars``, which keeps their values in the restatement) the stored bars
the new answer no longer has, rebuild the daily bars, set the watermark, close the restatement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import OLAP_COLUMNS, OLAP_KEY
from marketpipe.runs import restatement_run_id
from services.loader.upsert import LOCK_SQL, RELATIVE_TOLERANCE, upsert

log = logging.getLogger("marketpipe.loader.restatement")

# Half a unit of the sixth decimal: how far a re-printed adjusted price may be from stored / r.
PRICE_HALF_UNIT: Final = 5e-7
VOLUME_HALF_UNIT: Final = 0.5
# A ratio this close to 1 is no split: such differences are corrections.
MIN_SPLIT_DEVIATION: Final = 1e-6
PRICES: Final = ("open", "high", "low", "close")

_RECORD_SQL: Final = (
    "INSERT INTO marketpipe.restatements AS r (symbol, interval, kind, ratio, max_difference,"
    " first_bar, last_bar, bars_affected, payload_id, history_from)"
    " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,"
    " (SELECT min(bar_time) FROM marketpipe.bars WHERE symbol = $1 AND interval = $2)"
    " ON CONFLICT (symbol, interval) WHERE status = 'detected' DO NOTHING RETURNING restatement_id"
)
_OPEN_SQL: Final = (
    "SELECT restatement_id FROM marketpipe.restatements"
    " WHERE symbol = $1 AND interval = $2 AND status = 'detected'"
)


@dataclass(frozen=True)
class Finding:
    """What differs between the stored bars and the same bars served again."""

    kind: Literal["split", "correction"]
    ratio: float | None  # split: stored price / new price
    max_difference: float  # largest relative difference of a compared value
    first_bar: datetime
    last_bar: datetime
    bars_affected: int

    def describe(self) -> str:
        stamp = "%Y-%m-%d %H:%M"
        span = f"{self.bars_affected} bars {self.first_bar:{stamp}} .. {self.last_bar:{stamp}} UTC"
        if self.kind == "split":
            return f"split/adjustment, prices / {self.ratio:.6g}, {span}"
        return f"correction, max relative difference {self.max_difference:.3g}, {span}"


def _differs(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The loader's rule, elementwise: beyond 1e-12 relative, or exactly one missing."""
    with np.errstate(invalid="ignore"):
        beyond = np.abs(old - new) > RELATIVE_TOLERANCE * np.maximum(np.abs(old), np.abs(new))
    differs: np.ndarray = beyond | (np.isnan(old) != np.isnan(new))
    return differs


def classify(
    bar_times: list[datetime], stored: dict[str, np.ndarray], served: dict[str, np.ndarray]
) -> Finding | None:
    """A finding for the bars whose stored and served raw values differ; None if none do.

    ``stored`` and ``served`` map open, high, low, close and volume to float arrays aligned with
    ``bar_times`` (NaN for a missing volume).
    """
    columns = (*PRICES, "volume")
    changed = np.zeros(len(bar_times), dtype=bool)
    for column in columns:
        changed |= _differs(stored[column], served[column])
    rows = np.flatnonzero(changed)
    if len(rows) == 0:
        return None
    old = {c: stored[c][rows] for c in columns}
    new = {c: served[c][rows] for c in columns}
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.nanmax(
            [np.abs(old[c] - new[c]) / np.maximum(np.abs(old[c]), np.abs(new[c])) for c in columns],
            axis=0,
        )
        ratio = float(np.median(old["close"] / new["close"]))
    times = [bar_times[i] for i in rows]
    split = _is_split(old, new, ratio)
    return Finding(
        kind="split" if split else "correction",
        ratio=ratio if split else None,
        max_difference=float(np.nanmax(relative)),
        first_bar=min(times),
        last_bar=max(times),
        bars_affected=len(rows),
    )


def _is_split(old: dict[str, np.ndarray], new: dict[str, np.ndarray], ratio: float) -> bool:
    """One ratio explains every differing value within the API's print precision.

    Each price allows r in [old / (new + h), old / (new - h)] (h: half a unit of the sixth
    decimal), each volume r in [(new - 1/2) / old, (new + 1/2) / old]: a split iff all the
    intervals share a point, and that point is not 1.
    """
    if not np.isfinite(ratio) or ratio <= 0 or abs(ratio - 1.0) <= MIN_SPLIT_DEVIATION:
        return False
    if np.any(np.isnan(old["volume"]) != np.isnan(new["volume"])):
        return False
    lows, highs = [], []
    for column in PRICES:
        a, b = old[column], new[column]
        if np.any((a <= 0) | (b <= PRICE_HALF_UNIT)):
            return False
        lows.append(a / (b + PRICE_HALF_UNIT))
        highs.append(a / (b - PRICE_HALF_UNIT))
    volume = ~np.isnan(old["volume"]) & (old["volume"] > 0)
    lows.append((new["volume"][volume] - VOLUME_HALF_UNIT) / old["volume"][volume])
    highs.append((new["volume"][volume] + VOLUME_HALF_UNIT) / old["volume"][volume])
    low = max(float(np.max(x)) for x in lows if len(x))
    high = min(float(np.min(x)) for x in highs if len(x))
    return low <= high * (1 + RELATIVE_TOLERANCE) and not low <= 1.0 <= high


def detect(stored: pa.Table, observed: pa.Table, payload_id: str) -> Finding | None:
    """Compare one payload's observed bars with the stored ones other payloads wrote.

    ``stored``: the series' stored bars over the observed span (bar_time, OHLCV, is_complete,
    payload_id), read by the load under the series' lock. Compared here, not joined in SQL: the
    load reads that span anyway (daily bars, new rows), and staging the observed bars for a join
    cost a temporary table and two statements a job (~20 ms of a 5,000-bar job, ~5 of a tick's).
    """
    # A bar this very payload wrote is no news from the vendor: a replay that differs from it
    # repairs our copy (ops replay), it does not restate.
    others = pc.not_equal(pc.fill_null(stored["payload_id"], ""), payload_id)
    prior = stored.filter(pc.and_(stored["is_complete"], others))
    served = observed.filter(observed["is_complete"])
    if prior.num_rows == 0 or served.num_rows == 0:
        return None
    columns = (*PRICES, "volume")
    times = served["bar_time"].cast(prior.schema.field("bar_time").type)
    served = pa.table(
        {"bar_time": times, **{f"new_{c}": served[c].cast(pa.float64()) for c in columns}}
    )
    overlap = served.join(prior.select(["bar_time", *columns]), keys="bar_time", join_type="inner")
    if overlap.num_rows == 0:
        return None
    overlap = overlap.take(pc.sort_indices(overlap, [("bar_time", "ascending")]))

    def floats(name: str) -> np.ndarray:
        return np.asarray(overlap[name].to_numpy(zero_copy_only=False), dtype=np.float64)

    return classify(
        overlap["bar_time"].to_pylist(),
        {c: floats(c) for c in columns},
        {c: floats(f"new_{c}") for c in columns},
    )


def record(
    cur: Any, symbol: str, interval: str, finding: Finding, payload_id: str
) -> tuple[int, bool]:
    """The series' open restatement: (its id, whether this finding opened it)."""
    cur.execute(
        _RECORD_SQL,
        (
            symbol,
            interval,
            finding.kind,
            finding.ratio,
            finding.max_difference,
            finding.first_bar,
            finding.last_bar,
            finding.bars_affected,
            payload_id,
        ),
    )
    opened = cur.fetchall()
    if opened:
        return int(opened[0][0]), True
    cur.execute(_OPEN_SQL, (symbol, interval))
    return int(cur.fetchall()[0][0]), False


# --- the swap -------------------------------------------------------------------------------

_CLAIM_SQL: Final = (
    "SELECT symbol, interval FROM marketpipe.restatements"
    " WHERE restatement_id = $1 AND status = 'detected' FOR UPDATE"
)
_REMOVE_SQL: Final = (
    "SELECT marketpipe.remove_restated_bars($1, (SELECT coalesce(jsonb_agg(b.bar_time), '[]')"
    " FROM marketpipe.bars b WHERE b.symbol = $2 AND b.interval = $3"
    " AND b.bar_time <= (SELECT max(bar_time) FROM pg_temp.stage_bars)"
    " AND NOT EXISTS (SELECT 1 FROM pg_temp.stage_bars s WHERE s.bar_time = b.bar_time)))"
)
_SET_WATERMARK_SQL: Final = (
    "INSERT INTO marketpipe.watermarks AS w (symbol, interval, last_complete_bar)"
    " SELECT symbol, interval, max(bar_time) FROM marketpipe.bars"
    " WHERE symbol = $1 AND interval = $2 AND is_complete GROUP BY symbol, interval"
    " ON CONFLICT (symbol, interval) DO UPDATE"
    " SET last_complete_bar = EXCLUDED.last_complete_bar, updated_at = now()"
)
_CLOSE_SQL: Final = (
    "UPDATE marketpipe.restatements SET status = 'restated', restated_at = now(),"
    " bars_restated = $2, message = $3 WHERE restatement_id = $1"
)

# The run log's row of the restatement (the fetcher opened it), closed in the same transaction.
_CLOSE_RUN_SQL: Final = (
    "UPDATE marketpipe.pipeline_runs SET status = 'ok', rows_in = $2, rows_loaded = $3,"
    " rows_removed = $4, message = $5, finished_at = now() WHERE run_id = $1"
)


@dataclass(frozen=True)
class SwapResult:
    symbol: str
    interval: str
    bars: int
    bars_changed: int
    bars_removed: int


def swap_series(
    cur: Any, restatement_id: int, bars: pa.Table, rebuild_daily: Any
) -> SwapResult | None:
    """Replace the restatement's series by ``bars`` (OLAP rows); None if it is not open.

    Runs inside the caller's transaction; ``rebuild_daily(cur, bars)`` rebuilds the days from the
    stored bars (services/loader/daily.py).
    """
    cur.execute(
        "SELECT symbol, interval FROM marketpipe.restatements WHERE restatement_id = $1",
        (restatement_id,),
    )
    found = cur.fetchall()
    if not found:
        return None
    symbol, interval = str(found[0][0]), str(found[0][1])
    # The series' lock (upsert.SERIES_LOCK): tick loads of this symbol wait for the swap, and
    # the swap for them.
    cur.execute(LOCK_SQL, (symbol,))
    cur.fetchall()
    cur.execute(_CLAIM_SQL, (restatement_id,))
    if not cur.fetchall():
        return None  # restated already: a replay of the job changes nothing
    wrong = bars.filter(
        pc.or_(pc.not_equal(bars["symbol"], symbol), pc.not_equal(bars["interval"], interval))
    )
    if wrong.num_rows:
        raise ValueError(f"restatement {restatement_id}: batch holds bars of another series")
    changed = upsert(
        cur, "bars", bars, OLAP_COLUMNS, OLAP_KEY, lineage=("payload_id", "transformed_at")
    )
    removed = 0
    if bars.num_rows:
        cur.execute(_REMOVE_SQL, (restatement_id, symbol, interval))
        removed = int(cur.fetchall()[0][0])
        rebuild_daily(cur, bars)
        cur.execute(_SET_WATERMARK_SQL, (symbol, interval))
    message = f"{bars.num_rows} bars re-fetched, {changed} written, {removed} no longer served"
    cur.execute(_CLOSE_SQL, (restatement_id, changed, message))
    cur.execute(
        _CLOSE_RUN_SQL,
        (restatement_run_id(restatement_id), bars.num_rows, changed, removed, message),
    )
    if removed:
        log.warning(
            "restatement %d of %s %s: %d stored bars are no longer served; removed, kept in"
            " marketpipe.restatements.removed_bars",
            restatement_id,
            symbol,
            interval,
            removed,
        )
    return SwapResult(symbol, interval, bars.num_rows, changed, removed)
