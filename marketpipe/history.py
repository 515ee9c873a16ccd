"""The stored series new bars continue from: one query, shared by the transformer and the loader.

For new bars of a series starting at ``before``, :func:`read_history` reads in one statement the
series' version (``marketpipe.series_versions``), its first stored bar, and the stored bars before
``before`` that the indicators look back on: the last ``IndicatorSet.lookback_bars()`` bars and
at least the 52 weeks before it (which also hold the start of its trading day), with the
recurrence state of each (:data:`marketpipe.indicators.STATE_COLUMNS`). A series shorter than
its look-back is read from its first bar, and so is one stored before a state column existed.
Runs on an ADBC cursor (``$n`` parameters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.db import utc_text
from marketpipe.indicators import FIFTY_TWO_WEEKS, STATE_COLUMNS, StoredHistory
from marketpipe.market import INDICATORS

LOOKBACK_BARS: Final = INDICATORS.lookback_bars()
_RANGE: Final = f"{FIFTY_TWO_WEEKS.days} days"
_BARS: Final = ("bar_time", "trading_date", "high", "low", "close", "volume")

# $1 symbol, $2 interval, $3 the first new bar, $4 read the whole series. Identifiers and
# numbers come from this module and market.py, never from data.
HISTORY_SQL: Final = (
    "SELECT v.version, v.series_start, "  # noqa: S608
    + ", ".join(f"b.{c}" for c in (*_BARS, *STATE_COLUMNS))
    + " FROM (SELECT"  # noqa: S608
    " coalesce((SELECT version FROM marketpipe.series_versions"
    " WHERE symbol = $1 AND interval = $2), 0) AS version,"
    " (SELECT min(bar_time) FROM marketpipe.bars"
    " WHERE symbol = $1 AND interval = $2) AS series_start,"
    " (SELECT CASE WHEN $4 OR nth IS NULL THEN '-infinity'::timestamptz"
    f" ELSE least(nth, $3::timestamptz - interval '{_RANGE}') END"
    " FROM (SELECT (SELECT bar_time FROM marketpipe.bars"
    " WHERE symbol = $1 AND interval = $2 AND bar_time < $3::timestamptz"
    f" ORDER BY bar_time DESC OFFSET {LOOKBACK_BARS - 1} LIMIT 1) AS nth) AS n) AS since) v"
    " LEFT JOIN marketpipe.bars b ON b.symbol = $1 AND b.interval = $2"
    # The range as row comparisons on the primary key's columns: only that index can serve
    # them. Written on bar_time alone, a table without statistics yet (a new database's first
    # hours) was read through bars_interval_time_cover_idx, every symbol's bars of the year
    # filtered down to one: 12-27 ms a tick's job at 50 symbols, against 0.9 ms
    # (EXPLAIN ANALYZE; tests/integration/loader/test_query_plans.py).
    " AND (b.symbol, b.interval, b.bar_time) >= ($1, $2, v.since)"
    " AND (b.symbol, b.interval, b.bar_time) < ($1, $2, $3::timestamptz)"
    " ORDER BY b.bar_time"
)


def _naive_us(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamptz or date column as naive UTC datetime64[us] (dates at midnight)."""
    if pa.types.is_date(column.type):
        days: np.ndarray = column.to_numpy().astype("datetime64[D]")
        return days.astype("datetime64[us]")
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = column.cast(pa.timestamp("us"))
    times: np.ndarray = column.to_numpy().astype("datetime64[us]")
    return times


def _moment(value: datetime | None) -> np.datetime64 | None:
    return None if value is None else np.datetime64(value.replace(tzinfo=None), "us")


def history_from(table: pa.Table) -> tuple[StoredHistory, int]:
    """The query's result as the indicators' :class:`StoredHistory`, and the series' version."""
    version = int(table["version"][0].as_py()) if table.num_rows else 0
    series_start = _moment(table["series_start"][0].as_py() if table.num_rows else None)
    rows = table.filter(pc.is_valid(table["bar_time"]))
    if rows.num_rows == 0:
        empty = StoredHistory.empty()
        return StoredHistory(empty.bars, empty.trading_date, series_start=series_start), version
    frame = rows.select(["high", "low", "close", "volume"]).to_pandas().astype(np.float64)
    frame.insert(0, "bar_time", _naive_us(rows["bar_time"]))
    last = {c: rows[c][rows.num_rows - 1].as_py() for c in STATE_COLUMNS}
    return StoredHistory(
        bars=frame,
        trading_date=_naive_us(rows["trading_date"]),
        from_start=bool(frame["bar_time"].iloc[0] == series_start),
        series_start=series_start,
        state={c: np.nan if v is None else float(v) for c, v in last.items()},
    ), version


def read_history(
    cur: Any, symbol: str, interval: str, before: datetime
) -> tuple[StoredHistory, int]:
    """The stored history new bars from ``before`` (UTC) continue, and the series' version."""
    cur.execute(HISTORY_SQL, (symbol, interval, utc_text(before), False))
    history, version = history_from(cur.fetch_arrow_table())
    if not history.from_start and any(np.isnan(v) for v in history.state.values()):
        # Bars stored without a state column (before migration 0008): the whole series, once.
        cur.execute(HISTORY_SQL, (symbol, interval, utc_text(before), True))
        history, version = history_from(cur.fetch_arrow_table())
    return history, version
