"""The fetcher's rows in ``marketpipe.pipeline_runs``: one per fetch cycle, backfill window and
restatement (the loader closes a restatement's row in its swap).

The loader writes a row per payload; these say what the fetcher did around them: symbols asked,
how many had new data, credits spent, seconds waited for credits and the API's errors, so the
health page and ``ops status`` can tell a quiet hour from a failing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from marketpipe.db import transaction
from marketpipe.settings import Settings

Status = Literal["ok", "partial", "failed", "no_data", "skipped", "running"]
MESSAGE_LIMIT: Final = 2000

# A run done again (a tick retried after a failure) records its latest outcome.
_UPSERT: Final = (
    "INSERT INTO marketpipe.pipeline_runs AS r (run_id, component, status, symbol, interval,"
    " symbols_asked, symbols_new, credits, waited_seconds, api_errors, windows, message,"
    " started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " NULLIF(%s, ''), %s, now())"
    " ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, windows = EXCLUDED.windows,"
    " symbols_asked = EXCLUDED.symbols_asked, symbols_new = EXCLUDED.symbols_new,"
    " credits = EXCLUDED.credits, waited_seconds = EXCLUDED.waited_seconds,"
    " api_errors = EXCLUDED.api_errors, message = EXCLUDED.message,"
    " started_at = EXCLUDED.started_at, finished_at = now()"
)


@dataclass(frozen=True)
class FetchRun:
    run_id: str
    component: Literal["fetcher", "backfill", "restatement"]
    status: Status
    interval: str
    started_at: datetime
    symbols_asked: int = 0
    symbols_new: int = 0
    credits: int = 0
    waited_seconds: float = 0.0
    api_errors: int = 0
    message: str = ""
    symbol: str | None = None  # a restatement's series
    windows: int | None = None  # a restatement's re-fetched windows


def outcome(asked: int, new: int, failed: int) -> Status:
    """ok: no symbol failed; partial: some did; failed: all did; no_data: nothing new."""
    if asked and failed >= asked:
        return "failed"
    if failed:
        return "partial"
    return "ok" if new else "no_data"


def errors_text(errors: Mapping[str, str]) -> str:
    return "; ".join(f"{symbol}: {message}" for symbol, message in sorted(errors.items()))


def record(settings: Settings, run: FetchRun) -> None:
    """Write (or rewrite) the run's row through the fetcher's role."""
    with transaction(settings.role_url("fetcher")) as cur:
        cur.execute(
            _UPSERT,
            (
                run.run_id,
                run.component,
                run.status,
                run.symbol,
                run.interval,
                run.symbols_asked,
                run.symbols_new,
                run.credits,
                round(run.waited_seconds, 3),
                run.api_errors,
                run.windows,
                run.message[:MESSAGE_LIMIT],
                run.started_at,
            ),
        )
