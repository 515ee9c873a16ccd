"""Read-only queries of the dashboard: parameterized SQL in, DataFrame out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

SYMBOLS_SQL = text(
    "SELECT symbol, asset_class, max(bar_time) AS last_bar"
    " FROM marketpipe.bars WHERE interval = :interval GROUP BY symbol, asset_class ORDER BY symbol"
)

HISTORY_SQL = text(
    "SELECT symbol, bar_time, open, high, low, close, volume, sma_20, sma_50, sma_200,"
    " ema_12, ema_26, change, pct_change, is_complete"
    " FROM marketpipe.bars"
    " WHERE symbol = :symbol AND interval = :interval AND bar_time >= :since"
    " ORDER BY bar_time"
)

CLOSES_SQL = text(
    "SELECT symbol, bar_time, close FROM marketpipe.bars"
    " WHERE symbol IN :symbols AND interval = :interval AND bar_time >= :since"
    " ORDER BY symbol, bar_time"
).bindparams(bindparam("symbols", expanding=True))

RUNS_SQL = text(
    "SELECT finished_at, component, status, symbol, rows_loaded, rows_quarantined, message"
    " FROM marketpipe.pipeline_runs ORDER BY finished_at DESC LIMIT :limit"
)

SOURCES_SQL = text(
    "SELECT source, count(*) AS payloads, max(fetched_at) AS last_fetch"
    " FROM marketpipe.raw_payloads GROUP BY source"
)


def _read(engine: Engine, statement: object, **params: object) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(statement, conn, params=params)  # type: ignore[call-overload, no-any-return]


def symbols(engine: Engine, interval: str) -> pd.DataFrame:
    return _read(engine, SYMBOLS_SQL, interval=interval)


def history(engine: Engine, symbol: str, interval: str, since: datetime) -> pd.DataFrame:
    return _read(engine, HISTORY_SQL, symbol=symbol, interval=interval, since=since)


def closes(engine: Engine, symbols: Sequence[str], interval: str, since: datetime) -> pd.DataFrame:
    if not symbols:
        return pd.DataFrame(columns=["symbol", "bar_time", "close"])
    return _read(engine, CLOSES_SQL, symbols=list(symbols), interval=interval, since=since)


def recent_runs(engine: Engine, limit: int = 20) -> pd.DataFrame:
    return _read(engine, RUNS_SQL, limit=limit)


def data_sources(engine: Engine) -> pd.DataFrame:
    return _read(engine, SOURCES_SQL)
