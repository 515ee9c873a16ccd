"""Read-only queries of the dashboard: parameterized SQL in, DataFrame out.

Every statement is a constant: user choices arrive only as bound parameters (symbols validated
before they get here). Each query is shaped to be served by an index at any table size: the
newest bars come from ``latest_quotes`` (a loose index scan, db/init/0003), returns from
``period_returns`` (one backward probe of the primary key per symbol and end, db/init/0007), and
ranges are bounded on both ends. No metric is defined here: the SQL functions define them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import TextClause

# The first stored bar by one forward probe of the primary key per symbol: how much history
# there is, so a window reaching before it can say so.
CATALOG_SQL = text(
    "SELECT q.symbol, q.asset_class, q.instrument_name, q.currency, q.exchange,"
    " q.exchange_timezone, q.bar_time AS last_bar, q.close, q.is_complete,"
    " f.bar_time AS first_bar"
    " FROM marketpipe.latest_quotes q"
    " CROSS JOIN LATERAL (SELECT b.bar_time FROM marketpipe.bars b"
    " WHERE b.symbol = q.symbol AND b.interval = q.interval ORDER BY b.bar_time LIMIT 1) f"
    " WHERE q.interval = :interval ORDER BY q.symbol"
)

KEY_FIGURES_SQL = text(
    "SELECT * FROM marketpipe.key_figures WHERE symbol = :symbol AND interval = :interval"
)

# Whether the first fetch has landed anything yet (raw first: payloads before bars).
LANDED_SQL = text(
    "SELECT count(*) AS payloads, max(fetched_at) AS newest FROM (SELECT fetched_at"
    " FROM marketpipe.raw_payloads WHERE interval = :interval LIMIT 10000) p"
)


# The quote screen and the period returns are defined once, in SQL (db/init/0007): the day's
# change against the previous session close (stocks) or 24 hours (crypto, forex), and the return
# over the window and over 7 days by marketpipe.period_returns.
OVERVIEW_SQL = text(
    "SELECT q.symbol, q.asset_class, q.instrument_name, q.currency, q.exchange_timezone,"
    " q.bar_time AS last_bar, q.close AS last_price, q.is_complete, q.pct_change AS change_bar,"
    " q.reference, q.reference_close, q.day_change, q.day_pct_change, q.high_52w, q.low_52w,"
    " q.avg_volume_20d, wk.return_pct AS change_7d, w.return_pct AS change_window,"
    " marketpipe.price_decimals(q.asset_class, q.close) AS price_decimals"
    " FROM marketpipe.latest_quotes q"
    " LEFT JOIN marketpipe.period_returns(:week_start, :until, :interval) wk"
    " ON wk.symbol = q.symbol"
    " LEFT JOIN marketpipe.period_returns(:window_start, :until, :interval) w"
    " ON w.symbol = q.symbol"
    " WHERE q.interval = :interval ORDER BY q.symbol"
)

QUOTE_SQL = text(
    "SELECT q.symbol, q.asset_class, q.exchange_timezone, q.bar_time, q.close, q.is_complete,"
    " q.reference, q.reference_close, q.day_change, q.day_pct_change, q.high_52w, q.low_52w,"
    " q.avg_volume_20d, marketpipe.price_decimals(q.asset_class, q.close) AS price_decimals,"
    " marketpipe.period_return(q.symbol, :since, :until, q.interval) AS window_return"
    " FROM marketpipe.latest_quotes q WHERE q.symbol = :symbol AND q.interval = :interval"
)

PERIOD_RETURNS_SQL = text(
    "SELECT r.symbol, r.start_time, r.start_close, r.end_time, r.end_close, r.return_pct,"
    " marketpipe.price_decimals(q.asset_class, r.end_close) AS price_decimals"
    " FROM marketpipe.period_returns(:since, :until, :interval) r"
    " JOIN marketpipe.latest_quotes q ON q.symbol = r.symbol AND q.interval = :interval"
    " WHERE r.symbol IN :symbols ORDER BY r.symbol"
).bindparams(bindparam("symbols", expanding=True))

# Rebased to the period return's reference; long windows keep one point per UTC day (its last
# bar) besides the reference and the final bar, so the last point is always 100 + the return.
REBASED_SQL = text(
    "SELECT symbol, bar_time, close, rebased"
    " FROM marketpipe.rebased(:since, :until, :interval, CAST(:symbols AS text[]))"
)
# Long windows: one point per trading day (db/init/0012); multi-year ones: the reference, then
# the last trading day of each week (db/init/0014).
REBASED_WEEKS_SQL = text(
    "SELECT symbol, trading_date AS bar_time, close, rebased"
    " FROM marketpipe.rebased_weekly(:since, :until, :interval, CAST(:symbols AS text[]))"
)
REBASED_DAYS_SQL = text(
    "SELECT symbol, trading_date AS bar_time, close, rebased"
    " FROM marketpipe.rebased_daily(:since, :until, :interval, CAST(:symbols AS text[]))"
)

# Sparklines need a shape, not every bar: the last close per bucket keeps the rows few.
SPARKLINE_SQL = text(
    "SELECT symbol, date_bin(:bucket, bar_time, :until) AS bar_time,"
    " (array_agg(close ORDER BY bar_time DESC))[1] AS close"
    " FROM marketpipe.bars"
    " WHERE interval = :interval AND bar_time >= :since AND bar_time <= :until"
    " GROUP BY 1, 2 ORDER BY 1, 2"
)

# Bars and days carry the same stored indicator columns: the instrument page draws either.
BARS_SQL = text(
    "SELECT bar_time, bar_time_local, exchange_timezone, open, high, low, close, volume, sma_20,"
    " sma_50, sma_200, ema_12, ema_26, bb_upper, bb_middle, bb_lower, rsi_14, macd, macd_signal,"
    " macd_hist, is_complete, marketpipe.price_decimals(asset_class, close) AS price_decimals"
    " FROM marketpipe.bars"
    " WHERE symbol = :symbol AND interval = :interval"
    " AND bar_time >= :since AND bar_time <= :until ORDER BY bar_time"
)

DAILY_SQL = text(
    "SELECT trading_date AS bar_time, open, high, low, close, volume, sma_20, sma_50, sma_200,"
    " ema_12, ema_26, bb_upper, bb_middle, bb_lower, rsi_14, macd, macd_signal, macd_hist,"
    " is_complete, marketpipe.price_decimals(asset_class, close) AS price_decimals"
    " FROM marketpipe.daily_bars"
    " WHERE symbol = :symbol AND trading_date >= :since AND trading_date <= :until"
    " ORDER BY trading_date"
)

# The API's own daily bars (INTERVALS with 1day), shaped as DAILY_SQL: its trading day is the
# bar's local date (the API dates a daily bar by its exchange's day, UTC for pairs).
API_DAILY_SQL = text(
    "SELECT bar_time_local::date AS bar_time, open, high, low, close, volume, sma_20, sma_50,"
    " sma_200, ema_12, ema_26, bb_upper, bb_middle, bb_lower, rsi_14, macd, macd_signal,"
    " macd_hist, is_complete, marketpipe.price_decimals(asset_class, close) AS price_decimals"
    " FROM marketpipe.bars WHERE symbol = :symbol AND interval = '1day'"
    " AND bar_time >= :since AND bar_time <= :until ORDER BY bar_time"
)

# Long windows compare trading days: each symbol's daily close (daily_bars, the last stored bar
# of each trading day, rebuilt by the loader), one range scan of its primary key per symbol
# instead of every hourly bar of the window; the zone from each symbol's newest bar.
COMPARE_DAYS_SQL = text(
    "SELECT s.symbol, d.asset_class, z.exchange_timezone, d.trading_date, d.close"
    " FROM unnest(CAST(:symbols AS text[])) AS s(symbol)"
    " CROSS JOIN LATERAL (SELECT b.exchange_timezone FROM marketpipe.bars b"
    " WHERE b.symbol = s.symbol AND b.interval = :interval ORDER BY b.bar_time DESC LIMIT 1) z"
    # OFFSET 0 fences the subquery: one primary-key range scan per symbol, never a table scan
    " CROSS JOIN LATERAL (SELECT d.asset_class, d.trading_date, d.close"
    " FROM marketpipe.daily_bars d WHERE d.symbol = s.symbol"
    " AND d.trading_date >= :since AND d.trading_date <= :until OFFSET 0) d"
    " ORDER BY s.symbol, d.trading_date"
)

# Multi-year windows: each symbol's last daily close of every week, keyed by the week's Monday
# (marketpipe.week_start) so that stocks and coins share the points. The last day of a week is
# the one whose next day starts another week: lead() over one symbol's primary-key scan needs
# no sort, where DISTINCT ON (week, day DESC) sorted all symbols' days (47 -> 19 ms at 10 M bars).
COMPARE_WEEKS_SQL = text(
    "SELECT s.symbol, d.asset_class, z.exchange_timezone, d.week, d.trading_date, d.close"
    " FROM unnest(CAST(:symbols AS text[])) WITH ORDINALITY AS s(symbol, n)"
    " CROSS JOIN LATERAL (SELECT b.exchange_timezone FROM marketpipe.bars b"
    " WHERE b.symbol = s.symbol AND b.interval = :interval ORDER BY b.bar_time DESC LIMIT 1) z"
    " CROSS JOIN LATERAL (SELECT * FROM (SELECT d.asset_class, d.trading_date, d.close,"
    " marketpipe.week_start(d.trading_date) AS week,"
    " lead(d.trading_date) OVER (ORDER BY d.trading_date) AS next_day"
    " FROM marketpipe.daily_bars d WHERE d.symbol = s.symbol"
    " AND d.trading_date >= :since AND d.trading_date <= :until) days"
    " WHERE next_day IS NULL OR marketpipe.week_start(next_day) <> week) d"
    " ORDER BY s.n, d.trading_date"
)

COMPARE_BARS_SQL = text(
    "SELECT symbol, asset_class, exchange_timezone, bar_time, close FROM marketpipe.bars"
    " WHERE symbol IN :symbols AND interval = :interval"
    " AND bar_time >= :since AND bar_time <= :until ORDER BY symbol, bar_time"
).bindparams(bindparam("symbols", expanding=True))

FRESHNESS_SQL = text(
    "SELECT q.symbol, q.asset_class, q.bar_time AS last_bar, q.is_complete, q.loaded_at,"
    " w.last_complete_bar, p.fetched_at AS last_fetch, p.source"
    " FROM marketpipe.latest_quotes q"
    " LEFT JOIN marketpipe.watermarks w ON w.symbol = q.symbol AND w.interval = q.interval"
    " LEFT JOIN LATERAL (SELECT r.fetched_at, r.source FROM marketpipe.raw_payloads r"
    " WHERE r.symbol = q.symbol AND r.interval = q.interval"
    " ORDER BY r.fetched_at DESC LIMIT 1) p ON true"
    " WHERE q.interval = :interval ORDER BY q.symbol"
)

RUNS_SQL = text(
    "SELECT finished_at, component, status, symbol, interval, rows_in, rows_loaded,"
    " rows_quarantined, message"
    " FROM marketpipe.pipeline_runs ORDER BY finished_at DESC LIMIT :limit"
)

QUARANTINE_SQL = text(
    "SELECT quarantined_at, symbol, interval, row_key, reason, payload_id"
    " FROM marketpipe.quarantine WHERE quarantined_at >= :since"
    " ORDER BY quarantined_at DESC LIMIT :limit"
)

QUARANTINE_REASONS_SQL = text(
    "SELECT reason, count(*) AS rows, max(quarantined_at) AS last_seen"
    " FROM marketpipe.quarantine WHERE quarantined_at >= :since"
    " GROUP BY reason ORDER BY rows DESC"
)

RESTATEMENTS_SQL = text(
    "SELECT status, symbol, interval, kind, detected_at, ratio, max_difference, first_bar,"
    " last_bar, bars_affected, restated_at, bars_restated, bars_removed, message"
    " FROM marketpipe.restatements ORDER BY detected_at DESC LIMIT :limit"
)

CONFIGURED_SERIES_SQL = text(
    "SELECT status, symbol, interval, configured_at, removed_at, backfill_since,"
    " backfill_status, windows_done, windows_total, backfill_message, updated_at"
    " FROM marketpipe.configured_series ORDER BY status, symbol, interval"
)
STORED_INTERVALS_SQL = text(
    "SELECT DISTINCT interval FROM marketpipe.latest_quotes WHERE symbol = :symbol"
)


def _read(engine: Engine, statement: TextClause, **params: Any) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(statement, conn, params=params)


def catalog(engine: Engine, interval: str) -> pd.DataFrame:
    """Every symbol with bars at ``interval``: its asset class, name and newest bar."""
    return _read(engine, CATALOG_SQL, interval=interval)


def key_figures(engine: Engine, symbol: str, interval: str) -> pd.DataFrame:
    """marketpipe.key_figures of one series (one row, or none)."""
    return _read(engine, KEY_FIGURES_SQL, symbol=symbol, interval=interval)


def landed(engine: Engine, interval: str) -> pd.DataFrame:
    """How many payloads the fetcher landed (counted up to 10,000) and the newest one's time."""
    return _read(engine, LANDED_SQL, interval=interval)


