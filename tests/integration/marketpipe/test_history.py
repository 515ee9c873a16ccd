"""The history read of a steady tick stays on one series' stretch of the primary key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg2

from marketpipe.history import HISTORY_SQL
from marketpipe.settings import Settings

SYMBOLS = 50
BARS_PER_SYMBOL = 300  # bench_tick's first tick: 50 symbols of 300 hourly bars


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_the_history_query_reads_one_series_by_the_primary_key(clean_db: Settings) -> None:
    """Whatever the table's statistics (none in a new database's first hour): the bars it
    scans are the series' own, never every symbol's bars of the year filtered down to one."""
    conn = psycopg2.connect(clean_db.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO marketpipe.bars (symbol, interval, bar_time, asset_class, open, high,"
            " low, close, volume, is_complete, payload_id, transformed_at, trading_date)"
            " SELECT 'SYM' || s, '1h', timestamptz '2026-01-01 00:00+00' + h * interval '1 hour',"
            " 'crypto', 100, 101, 99, 100, 1000, true, 'p' || s, now(), date '2026-01-01' + h / 24"
            " FROM generate_series(1, %s) AS s, generate_series(0, %s) AS h",
            (SYMBOLS, BARS_PER_SYMBOL - 1),
        )
        statement = (
            HISTORY_SQL.replace("$1", "%(symbol)s")
            .replace("$2", "%(interval)s")
            .replace("$3", "%(before)s")
            .replace("$4", "%(whole)s")
        )
        params = {"symbol": "SYM7", "interval": "1h", "before": "2026-01-13 12:00+00"}
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, {**params, "whole": False})
        (plan,) = cur.fetchone()
        cur.execute(statement, {**params, "whole": False})
        rows = cur.fetchall()
    conn.close()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes = list(plan_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "bars"]
    assert scans and not any(n["Node Type"] == "Seq Scan" for n in scans), scans
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n} - {"series_versions_pkey"}
    assert indexes == {"bars_pkey"}, indexes
    # The series' 300 bars all lie before Jan 13 12:00 and within its look-back: all are read.
    assert len(rows) == BARS_PER_SYMBOL
    assert max(n.get("Actual Rows", 0) for n in scans) <= BARS_PER_SYMBOL
    assert sum(n.get("Rows Removed by Filter", 0) for n in scans) == 0
