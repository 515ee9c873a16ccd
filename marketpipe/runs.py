"""Reading the run log (``marketpipe.pipeline_runs``): what the health page and ``ops status`` show.

One definition of the summary for both: the newest fetch cycles and backfill windows with their
symbols, credits, waits and errors, and the loads of a period by outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine

FETCH_COMPONENTS: Final = ("fetcher", "backfill")


def restatement_run_id(restatement_id: int) -> str:
    """A restatement's row: the fetcher opens it ('running'), the loader's swap closes it."""
    return f"restatement:{restatement_id}"


FETCH_RUNS_SQL: Final = text(
    "SELECT finished_at, component, status, run_id, symbols_asked, symbols_new, credits,"
    " waited_seconds, api_errors, message FROM marketpipe.pipeline_runs"
    " WHERE component IN ('fetcher', 'backfill') ORDER BY finished_at DESC LIMIT :limit"
)
RESTATEMENT_RUNS_SQL: Final = text(
    "SELECT finished_at, status, symbol, interval, windows, credits, rows_loaded AS"
    " rows_replaced, rows_removed, message FROM marketpipe.pipeline_runs"
    " WHERE component = 'restatement' ORDER BY finished_at DESC LIMIT :limit"
)
LOAD_SUMMARY_SQL: Final = text(
    "SELECT status, count(*) AS payloads, sum(rows_loaded) AS rows_changed,"
    " sum(rows_quarantined) AS rows_quarantined, max(finished_at) AS last_finished"
    " FROM marketpipe.pipeline_runs WHERE component = 'loader' AND finished_at >= :since"
    " GROUP BY status ORDER BY status"
)


def fetch_runs(engine: Engine, limit: int = 20) -> pd.DataFrame:
    """The newest fetch cycles and backfill windows, newest first."""
    with engine.connect() as conn:
        return pd.read_sql_query(FETCH_RUNS_SQL, conn, params={"limit": limit})


def restatement_runs(engine: Engine, limit: int = 20) -> pd.DataFrame:
    """The newest restatements' runs (re-fetch and swap), newest first."""
    with engine.connect() as conn:
        return pd.read_sql_query(RESTATEMENT_RUNS_SQL, conn, params={"limit": limit})


def load_summary(engine: Engine, since: datetime) -> pd.DataFrame:
    """Loads finished since ``since`` per outcome: payloads, rows changed and quarantined."""
    with engine.connect() as conn:
        return pd.read_sql_query(LOAD_SUMMARY_SQL, conn, params={"since": since})
