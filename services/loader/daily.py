"""daily_bars, rebuilt inside the load transaction from what is stored (docs/indicators.md).

A day is aggregated from the stored bars of ``DAILY_SOURCE_INTERVAL`` only, so a second
interval (2h, 1day, ...) never rebuilds it, and warm-up bars the transformer dropped never make
one. The daily indicators are then computed over the symbol's whole stored daily series with the
one indicator implementation (marketpipe/indicators.py): they depend on the stored history, not
on how far back one payload reached, so a fetch of only the newest bars gets them exactly.

Runs on the loader's ADBC cursor after the bars' upsert, under its series' lock: one read of
the stored bars of the days the batch (one series) touches, one of the symbol's stored daily
series; the days are aggregated (Arrow) and the indicators computed (numpy) here, and every
day from the first touched one on (indicators only look back) is written once, aggregates and
derived values together, by the loader's upsert against the stored days already read
(services/loader/upsert.py: a float counts as changed beyond 1e-12 relative; an unchanged day
is not rewritten).

Why not in SQL as before (the plain reference, kept in tests/integration/loader/test_daily.py):
on bench_load's 200k bars (27k days, then in one batch) its GROUP BY with six ``ORDER BY
bar_time`` aggregates (PostgreSQL 15 sorts each group once per ordered aggregate) took 1.7-2.0 s,
and a second statement rewrote every day again for its indicators (0.4-0.8 s, a second row
version, 110k WAL records); here each day is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import DAILY_COLUMNS, DAILY_INDICATORS, DAILY_KEY
from marketpipe.indicators import indicator_columns
from marketpipe.market import DAILY_SOURCE_INTERVAL, bars_per_year, venue
from services.loader.upsert import upsert_known

_OHLCV: Final = ("open", "high", "low", "close", "volume")
DERIVED: Final = ("previous_close", "change", "pct_change", *DAILY_INDICATORS)
DAILY_LINEAGE: Final = ("payload_id", "transformed_at")

# A day's bars share one local calendar date, and no UTC offset exceeds 14 h: every bar of the
# days [first, last] lies in [first - 1 day, last + 2 days) UTC. One series (a batch is one,
# marketpipe/contract.py), its values as parameters: the planner sees the symbol and reads one
# range of the primary key (tests/integration/loader/test_query_plans.py). A join with a staged,
# unanalysed table of the touched days was planned as a parallel seq scan of the whole table plus
# a sort (0.4 s a job at 500k bars); the trading_date test keeps the range exact.
# What a day is aggregated from, per stored bar.
STORED_BAR_COLUMNS: Final = (
    "symbol",
    "trading_date",
    "bar_time",
    "asset_class",
    *_OHLCV,
    "is_complete",
    "payload_id",
    "transformed_at",
)
_STORED_BARS_SQL: Final = (
    f"SELECT {', '.join(STORED_BAR_COLUMNS)} FROM marketpipe.bars"  # noqa: S608
    " WHERE symbol = $1 AND interval = $2 AND bar_time >= $3::timestamptz"
    " AND bar_time < $4::timestamptz AND trading_date BETWEEN $5::date AND $6::date"
)
_STORED_DAYS_SQL: Final = (
    "SELECT "  # noqa: S608
    + ", ".join(name for name, _ in DAILY_COLUMNS)
    + " FROM marketpipe.daily_bars WHERE symbol = $1"
)
# Sorted here, not by the server: PostgreSQL's sort of bench_load's 200k bars by these keys
# took 0.3-1.2 s, Arrow's 0.05 s.
_BAR_ORDER: Final = [(c, "ascending") for c in ("trading_date", "bar_time")]
_DAY_ORDER: Final = [("trading_date", "ascending")]


@dataclass(frozen=True)
class TouchedDays:
    """The first and last trading day of a series' bars, and the UTC range their bars lie in."""

    symbol: str
    first_day: date
    last_day: date

    def parameters(self) -> tuple[str, str, datetime, datetime, date, date]:
        def midnight(day: date, shift: int) -> datetime:
            return datetime.combine(day + timedelta(days=shift), time(), tzinfo=UTC)

        return (
            self.symbol,
            DAILY_SOURCE_INTERVAL,
            midnight(self.first_day, -1),
            midnight(self.last_day, 2),
            self.first_day,
            self.last_day,
        )


