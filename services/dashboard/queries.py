"""Read-only queries of the dashboard: parameterized SQL in, DataFrame out.

Every statement is a constant: user choices arrive only as bound parameters (symbols validated
before they get here). Each query is shaped to be served by an index at any table size: the
newest bars come from ``latest_quotes`` (a loose index scan, db/init/0003), "price N hours ago"
is one backward probe of the primary key per symbol, and ranges are bounded on both ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import TextClause

CATALOG_SQL = text(
    "SELECT symbol, asset_class, instrument_name, currency, bar_time AS last_bar, close,"
    " is_complete"
    " FROM marketpipe.latest_quotes WHERE interval = :interval ORDER BY symbol"
)


# "The close N ago" is one backward probe of the primary key per symbol and horizon.
OVERVIEW_SQL = text(
    "SELECT q.symbol, q.asset_class, q.instrument_name, q.currency, q.bar_time AS last_bar,"
    " q.close AS last_price, q.is_complete,"
    " (SELECT b.close FROM marketpipe.bars b WHERE b.symbol = q.symbol"
    " AND b.interval = q.interval AND b.bar_time <= q.bar_time - :one_hour"
    " ORDER BY b.bar_time DESC LIMIT 1) AS close_1h_ago,"
    " (SELECT b.close FROM marketpipe.bars b WHERE b.symbol = q.symbol"
    " AND b.interval = q.interval AND b.bar_time <= q.bar_time - :one_day"
    " ORDER BY b.bar_time DESC LIMIT 1) AS close_24h_ago,"
    " (SELECT b.close FROM marketpipe.bars b WHERE b.symbol = q.symbol"
    " AND b.interval = q.interval AND b.bar_time <= q.bar_time - :one_week"
    " ORDER BY b.bar_time DESC LIMIT 1) AS close_7d_ago,"
    " (SELECT b.close FROM marketpipe.bars b WHERE b.symbol = q.symbol"
    " AND b.interval = q.interval AND b.bar_time <= q.bar_time - :window"
    " ORDER BY b.bar_time DESC LIMIT 1) AS close_window_ago"
    " FROM marketpipe.latest_quotes q WHERE q.interval = :interval ORDER BY q.symbol"
)

# Sparklines need a shape, not every bar: the last close per bucket keeps the rows few.
SPARKLINE_SQL = text(
    "SELECT symbol, date_bin(:bucket, bar_time, :until) AS bar_time,"
    " (array_agg(close ORDER BY bar_time DESC))[1] AS close"
    " FROM marketpipe.bars"
    " WHERE interval = :interval AND bar_time >= :since AND bar_time <= :until"
    " GROUP BY 1, 2 ORDER BY 1, 2"
)

BARS_SQL = text(
    "SELECT bar_time, open, high, low, close, volume, sma_20, sma_50, sma_200, ema_12, ema_26,"
    " bb_upper, bb_middle, bb_lower, rsi_14, macd, macd_signal, macd_hist, is_complete"
    " FROM marketpipe.bars"
    " WHERE symbol = :symbol AND interval = :interval"
    " AND bar_time >= :since AND bar_time <= :until ORDER BY bar_time"
)

# Daily bars carry no indicators: the caller computes them, so it reads warm-up days too.
DAILY_SQL = text(
    "SELECT trading_date AS bar_time, open, high, low, close, volume, is_complete"
    " FROM marketpipe.daily_bars"
    " WHERE symbol = :symbol AND trading_date >= :since AND trading_date <= :until"
    " ORDER BY trading_date"
)

COMPARE_BARS_SQL = text(
    "SELECT symbol, bar_time, close FROM marketpipe.bars"
    " WHERE symbol IN :symbols AND interval = :interval"
    " AND bar_time >= :since AND bar_time <= :until ORDER BY symbol, bar_time"
).bindparams(bindparam("symbols", expanding=True))

COMPARE_DAILY_SQL = text(
    "SELECT symbol, trading_date AS bar_time, close FROM marketpipe.daily_bars"
    " WHERE symbol IN :symbols AND trading_date >= :since AND trading_date <= :until"
    " ORDER BY symbol, trading_date"
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


def _read(engine: Engine, statement: TextClause, **params: object) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(statement, conn, params=params)  # type: ignore[call-overload, no-any-return]


def catalog(engine: Engine, interval: str) -> pd.DataFrame:
    """Every symbol with bars at ``interval``: its asset class, name and newest bar."""
    return _read(engine, CATALOG_SQL, interval=interval)


def overview(engine: Engine, interval: str, window: timedelta) -> pd.DataFrame:
    """Newest close per symbol and the closes 1 h, 24 h, 7 days and ``window`` before it."""
    return _read(
        engine,
        OVERVIEW_SQL,
        interval=interval,
        one_hour=timedelta(hours=1),
        one_day=timedelta(days=1),
        one_week=timedelta(days=7),
        window=window,
    )


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


def daily_bars(engine: Engine, symbol: str, since: datetime, until: datetime) -> pd.DataFrame:
    frame = _read(engine, DAILY_SQL, symbol=symbol, since=since.date(), until=until.date())
    frame["bar_time"] = pd.to_datetime(frame["bar_time"], utc=True)
    return frame


def compare_closes(
    engine: Engine,
    symbols: Sequence[str],
    interval: str,
    since: datetime,
    until: datetime,
    *,
    daily: bool,
) -> pd.DataFrame:
    """Closes of several symbols: stored bars, or daily closes for long windows."""
    if not symbols:
        return pd.DataFrame(
            {"symbol": pd.Series(dtype=str), "bar_time": pd.Series(dtype="datetime64[ns, UTC]")}
        ).assign(close=pd.Series(dtype=float))
    if daily:
        frame = _read(
            engine, COMPARE_DAILY_SQL, symbols=list(symbols), since=since.date(), until=until.date()
        )
        frame["bar_time"] = pd.to_datetime(frame["bar_time"], utc=True)
        return frame
    return _read(
        engine, COMPARE_BARS_SQL, symbols=list(symbols), interval=interval, since=since, until=until
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
