"""``python -m services.ops status``: the run log's summary in a terminal (as the health page).

Read only: the run log through the read-only role, queue depths from Redis without RQ's
cleanups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pandas as pd
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from marketpipe import runs
from marketpipe.db import reader_engine
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import Settings

LOAD_WINDOW: Final = timedelta(hours=24)
MESSAGE_WIDTH: Final = 60


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.0f}"
    text = str(value)
    return text if len(text) <= MESSAGE_WIDTH else text[: MESSAGE_WIDTH - 1] + "…"


def table(frame: pd.DataFrame) -> str:
    """A plain aligned text table (no dependency for a few dozen rows)."""
    rows = [[str(c) for c in frame.columns]]
    rows += [[_cell(v) for v in record] for record in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def queue_counts(redis: Redis) -> pd.DataFrame:
    rows = []
    for name in (TRANSFORM_QUEUE, LOAD_QUEUE):
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        rows.append(
            {
                "queue": name,
                "waiting": queue.count,
                "running": StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
                "scheduled": scheduled.get_job_count(cleanup=False),
                "failed": FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
            }
        )
    return pd.DataFrame(rows)


def status_report(settings: Settings, redis: Redis, *, limit: int = 10) -> str:
    engine = reader_engine(settings)
    fetches = runs.fetch_runs(engine, limit)
    since = datetime.now(UTC) - LOAD_WINDOW
    loads = runs.load_summary(engine, since)
    parts = [f"Fetch cycles and backfill windows (newest {limit})"]
    if fetches.empty:
        parts.append(
            "  none yet: the fetcher has not run (make run, or python -m services.fetcher)"
        )
    else:
        shown = fetches.rename(columns={"waited_seconds": "waited_s", "symbols_asked": "asked"})
        parts.append(table(shown.drop(columns=["component"])))
    restated = runs.restatement_runs(engine, limit)
    parts += ["", f"Restatements: re-fetch and swap (newest {limit})"]
    parts.append(table(restated) if not restated.empty else "  none")
    parts += ["", f"Loads in the last {LOAD_WINDOW.total_seconds() / 3600:.0f} h"]
    parts.append(table(loads) if not loads.empty else "  none")
    parts += ["", "Queues", table(queue_counts(redis))]
    return "\n".join(parts)
