"""Recompute a stored series' derived columns from a changed bar on: state is never stale.

A bar's indicators continue the stored series before it (marketpipe/history.py). When that
series changes under stored bars (a restated bar, a replayed older payload, a backfill of older
history, a load that came in between a transform and its own load), the derived columns of the
bars after the change are recomputed from the stored series here, on the loader's cursor, inside
its transaction and under the series' advisory lock, and rewritten where they changed (floats
beyond the loader's 1e-12 relative, services/loader/upsert.py).

How far: from ``changed_from`` to the horizon after ``changed_through`` where the change can no
longer move a value beyond 1e-15 relative: ``IndicatorSet.settle_horizon_bars()`` bars (windows,
then the recurrences' fade), and 52 weeks in time (the 52-week range, and bars that now reach a
year back because older history arrived). So a backfill window costs its own length plus that
horizon, never the whole newer series (the backfill stays linear). Without ``changed_through``
the whole rest of the series is recomputed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa

from marketpipe.contract import OLAP_COLUMNS
from marketpipe.history import _naive_us, read_history
from marketpipe.indicators import FIFTY_TWO_WEEKS, indicator_columns
from marketpipe.market import INDICATORS, bars_per_year, venue
from services.loader.upsert import changed_condition, stage

# Every float of a bar that is not the API's: what a recompute may rewrite.
DERIVED: Final = tuple(
    name
    for name, sql_type in OLAP_COLUMNS
    if sql_type == "double precision" and name not in ("open", "high", "low", "close", "volume")
)
HORIZON_BARS: Final = INDICATORS.settle_horizon_bars()
_RANGE: Final = f"{FIFTY_TWO_WEEKS.days} days"

# $1 symbol, $2 interval, $3 changed_from, $4 changed_through. When the change is the series'
# start (older history was just prepended), bars up to a year after the old first bar (the first
# one after the change) may now reach 52 weeks back.
_HORIZON: Final = (
    "(SELECT CASE WHEN nth IS NULL THEN 'infinity'::timestamptz"  # noqa: S608
    f" ELSE greatest(nth, $4::timestamptz + interval '{_RANGE}',"
    f" CASE WHEN series_start >= $3::timestamptz THEN old_first + interval '{_RANGE}' END) END"
    " FROM (SELECT (SELECT bar_time FROM marketpipe.bars"
    " WHERE symbol = $1 AND interval = $2 AND bar_time > $4::timestamptz"
    f" ORDER BY bar_time OFFSET {HORIZON_BARS - 1} LIMIT 1) AS nth,"
    " (SELECT min(bar_time) FROM marketpipe.bars WHERE symbol = $1 AND interval = $2)"
    " AS series_start,"
    " (SELECT min(bar_time) FROM marketpipe.bars"
    " WHERE symbol = $1 AND interval = $2 AND bar_time > $4::timestamptz) AS old_first) AS h)"
)
# The bars from changed_from to the horizon (to the end without changed_through).
_STRETCH_SQL: Final = (
    "SELECT bar_time, trading_date, high, low, close, volume, asset_class, exchange_timezone,"  # noqa: S608
    " mic_code FROM marketpipe.bars WHERE symbol = $1 AND interval = $2"
    " AND bar_time >= $3::timestamptz"
    f" AND ($4::timestamptz IS NULL OR bar_time <= {_HORIZON}) ORDER BY bar_time"
)
_UPDATE_SQL: Final = (
    "UPDATE marketpipe.bars AS t SET "  # noqa: S608
    + ", ".join(f'"{c}" = s."{c}"' for c in DERIVED)
    + ", loaded_at = now() FROM pg_temp.stage_recomputed s"
    " WHERE t.symbol = s.symbol AND t.interval = s.interval AND t.bar_time = s.bar_time AND "
    + changed_condition([(c, "double precision") for c in DERIVED], (), "s", priced=True)
)
_BUMP_SQL: Final = (
    "INSERT INTO marketpipe.series_versions AS v (symbol, interval, version) VALUES ($1, $2, 1)"
    " ON CONFLICT (symbol, interval) DO UPDATE SET version = v.version + 1, updated_at = now()"
)


def bump_version(cur: Any, symbol: str, interval: str) -> None:
    """The series' stored bars changed: transforms that read it before are now stale."""
    cur.execute(_BUMP_SQL, (symbol, interval))


def recompute(
    cur: Any,
    symbol: str,
    interval: str,
    changed_from: datetime,
    changed_through: datetime | None = None,
) -> int:
    """Rewrite the derived columns of the stored bars a change in [from, through] can move.

    Call under the series' lock (``upsert.LOCK_SQL``, or the loader's upsert) in the transaction
    that changed it; returns how many bars changed. ``changed_through`` None: to the series' end.
    """
    history, _ = read_history(cur, symbol, interval, changed_from)
    cur.execute(_STRETCH_SQL, (symbol, interval, changed_from, changed_through))
    rows = cur.fetch_arrow_table()
    if rows.num_rows == 0:
        return 0
    bars = rows.select(["high", "low", "close", "volume"]).to_pandas().astype(np.float64)
    times = _naive_us(rows["bar_time"])
    bars.insert(0, "bar_time", times)
    first = rows.slice(0, 1).to_pylist()[0]
    place = venue(first["asset_class"], first["exchange_timezone"], first["mic_code"])
    columns = indicator_columns(
        bars,
        _naive_us(rows["trading_date"]),
        bars_per_year(interval, place),
        history=history,
    )
    table = pa.table(
        {
            "symbol": pa.array([symbol] * rows.num_rows, pa.large_string()),
            "interval": pa.array([interval] * rows.num_rows, pa.large_string()),
            "bar_time": rows["bar_time"],
            **{c: pa.array(columns[c], pa.float64(), from_pandas=True) for c in DERIVED},
        }
    )
    stage(cur, "recomputed", table)
    cur.execute(_UPDATE_SQL)
    changed = max(int(cur.rowcount), 0)
    cur.execute("DROP TABLE pg_temp.stage_recomputed")
    return changed