def touched_days(bars: pa.Table) -> TouchedDays | None:
    """The days ``bars`` (one series) touch; None unless it is the daily source interval's."""
    hourly = bars.filter(pc.equal(bars["interval"], DAILY_SOURCE_INTERVAL))
    if hourly.num_rows == 0:
        return None
    symbols = pc.unique(hourly["symbol"]).to_pylist()
    if len(symbols) != 1:
        raise ValueError(f"a daily rebuild is for one series, got bars of {sorted(symbols)}")
    days = pc.min_max(hourly["trading_date"].cast(pa.date32())).as_py()
    return TouchedDays(str(symbols[0]), days["min"], days["max"])


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
    """The daily rows of one symbol to write: every day from its first aggregated one on, with
    the derived values over its whole series (stored days, the aggregated ones replacing theirs).
    """
    kept = stored.join(
        aggregated.select(["trading_date"]), keys="trading_date", join_type="left anti"
    )
    fresh = aggregated.cast(stored.select(aggregated.column_names).schema)
    for name in DERIVED:
        fresh = fresh.append_column(name, pa.nulls(fresh.num_rows, pa.float64()))
    series = pa.concat_tables([kept.select(stored.column_names), fresh.select(stored.column_names)])
    series = series.take(pc.sort_indices(series, _DAY_ORDER))
    dates = series["trading_date"].to_numpy(zero_copy_only=False)
    ohlcv = {c: series[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in _OHLCV}
    derived = daily_derived(dates, ohlcv, str(series["asset_class"][0]))
    for name in DERIVED:
        index = series.schema.get_field_index(name)
        series = series.set_column(index, name, pa.array(derived[name], from_pandas=True))
    first_fresh = pc.min(aggregated["trading_date"]).as_py()
    return series.filter(pc.greater_equal(series["trading_date"], pa.scalar(first_fresh)))


def rebuild_daily(cur: Any, bars: pa.Table, stored: pa.Table | None = None) -> int:
    """Re-aggregate the days ``bars`` touch from the stored bars, and the symbol's indicators.

    ``bars`` is the batch (one series) just upserted, under its lock; returns how many daily rows
    were written (new or changed). ``stored``: the series' bars as now stored over at least the
    touched days (:meth:`TouchedDays.parameters`' range, :data:`STORED_BAR_COLUMNS`), when the
    caller knows them; else they are read.
    """
    touched = touched_days(bars)
    if touched is None:
        return 0
    if stored is None:
        cur.execute(_STORED_BARS_SQL, touched.parameters())
        stored = cur.fetch_arrow_table()
    stored_bars = stored.filter(
        pc.and_(
            pc.greater_equal(stored["trading_date"], pa.scalar(touched.first_day)),
            pc.less_equal(stored["trading_date"], pa.scalar(touched.last_day)),
        )
    )
    cur.execute(_STORED_DAYS_SQL, (touched.symbol,))
    stored_days = cur.fetch_arrow_table()
    aggregated = aggregate_days(stored_bars.take(pc.sort_indices(stored_bars, _BAR_ORDER)))
    if aggregated.num_rows == 0:
        return 0
    rows = rebuilt_days(stored_days, aggregated)
    # Every stored day of the symbol is in hand: compared here, only new or changed days written.
    written = upsert_known(
        cur, "daily_bars", rows, stored_days, DAILY_COLUMNS, DAILY_KEY, lineage=DAILY_LINEAGE
    )
    return len(written)
