"""daily_bars, rebuilt inside the load transaction from what is stored (docs/indicators.md).

A day is aggregated from the stored bars of ``DAILY_SOURCE_INTERVAL`` only, so a second
interval (2h, 1day, ...) never rebuilds it, and warm-up bars the transformer dropped never make
one. The daily indicators are then computed over the symbol's whole stored daily series with the
one indicator implementation (marketpipe/indicators.py): they depend on the stored history, not
on how far back one payload reached, so a fetch of only the newest bars gets them exactly.

Runs on the loader's ADBC cursor after the bars' upsert, under its per-symbol locks: one read of
the stored bars of the days the batch touches, one of the symbols' stored daily series; the days
are aggregated (Arrow) and the indicators computed (numpy) here, and every day from the first
touched one on (indicators only look back) is written once, aggregates and derived values
together, by the loader's upsert (services/loader/upsert.py: a float counts as changed beyond
1e-12 relative; an unchanged day is not rewritten).

Why not in SQL as before (the plain reference, kept in tests/integration/loader/test_daily.py):
on bench_load's batch (200k bars, 27k days) its GROUP BY with six ``ORDER BY bar_time``
aggregates (PostgreSQL 15 sorts each group once per ordered aggregate) took 1.7-2.0 s, and a
second statement rewrote every day again for its indicators (0.4-0.8 s, a second row version,
110k WAL records); here the read takes 0.2-0.4 s and each day is written once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import DAILY_COLUMNS, DAILY_INDICATORS, DAILY_KEY
from marketpipe.indicators import indicator_columns
from marketpipe.market import DAILY_SOURCE_INTERVAL, bars_per_year, venue
from services.loader.upsert import stage, upsert

DERIVED: Final = ("previous_close", "change", "pct_change", *DAILY_INDICATORS)
DAILY_LINEAGE: Final = ("payload_id", "transformed_at")
_OHLCV: Final = ("open", "high", "low", "close", "volume")

# A day's bars share one local calendar date, and no UTC offset exceeds 14 h: every bar of the
# days [first, last] lies in [first - 1 day, last + 2 days) UTC. The range keeps the read on the
# primary key, one range scan per symbol (tests/integration/loader/test_query_plans.py); the
# trading_date test keeps it exact.
_STORED_BARS_SQL: Final = (
    "SELECT b.symbol, b.trading_date, b.bar_time, b.asset_class, b.open, b.high, b.low, b.close,"
    " b.volume, b.is_complete, b.payload_id, b.transformed_at"
    " FROM pg_temp.stage_touched_days t JOIN marketpipe.bars b"
    " ON b.symbol = t.symbol AND b.interval = t.interval"
    " AND b.bar_time >= t.from_time AND b.bar_time < t.until_time"
    " AND b.trading_date BETWEEN t.first_day AND t.last_day"
    # Also within the stage's smallest and largest key, as row comparisons on the primary key's
    # columns (only that index serves them; the server's collation orders the symbols): with
    # no statistics yet (a new database; a stage never has any) the join alone sorted every
    # stored bar (seq scan, 22-31 ms at 50 symbols x 300 bars for a one-bar tick; 0.3 ms).
    " WHERE (b.symbol, b.interval, b.bar_time) >= ("
    "(SELECT min(symbol) FROM pg_temp.stage_touched_days),"
    " (SELECT min(interval) FROM pg_temp.stage_touched_days),"
    " (SELECT min(from_time) FROM pg_temp.stage_touched_days))"
    " AND (b.symbol, b.interval, b.bar_time) < ("
    "(SELECT max(symbol) FROM pg_temp.stage_touched_days),"
    " (SELECT max(interval) FROM pg_temp.stage_touched_days),"
    " (SELECT max(until_time) FROM pg_temp.stage_touched_days))"
)
_STORED_DAYS_SQL: Final = (
    "SELECT "  # noqa: S608
    + ", ".join(f"d.{name}" for name, _ in DAILY_COLUMNS)
    + " FROM pg_temp.stage_touched_days t JOIN marketpipe.daily_bars d ON d.symbol = t.symbol"
)
# Sorted here, not by the server: PostgreSQL's sort of bench_load's 200k bars by these keys
# took 0.3-1.2 s, Arrow's 0.05 s.
_BAR_ORDER: Final = [(c, "ascending") for c in ("symbol", "trading_date", "bar_time")]
_DAY_ORDER: Final = [(c, "ascending") for c in ("symbol", "trading_date")]


def touched_days(bars: pa.Table) -> pa.Table:
    """Per symbol of ``bars`` (the daily source interval's): its first and last trading day
    and the UTC range their bars lie in."""
    hourly = bars.select(["symbol", "interval", "trading_date"])
    hourly = hourly.filter(pc.equal(hourly["interval"], DAILY_SOURCE_INTERVAL))
    days = hourly.select(["symbol", "trading_date"]).cast(
        pa.schema([("symbol", pa.large_string()), ("trading_date", pa.date32())])
    )
    spans = days.group_by("symbol").aggregate([("trading_date", "min"), ("trading_date", "max")])

    def midnights(column: str, shift: int) -> pa.Array:
        days: list[date] = spans[column].to_pylist()
        return pa.array(
            [datetime.combine(d + timedelta(days=shift), time(), tzinfo=UTC) for d in days],
            pa.timestamp("us", tz="UTC"),
        )

    return pa.table(
        {
            "symbol": spans["symbol"],
            "interval": pa.array([DAILY_SOURCE_INTERVAL] * spans.num_rows, pa.large_string()),
            "first_day": spans["trading_date_min"],
            "last_day": spans["trading_date_max"],
            "from_time": midnights("trading_date_min", -1),
            "until_time": midnights("trading_date_max", 2),
        }
    )


def aggregate_days(bars: pa.Table) -> pa.Table:
    """One row per (symbol, trading_date) of stored bars, each day's bars in time order.

    OHLC from the bars in time order; a volume only when every bar has one (as NULL propagates
    through SQL's sum); the VWAP of the day's typical prices; the lineage of the day's last bar.
    """
    typical = pc.divide(pc.add(pc.add(bars["high"], bars["low"]), bars["close"]), 3.0)
    bars = bars.append_column("traded", pc.multiply(typical, bars["volume"]))
    # Without threads the groups keep the input's order, and first/last mean in time.
    days = pa.TableGroupBy(bars, ["symbol", "trading_date"], use_threads=False).aggregate(
        [
            ("asset_class", "min"),
            ("open", "first"),
            ("high", "max"),
            ("low", "min"),
            ("close", "last"),
            ("volume", "sum"),
            ("traded", "sum"),
            ("volume", "count"),
            ([], "count_all"),
            ("is_complete", "all"),
            ("payload_id", "last"),
            ("transformed_at", "max"),
        ]
    )
    every_volume = pc.equal(days["volume_count"], days["count_all"])
    null = pa.scalar(None, pa.float64())
    volume = pc.if_else(every_volume, days["volume_sum"], null)
    vwap = pc.if_else(
        pc.and_(every_volume, pc.greater(days["volume_sum"], 0.0)),
        pc.divide(days["traded_sum"], days["volume_sum"]),
        null,
    )
    return pa.table(
        {
            "symbol": days["symbol"],
            "trading_date": days["trading_date"],
            "asset_class": days["asset_class_min"],
            "open": days["open_first"],
            "high": days["high_max"],
            "low": days["low_min"],
            "close": days["close_last"],
            "volume": volume,
            "vwap": vwap,
            "range": pc.subtract(days["high_max"], days["low_min"]),
            "bar_count": days["count_all"].cast(pa.int32()),
            "is_complete": days["is_complete_all"],
            "payload_id": days["payload_id_last"],
            "transformed_at": days["transformed_at_max"],
            "source_interval": pa.array([DAILY_SOURCE_INTERVAL] * days.num_rows, pa.string()),
        }
    )


def daily_derived(
    trading_date: np.ndarray, ohlcv: dict[str, np.ndarray], asset_class: str
) -> dict[str, np.ndarray]:
    """change, previous close and the indicators of one symbol's daily series (time order)."""
    days = np.asarray(trading_date, dtype="datetime64[us]")
    bars = pd.DataFrame({"bar_time": days, **{c: ohlcv[c] for c in _OHLCV}})
    columns = indicator_columns(bars, days, bars_per_year("1day", venue(asset_class, None)))
    return {c: columns[c] for c in DERIVED}


def rebuilt_days(stored: pa.Table, aggregated: pa.Table) -> pa.Table:
    """The daily rows to write: per symbol, every day from its first aggregated one on, with
    the derived values over its whole series (stored days, the aggregated ones replacing theirs).
    """
    kept = stored.join(
        aggregated.select(["symbol", "trading_date"]),
        keys=["symbol", "trading_date"],
        join_type="left anti",
    )
    fresh = aggregated.cast(stored.select(aggregated.column_names).schema)
    for name in DERIVED:
        fresh = fresh.append_column(name, pa.nulls(fresh.num_rows, pa.float64()))
    series = pa.concat_tables([kept.select(stored.column_names), fresh.select(stored.column_names)])
    series = series.take(pc.sort_indices(series, _DAY_ORDER))
    firsts = aggregated.group_by("symbol").aggregate([("trading_date", "min")])
    first_fresh = dict(
        zip(
            firsts["symbol"].to_pylist(),
            firsts["trading_date_min"].to_numpy(zero_copy_only=False),
            strict=True,
        )
    )
    symbols = series["symbol"].to_numpy(zero_copy_only=False)
    dates = series["trading_date"].to_numpy(zero_copy_only=False)
    starts = [*np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]), len(symbols)]
    derived = {name: np.full(series.num_rows, np.nan) for name in DERIVED}
    keep = np.zeros(series.num_rows, dtype=bool)
    for start, end in pairwise(starts):
        part = series.slice(start, end - start)
        ohlcv = {c: part[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in _OHLCV}
        values = daily_derived(dates[start:end], ohlcv, str(part["asset_class"][0]))
        for name in DERIVED:
            derived[name][start:end] = values[name]
        keep[start:end] = dates[start:end] >= first_fresh[symbols[start]]
    for name in DERIVED:
        index = series.schema.get_field_index(name)
        series = series.set_column(index, name, pa.array(derived[name], from_pandas=True))
    return series.filter(pa.array(keep))


def rebuild_daily(cur: Any, bars: pa.Table) -> int:
    """Re-aggregate the days ``bars`` touch from the stored bars, and the symbols' indicators.

    ``bars`` is the batch just upserted (under its symbols' locks); returns how many daily rows
    were written (new or changed).
    """
    touched = touched_days(bars)
    if touched.num_rows == 0:
        return 0
    stage(cur, "touched_days", touched)
    cur.execute(_STORED_BARS_SQL)
    stored_bars = cur.fetch_arrow_table()
    cur.execute(_STORED_DAYS_SQL)
    stored_days = cur.fetch_arrow_table()
    cur.execute("DROP TABLE pg_temp.stage_touched_days")
    aggregated = aggregate_days(stored_bars.take(pc.sort_indices(stored_bars, _BAR_ORDER)))
    if aggregated.num_rows == 0:
        return 0
    rows = rebuilt_days(stored_days, aggregated)
    written = upsert(cur, "daily_bars", rows, DAILY_COLUMNS, DAILY_KEY, lineage=DAILY_LINEAGE)
    cur.execute("DROP TABLE pg_temp.stage_daily_bars")
    return written
