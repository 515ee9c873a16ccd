"""daily_bars, rebuilt inside the load transaction from what is stored (docs/indicators.md).

A day is aggregated from the stored bars of ``DAILY_SOURCE_INTERVAL`` only, so a second
interval (2h, 1day, ...) never rebuilds it, and warm-up bars the transformer dropped never make
one. The daily indicators are then computed over the symbol's whole stored daily series with the
one indicator implementation (marketpipe/indicators.py): they depend on the stored history, not
on how far back one payload reached, so a fetch of only the newest bars gets them exactly.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
from psycopg2 import sql

from marketpipe.contract import DAILY_INDICATORS
from marketpipe.indicators import indicator_columns
from marketpipe.market import DAILY_SOURCE_INTERVAL, bars_per_year, venue

# OHLC of a day from its bars in time order; a volume only when every bar has one (as NULL
# propagates through a sum); the VWAP of the day's typical prices.
_AGGREGATE_SQL: Final = """
INSERT INTO marketpipe.daily_bars AS d (
    symbol, trading_date, asset_class, open, high, low, close, volume, vwap, range, bar_count,
    is_complete, payload_id, transformed_at, source_interval
)
SELECT b.symbol, b.trading_date, min(b.asset_class),
       (array_agg(b.open ORDER BY b.bar_time))[1], max(b.high), min(b.low),
       (array_agg(b.close ORDER BY b.bar_time DESC))[1],
       CASE WHEN count(b.volume) = count(*) THEN sum(b.volume) END,
       CASE WHEN count(b.volume) = count(*) AND sum(b.volume) > 0
            THEN sum((b.high + b.low + b.close) / 3 * b.volume) / sum(b.volume) END,
       max(b.high) - min(b.low), count(*)::integer, bool_and(b.is_complete),
       (array_agg(b.payload_id ORDER BY b.bar_time DESC))[1], max(b.transformed_at),
       b.interval
FROM marketpipe.bars b
WHERE b.symbol = %(symbol)s AND b.interval = %(interval)s
  AND b.trading_date = ANY(%(days)s::date[])
GROUP BY b.symbol, b.interval, b.trading_date
ON CONFLICT (symbol, trading_date) DO UPDATE SET
    asset_class = EXCLUDED.asset_class, open = EXCLUDED.open, high = EXCLUDED.high,
    low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume, vwap = EXCLUDED.vwap,
    range = EXCLUDED.range, bar_count = EXCLUDED.bar_count, is_complete = EXCLUDED.is_complete,
    payload_id = EXCLUDED.payload_id, transformed_at = EXCLUDED.transformed_at,
    source_interval = EXCLUDED.source_interval, loaded_at = now()
WHERE (d.asset_class, d.open, d.high, d.low, d.close, d.volume, d.vwap, d.bar_count,
       d.is_complete, d.source_interval)
   IS DISTINCT FROM (EXCLUDED.asset_class, EXCLUDED.open, EXCLUDED.high, EXCLUDED.low,
       EXCLUDED.close, EXCLUDED.volume, EXCLUDED.vwap, EXCLUDED.bar_count, EXCLUDED.is_complete,
       EXCLUDED.source_interval)
"""

_SERIES_SQL: Final = (
    "SELECT trading_date, asset_class, open, high, low, close, volume"
    " FROM marketpipe.daily_bars WHERE symbol = %s ORDER BY trading_date"
)

DERIVED: Final = ("previous_close", "change", "pct_change", *DAILY_INDICATORS)


_UPDATE_SQL: Final = sql.SQL(
    "UPDATE marketpipe.daily_bars AS d SET {assignments}"
    " FROM (VALUES {rows}) AS v (trading_date, {columns})"
    " WHERE d.symbol = {symbol} AND d.trading_date = v.trading_date"
    " AND ({old}) IS DISTINCT FROM ({new})"
)


def daily_derived(series: pd.DataFrame) -> pd.DataFrame:
    """change, previous close and the indicators of one symbol's daily series (time order)."""
    days = pd.to_datetime(series["trading_date"]).to_numpy()
    bars = pd.DataFrame(
        {
            "bar_time": days,
            **{c: series[c].astype(float).to_numpy() for c in ("open", "high", "low", "close")},
            "volume": series["volume"].astype(float).to_numpy(),
        }
    )
    asset_class = str(series["asset_class"].iloc[0]) if len(series) else "crypto"
    columns = indicator_columns(bars, days, bars_per_year("1day", venue(asset_class, None)))
    return pd.DataFrame({"trading_date": series["trading_date"].to_numpy()}).assign(
        **{c: columns[c] for c in DERIVED}
    )


def _sql_value(value: Any) -> Any:
    return None if isinstance(value, float) and np.isnan(value) else value


def rebuild_daily(cur: Any, bars: pd.DataFrame) -> int:
    """Re-aggregate the days these stored bars touch, then the symbols' daily indicators.

    Returns how many daily rows changed (aggregates or derived values).
    """
    source = bars[bars["interval"] == DAILY_SOURCE_INTERVAL]
    changed = 0
    for symbol, rows in source.groupby("symbol", sort=True):
        days = sorted({pd.Timestamp(day).date() for day in rows["trading_date"]})
        cur.execute(
            _AGGREGATE_SQL, {"symbol": symbol, "interval": DAILY_SOURCE_INTERVAL, "days": days}
        )
        changed += cur.rowcount
        cur.execute(_SERIES_SQL, (symbol,))
        series = pd.DataFrame(
            cur.fetchall(),
            columns=["trading_date", "asset_class", "open", "high", "low", "close", "volume"],
        )
        derived = daily_derived(series)
        # Indicators only look back: days before the first touched one keep their values.
        derived = derived[derived["trading_date"] >= days[0]]
        values = [
            tuple(_sql_value(v) for v in row) for row in derived.itertuples(index=False, name=None)
        ]
        changed += _update(cur, symbol, values)
    return changed


def _update(cur: Any, symbol: str, values: list[tuple[Any, ...]]) -> int:
    """Write the derived values that differ from the stored ones, 1000 days per statement."""
    # Typed placeholders: a VALUES column that is NULL throughout would otherwise be text.
    row_template = "(%s::date" + ", %s::double precision" * len(DERIVED) + ")"
    names = [sql.Identifier(c) for c in DERIVED]
    total = 0
    for start in range(0, len(values), 1000):
        page = values[start : start + 1000]
        # mogrify quotes every value; the rows are then one literal block of the statement.
        rows = b",".join(cur.mogrify(row_template, row) for row in page).decode()
        statement = _UPDATE_SQL.format(
            assignments=sql.SQL(", ").join(sql.SQL("{c} = v.{c}").format(c=name) for name in names),
            rows=sql.SQL(rows),
            columns=sql.SQL(", ").join(names),
            symbol=sql.Literal(symbol),
            old=sql.SQL(", ").join(sql.SQL("d.{}").format(name) for name in names),
            new=sql.SQL(", ").join(sql.SQL("v.{}").format(name) for name in names),
        )
        cur.execute(statement)
        total += cur.rowcount
    return total