def overview(engine: Engine, interval: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Every symbol's quote, its day change and its period returns over 7 days and the window."""
    return _read(
        engine,
        OVERVIEW_SQL,
        interval=interval,
        week_start=until - timedelta(days=7),
        window_start=since,
        until=until,
    )


def quote(
    engine: Engine, symbol: str, interval: str, since: datetime, until: datetime
) -> pd.DataFrame:
    """One symbol's quote (latest_quotes) with its return over [since, until]."""
    return _read(engine, QUOTE_SQL, symbol=symbol, interval=interval, since=since, until=until)


def period_returns(
    engine: Engine, symbols: Sequence[str], interval: str, since: datetime, until: datetime
) -> pd.DataFrame:
    """marketpipe.period_returns for ``symbols``: close at ``until`` vs at or before ``since``."""
    return _read(
        engine,
        PERIOD_RETURNS_SQL,
        symbols=list(symbols),
        interval=interval,
        since=since,
        until=until,
    )


def rebased(
    engine: Engine,
    symbols: Sequence[str],
    interval: str,
    since: datetime,
    until: datetime,
    *,
    daily: bool,
    weekly: bool = False,
) -> pd.DataFrame:
    """marketpipe.rebased for ``symbols``; ``daily``: marketpipe.rebased_daily, one point per
    trading day (``bar_time`` is then the trading day, a date); ``weekly``: its last trading
    day of each week."""
    statement = REBASED_SQL
    if daily:
        statement = REBASED_WEEKS_SQL if weekly else REBASED_DAYS_SQL
    frame = _read(
        engine,
        statement,
        symbols=list(symbols),
        interval=interval,
        since=since,
        until=until,
    )
    if daily:
        frame["bar_time"] = pd.to_datetime(frame["bar_time"])
    return frame


def sparklines(
    engine: Engine, interval: str, since: datetime, until: datetime, bucket: timedelta
) -> pd.DataFrame:
    """Every symbol's last close per ``bucket`` (a few dozen points per sparkline)."""
    return _read(engine, SPARKLINE_SQL, interval=interval, since=since, until=until, bucket=bucket)


def bars(
    engine: Engine, symbol: str, interval: str, since: datetime, until: datetime
) -> pd.DataFrame:
    """One symbol's stored bars with their indicators, oldest first."""
    return _read(engine, BARS_SQL, symbol=symbol, interval=interval, since=since, until=until)


def daily_bars(
    engine: Engine, symbol: str, since: datetime, until: datetime, *, from_api: bool = False
) -> pd.DataFrame:
    """One symbol's daily bars with their stored indicators; bar_time is the trading day.

    ``from_api``: the API's 1day bars (stored in bars), else daily_bars aggregated from 1h.
    """
    if from_api:
        frame = _read(engine, API_DAILY_SQL, symbol=symbol, since=since, until=until)
    else:
        frame = _read(engine, DAILY_SQL, symbol=symbol, since=since.date(), until=until.date())
    frame["bar_time"] = pd.to_datetime(frame["bar_time"])
    return frame


def compare_closes(
    engine: Engine,
    symbols: Sequence[str],
    interval: str,
    since: datetime,
    until: datetime,
    *,
    daily: bool,
    weekly: bool = False,
) -> pd.DataFrame:
    """Stored closes of several symbols over [since, until] (the last of each trading day if
    ``daily``; of each week, keyed by its Monday in ``trading_date``, if also ``weekly``), for
    returns on a common grid."""
    if not symbols:
        return pd.DataFrame(
            {
                "symbol": pd.Series(dtype=str),
                "asset_class": pd.Series(dtype=str),
                "exchange_timezone": pd.Series(dtype=str),
                "bar_time": pd.Series(dtype="datetime64[ns, UTC]"),
                "close": pd.Series(dtype=float),
            }
        )
    if daily:
        frame = _read(
            engine,
            COMPARE_WEEKS_SQL if weekly else COMPARE_DAYS_SQL,
            symbols=list(symbols),
            interval=interval,
            since=since.date(),
            until=until.date(),
        )
        if weekly:
            frame = frame.drop(columns=["trading_date"]).rename(columns={"week": "trading_date"})
        frame["trading_date"] = pd.to_datetime(frame["trading_date"])
        return frame
    return _read(
        engine,
        COMPARE_BARS_SQL,
        symbols=list(symbols),
        interval=interval,
        since=since,
        until=until,
    )


def freshness(engine: Engine, interval: str) -> pd.DataFrame:
    """Per symbol: newest bar, watermark, and the time and source of the newest fetch."""
    return _read(engine, FRESHNESS_SQL, interval=interval)


def recent_runs(engine: Engine, limit: int = 50) -> pd.DataFrame:
    return _read(engine, RUNS_SQL, limit=limit)


def quarantine(engine: Engine, since: datetime, limit: int = 200) -> pd.DataFrame:
    return _read(engine, QUARANTINE_SQL, since=since, limit=limit)


def quarantine_reasons(engine: Engine, since: datetime) -> pd.DataFrame:
    return _read(engine, QUARANTINE_REASONS_SQL, since=since)


def restatements(engine: Engine, limit: int = 50) -> pd.DataFrame:
    """The newest restatements (splits, corrections, requests) with their status."""
    return _read(engine, RESTATEMENTS_SQL, limit=limit)


def configured_series(engine: Engine) -> pd.DataFrame:
    """Every series the fetcher was configured with: active or inactive, backfill progress."""
    return _read(engine, CONFIGURED_SERIES_SQL)


def stored_intervals(engine: Engine, symbol: str) -> list[str]:
    """The intervals one symbol has stored bars of (its latest quote per interval)."""
    return sorted(_read(engine, STORED_INTERVALS_SQL, symbol=symbol)["interval"].tolist())
