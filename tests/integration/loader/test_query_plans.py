"""At a million bars, the dashboard's and analysts' queries are served by indexes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg2
import pytest

from marketpipe.settings import Settings
from services.loader import daily

SYMBOLS = 20
BARS_PER_SYMBOL = 50_000  # hourly: almost six years each, a million rows in all
WEEK = ("2024-03-04 00:00+00", "2024-03-11 00:00+00")


@pytest.fixture(scope="module")
def million_bars(base_settings: Settings) -> Iterator[Settings]:
    """A million bars generated in the server (seconds, not minutes), removed afterwards."""
    conn = psycopg2.connect(base_settings.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE marketpipe.bars")
        cur.execute(
            "INSERT INTO marketpipe.bars (symbol, interval, bar_time, asset_class, open, high,"
            " low, close, volume, is_complete, payload_id, transformed_at)"
            " SELECT 'SYM' || s, '1h', timestamptz '2020-01-01 00:00+00' + h * interval '1 hour',"
            " 'crypto', 100, 101, 99, 100 + random(), 1000, true, 'p' || s, now()"
            " FROM generate_series(1, %s) AS s, generate_series(0, %s) AS h",
            (SYMBOLS, BARS_PER_SYMBOL - 1),
        )
        cur.execute("ANALYZE marketpipe.bars")
        cur.execute("SELECT count(*) FROM marketpipe.bars")
        assert cur.fetchone() == (SYMBOLS * BARS_PER_SYMBOL,)
    try:
        yield base_settings
    finally:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE marketpipe.bars")
        conn.close()


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


QUERIES = {
    "latest bar per symbol": (
        "SELECT symbol, bar_time, close FROM marketpipe.latest_quotes WHERE interval = '1h'",
        (),
    ),
    "one symbol over a range": (
        "SELECT bar_time, open, high, low, close FROM marketpipe.bars"
        " WHERE symbol = 'SYM7' AND interval = '1h' AND bar_time >= %s AND bar_time < %s"
        " ORDER BY bar_time",
        WEEK,
    ),
    "some symbols since (dashboard comparison)": (
        "SELECT symbol, bar_time, close FROM marketpipe.bars"
        " WHERE symbol IN ('SYM1', 'SYM2', 'SYM3') AND interval = '1h' AND bar_time >= %s"
        " ORDER BY symbol, bar_time",
        ("2025-09-07 00:00+00",),  # the last week of the generated data
    ),
    "all symbols over a range": (
        "SELECT symbol, bar_time, close FROM marketpipe.bars"
        " WHERE interval = '1h' AND bar_time >= %s AND bar_time < %s",
        WEEK,
    ),
    "rebased comparison": ("SELECT * FROM marketpipe.rebased(%s, %s, '1h')", WEEK),
    "period returns": ("SELECT * FROM marketpipe.period_returns(%s, %s, '1h')", WEEK),
    "quotes": ("SELECT * FROM marketpipe.latest_quotes WHERE interval = '1h'", ()),
}


@pytest.mark.parametrize("name", QUERIES)
def test_the_query_uses_an_index(million_bars: Settings, name: str) -> None:
    statement, params = QUERIES[name]
    conn = psycopg2.connect(million_bars.role_url("reader").render_as_string(hide_password=False))
    with conn, conn.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + statement, params)
        (plan,) = cur.fetchone()
    conn.close()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes = list(plan_nodes(plan[0]["Plan"]))
    scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert ("Seq Scan", "bars") not in scans, scans
    assert any(t in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") for t, _ in scans)
    # A plan that reads a large part of the table is not "served by an index" in any useful way.
    assert plan[0]["Plan"]["Total Cost"] < 20_000, plan[0]["Plan"]["Total Cost"]


def test_the_daily_rebuild_reads_the_touched_days_by_the_primary_key(
    million_bars: Settings,
) -> None:
    """A load's read of the stored bars of the days it touched: one range scan, not the table."""
    conn = psycopg2.connect(million_bars.database_url)
    with conn, conn.cursor() as cur:
        # As the loader sends it: one series, its values as parameters (a prepared statement).
        cur.execute(
            "PREPARE touched (text, text, timestamptz, timestamptz, date, date) AS "
            + daily._STORED_BARS_SQL
        )
        cur.execute(
            "EXPLAIN (FORMAT JSON) EXECUTE touched (%s, %s, %s, %s, %s, %s)",
            daily.TouchedDays("SYM7", date(2024, 3, 4), date(2024, 3, 6)).parameters(),
        )
        (plan,) = cur.fetchone()
    conn.close()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes = list(plan_nodes(plan[0]["Plan"]))
    scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert ("Seq Scan", "bars") not in scans, scans
    assert ("Index Scan", "bars") in scans or ("Bitmap Heap Scan", "bars") in scans, scans
