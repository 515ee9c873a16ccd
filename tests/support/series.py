"""A stored series read back, and compared with one loop-reference pass over all of it."""

from __future__ import annotations

import pandas as pd
import psycopg2

from marketpipe.contract import OLAP_COLUMNS
from marketpipe.market import bars_per_year, venue
from marketpipe.settings import Settings
from tests.unit.transformer import reference as ref
from tests.unit.transformer.strategies import (
    assert_52_week_match,
    assert_close,
    assert_indicators_match,
)

FLOATS = [name for name, kind in OLAP_COLUMNS if kind == "double precision"]


def stored_series(settings: Settings, symbol: str, interval: str = "1h") -> pd.DataFrame:
    """Every stored bar of the series, in time order, every column."""
    conn = psycopg2.connect(settings.database_url)
    try:
        return pd.read_sql_query(
            "SELECT * FROM marketpipe.bars WHERE symbol = %s AND interval = %s ORDER BY bar_time",
            conn,
            params=(symbol, interval),
        )
    finally:
        conn.close()


def assert_matches_one_pass(bars: pd.DataFrame, interval: str = "1h") -> None:
    """Every derived column equals the loop reference over the whole stored series (1e-9)."""
    path = {c: bars[c].astype(float).tolist() for c in ("open", "high", "low", "close", "volume")}
    first = bars.iloc[0]
    place = venue(str(first["asset_class"]), first["exchange_timezone"], first["mic_code"])
    columns = {c: bars[c].astype(float).to_numpy() for c in FLOATS}
    assert_indicators_match(columns, path, bars_per_year(interval, place))
    times = [t.to_pydatetime().replace(tzinfo=None) for t in bars["bar_time"]]
    assert_52_week_match(columns, times, path)
    days = [str(d) for d in bars["trading_date"]]
    vwap = ref.session_vwap(days, path["high"], path["low"], path["close"], path["volume"])
    assert_close(columns["vwap_session"], vwap, max(path["close"]), "vwap_session")
