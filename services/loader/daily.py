"""daily_bars, rebuilt inside the load transaction from what is stored (docs/indicators.md).

A day is aggregated from the stored bars of ``DAILY_SOURCE_INTERVAL`` only, so a second
interval (2h, 1day, ...) never rebuilds it, and warm-up bars the transformer dropped never make
one. The daily indicators are then computed over the symbol's whole stored daily series with the
one indicator implementation (marketpipe/indicators.py): they depend on the stored history, not
on how far back one payload reached, so a fetch of only the newest bars gets them exactly.

Runs on the loader's ADBC cursor after the bars' upsert, reading the days to rebuild from the
bars' stage (``pg_temp.stage_bars``). Changed values follow the loader's rule
(services/loader/upsert.py): a float counts as changed beyond 1e-12 relative.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.contract import DAILY_INDICATORS
from marketpipe.indicators import indicator_columns
from marketpipe.market import DAILY_SOURCE_INTERVAL, bars_per_year, venue
from services.loader.upsert import RELATIVE_TOLERANCE, stage

AGGREGATES: Final = (
    "asset_class",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "range",
    "bar_count",
    "is_complete",
    "payload_id",
    "transformed_at",
    "source_interval",
)
DERIVED: Final = ("previous_close", "change", "pct_change", *DAILY_INDICATORS)
_FLOATS: Final = frozenset({"open", "high", "low", "close", "volume", "vwap", "range", *DERIVED})


def _changed(old: str, new: str, columns: tuple[str, ...]) -> str:
    """SQL true when a row differs (floats beyond RELATIVE_TOLERANCE, others at all)."""
    parts = []
    for column in columns:
        a, b = f'{old}."{column}"', f'{new}."{column}"'
        if column in _FLOATS:
            parts.append(
                f"coalesce(abs({a} - {b}) > {RELATIVE_TOLERANCE!r}::float8"
                f" * greatest(abs({a}), abs({b})), ({a} IS NULL) <> ({b} IS NULL))"
            )
        else:
            parts.append(f"{a} IS DISTINCT FROM {b}")
    return "(" + " OR ".join(parts) + ")"


_COMPARED: Final = tuple(c for c in AGGREGATES if c not in ("payload_id", "transformed_at"))

# OHLC of a day from its bars in time order; a volume only when every bar has one (as NULL
# propagates through a sum); the VWAP of the day's typical prices. Float sums run in bar-time
# order: in heap order (which updates and load order change) the last bits differed between two
# databases holding the same bars (the crash chaos test: 437 daily rows of stocks).
# Identifiers come from marketpipe.contract and this module, never from data.
_AGGREGATE_SQL: Final = (
    "INSERT INTO marketpipe.daily_bars AS t (symbol, trading_date, "  # noqa: S608
    + ", ".join(AGGREGATES)
    + ")"
    " SELECT b.symbol, b.trading_date, min(b.asset_class),"
    " (array_agg(b.open ORDER BY b.bar_time))[1], max(b.high), min(b.low),"
    " (array_agg(b.close ORDER BY b.bar_time DESC))[1],"
    " CASE WHEN count(b.volume) = count(*) THEN sum(b.volume ORDER BY b.bar_time) END,"
    " CASE WHEN count(b.volume) = count(*) AND sum(b.volume) > 0"
    " THEN sum((b.high + b.low + b.close) / 3 * b.volume ORDER BY b.bar_time)"
    " / sum(b.volume ORDER BY b.bar_time) END,"
    " max(b.high) - min(b.low), count(*)::integer, bool_and(b.is_complete),"
    " (array_agg(b.payload_id ORDER BY b.bar_time DESC))[1], max(b.transformed_at), b.interval"
    " FROM marketpipe.bars b"
    " JOIN (SELECT DISTINCT s.symbol, s.trading_date FROM pg_temp.stage_bars s"
    " WHERE s.interval = $1) touched"
    " ON touched.symbol = b.symbol AND touched.trading_date = b.trading_date"
    " WHERE b.interval = $1"
    " GROUP BY b.symbol, b.interval, b.trading_date"
    " ON CONFLICT (symbol, trading_date) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in AGGREGATES)
    + ", loaded_at = now() WHERE "
    + _changed("t", "EXCLUDED", _COMPARED)
)

_TOUCHED_SQL: Final = (
    "SELECT s.symbol, min(s.trading_date) AS first_day FROM pg_temp.stage_bars s"
    " WHERE s.interval = $1 GROUP BY s.symbol ORDER BY s.symbol"
)
_SERIES_SQL: Final = (
    "SELECT trading_date, asset_class, open, high, low, close, volume"
    " FROM marketpipe.daily_bars WHERE symbol = $1 ORDER BY trading_date"
)
_UPDATE_SQL: Final = (
    "UPDATE marketpipe.daily_bars AS t SET "  # noqa: S608
    + ", ".join(f"{c} = s.{c}" for c in DERIVED)
    + ", loaded_at = now() FROM pg_temp.stage_daily_derived s"
    " WHERE t.symbol = s.symbol AND t.trading_date = s.trading_date AND "
    + _changed("t", "s", DERIVED)
)


def daily_derived(series: pd.DataFrame) -> pd.DataFrame:
    """change, previous close and the indicators of one symbol's daily series (time order)."""
    days = pd.to_datetime(series["trading_date"]).to_numpy()
    bars = pd.DataFrame(
        {
            "bar_time": days,
            **{
                c: series[c].astype(float).to_numpy()
                for c in ("open", "high", "low", "close", "volume")
            },
        }
    )
    asset_class = str(series["asset_class"].iloc[0]) if len(series) else "crypto"
    columns = indicator_columns(bars, days, bars_per_year("1day", venue(asset_class, None)))
    return pd.DataFrame({"trading_date": series["trading_date"].to_numpy()}).assign(
        **{c: columns[c] for c in DERIVED}
    )


def _arrow(symbol: str, derived: pd.DataFrame) -> pa.Table:
    return pa.table(
        {
            "symbol": pa.array([symbol] * len(derived), pa.large_string()),
            "trading_date": pa.array(list(derived["trading_date"]), pa.date32()),
            **{
                c: pa.array(derived[c].to_numpy(np.float64), pa.float64(), from_pandas=True)
                for c in DERIVED
            },
        }
    )


def rebuild_daily(cur: Any, bars: pa.Table) -> int:
    """Re-aggregate the days the staged bars touch, then the symbols' daily indicators.

    ``bars`` is the batch just upserted (staged as ``pg_temp.stage_bars``); returns how many
    daily rows changed (aggregates or derived values).
    """
    if bars.num_rows == 0:
        return 0
    cur.execute(_AGGREGATE_SQL, (DAILY_SOURCE_INTERVAL,))
    changed = max(int(cur.rowcount), 0)
    cur.execute(_TOUCHED_SQL, (DAILY_SOURCE_INTERVAL,))
    touched = cur.fetchall()
    parts = []
    for symbol, first_day in touched:
        cur.execute(_SERIES_SQL, (symbol,))
        series = cur.fetch_arrow_table().to_pandas()
        derived = daily_derived(series)
        # Indicators only look back: days before the first touched one keep their values.
        parts.append(_arrow(symbol, derived[derived["trading_date"] >= first_day]))
    if parts:
        stage(cur, "daily_derived", pa.concat_tables(parts))
        cur.execute(_UPDATE_SQL)
        changed += max(int(cur.rowcount), 0)
    return changed
