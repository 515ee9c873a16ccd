"""RQ job of the loader: one transformed batch, one PostgreSQL transaction.

A batch is one payload's bars and quarantined rows (Arrow IPC in Redis, keyed by the payload
id), with the version of the stored series its indicators continue. Its load job writes both,
recomputes the stretch of the series whose state went stale (services/loader/recompute.py),
rebuilds the daily bars they touch from the stored bars, and writes the run-log entry, the
series' version and its watermark in a single transaction, or nothing.
Idempotence needs no coordination between workers: the job id is deterministic
(``load-<payload id>``) and every write is an upsert that leaves equal rows untouched, so a
retry, a replay or the same job run twice changes no row.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from marketpipe import broker
from marketpipe.contract import (
    OLAP_COLUMNS,
    OLAP_KEY,
    QUARANTINE_COLUMNS,
    QUARANTINE_KEY,
    column_names,
)
from marketpipe.db import adbc_connect, utc_text
from marketpipe.queues import RESTATEMENT_PENDING_KEY, restatement_batch_id
from marketpipe.raw import PayloadNotLandedError
from marketpipe.settings import Settings, load_settings
from services.loader import restatement
from services.loader.daily import STORED_BAR_COLUMNS, rebuild_daily, touched_days
from services.loader.recompute import bump_version, recompute
from services.loader.upsert import prepare_session, upsert, upsert_known

log = logging.getLogger("marketpipe.loader")

LINEAGE: Final = ("payload_id", "transformed_at")

# One row per series of the batch, its last complete bar computed from the Arrow table (a scan
# of the 200k-row stage took 0.15-0.3 s in bench_load).
_ADVANCE_WATERMARKS: Final = (
    "INSERT INTO marketpipe.watermarks AS w (symbol, interval, last_complete_bar)"
    " VALUES ($1, $2, $3::timestamptz)"
    " ON CONFLICT (symbol, interval) DO UPDATE"
    " SET last_complete_bar = EXCLUDED.last_complete_bar, updated_at = now()"
    " WHERE EXCLUDED.last_complete_bar > w.last_complete_bar"
)
# One entry per payload. A replay with the same outcome adds nothing; one that turns a failure
# into a load (the cause was fixed) records the new outcome.
_LOG_RUN: Final = (
    "INSERT INTO marketpipe.pipeline_runs AS r (run_id, component, status, symbol, interval,"
    " payload_id, rows_in, rows_loaded, rows_quarantined, message, started_at)"
    " SELECT 'load:' || payload_id, 'loader', $2, symbol, interval, payload_id, $3, $4, $5,"
    " NULLIF($6, ''), $7::timestamptz FROM marketpipe.raw_payloads WHERE payload_id = $1"
    " ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, rows_in = EXCLUDED.rows_in,"
    " rows_loaded = EXCLUDED.rows_loaded, rows_quarantined = EXCLUDED.rows_quarantined,"
    " message = EXCLUDED.message, started_at = EXCLUDED.started_at, finished_at = now()"
    " WHERE r.status <> EXCLUDED.status"
)


class MixedBatchError(ValueError):
    """A batch with rows of several series: one payload is one series, one batch is its load."""


@cache
def _settings() -> Settings:
    return load_settings()


def run_status(bars: int, quarantined: int) -> str:
    if bars == 0:
        return "failed" if quarantined else "no_data"
    return "partial" if quarantined else "ok"


def advance_watermarks(cur: Any, series: tuple[str, str], bars: pa.Table) -> None:
    """The series' watermark moves up to its last complete bar in ``bars``, never back."""
    complete = bars.filter(bars["is_complete"])
    if complete.num_rows:
        last = utc_text(pc.max(complete["bar_time"]).as_py())
        cur.execute(_ADVANCE_WATERMARKS, (*series, last))


# Under the series' lock, one round trip: whether the raw payload was landed, the version of
# the stored series and whether stored bars continue after the batch's last one.
_FACTS_SQL: Final = (
    "SELECT EXISTS (SELECT 1 FROM marketpipe.raw_payloads WHERE payload_id = $1),"
    " coalesce((SELECT version FROM marketpipe.series_versions"
    " WHERE symbol = $2 AND interval = $3), 0),"
    " EXISTS (SELECT 1 FROM marketpipe.bars WHERE symbol = $2 AND interval = $3"
    " AND bar_time > $4::timestamptz)"
)
# The stored bars of the series over the batch's span, every column: what the restatement check
# compares, which bars are new or changed (upsert.upsert_known), and what the days it touches are
# aggregated from (services/loader/daily.py). One range of the primary key.
_STORED_SQL: Final = (
    f"SELECT {', '.join(column_names(OLAP_COLUMNS))} FROM marketpipe.bars"  # noqa: S608
    " WHERE symbol = $1 AND interval = $2 AND bar_time >= $3::timestamptz"
    " AND bar_time < $4::timestamptz ORDER BY bar_time"
)


def stored_bars(cur: Any, series: tuple[str, str], first: datetime, end: datetime) -> pa.Table:
    """Every stored bar of ``series`` with ``first <= bar_time < end``, every column, in time
    order: what :func:`upsert.upsert_known` compares a batch with (read under the series' lock)."""
    cur.execute(_STORED_SQL, (*series, utc_text(first), utc_text(end)))
    table: pa.Table = cur.fetch_arrow_table()
    return table


def _seen_version(tables: dict[str, pa.Table]) -> int | None:
    """The series version the transformer read (None: a batch from before it recorded one)."""
    series = tables.get("series")
    return int(series["seen_version"][0].as_py()) if series is not None else None


def _span(bars: pa.Table, observed: pa.Table) -> tuple[datetime, datetime]:
    """The UTC range of stored bars a load reads: the observed bars and the batch's days."""
    times = [t["bar_time"] for t in (bars, observed) if t.num_rows]
    first = min(pc.min(t).as_py() for t in times)
    last = max(pc.max(t).as_py() for t in times)
    touched = touched_days(bars) if bars.num_rows else None
    if touched is not None:
        _, _, day_first, day_last, _, _ = touched.parameters()
        first, last = min(first, day_first), max(last, day_last)
    return first, last + timedelta(microseconds=1)


def stored_now(stored: pa.Table, bars: pa.Table, written: pa.Array) -> pa.Table:
    """``stored`` (read before the upsert) as it is after it: the written bars replace theirs."""
    stored = stored.select(list(STORED_BAR_COLUMNS))
    times = written.cast(stored.schema.field("bar_time").type)
    kept = stored.filter(pc.invert(pc.is_in(stored["bar_time"], value_set=times)))
    batch_times = bars["bar_time"].cast(times.type)
    fresh = bars.filter(pc.is_in(batch_times, value_set=times))
    fresh = fresh.select(list(STORED_BAR_COLUMNS)).cast(stored.schema)
    return pa.concat_tables([kept, fresh])


def _stored_within_not_in(stored: pa.Table, bars: pa.Table) -> bool:
    """Whether a stored bar inside the batch's first..last span is not one of the batch's."""
    times = stored["bar_time"]
    first, last = pc.min(bars["bar_time"]), pc.max(bars["bar_time"])
    span = times.filter(
        pc.and_(
            pc.greater_equal(times, first.cast(times.type)),
            pc.less_equal(times, last.cast(times.type)),
        )
    )
    batch_times = bars["bar_time"].cast(times.type)
    return bool(pc.any(pc.invert(pc.is_in(span, value_set=batch_times))).as_py())


def keep_series_exact(
    cur: Any,
    series: tuple[str, str],
    bars: pa.Table,
    stale: bool,
    changed: int,
) -> int:
    """After the bars' upsert, under its lock: recompute what went stale; bars rewritten.

    Stale (``stale``, the caller's finding): another load changed the series after the
    transformer read it (the version moved), or this batch changed bars that stored bars
    continue (newer ones after it, or stored ones within its span that it does not hold).
    """
    symbol, interval = series
    first, last = pc.min(bars["bar_time"]).as_py(), pc.max(bars["bar_time"]).as_py()
    recomputed = recompute(cur, symbol, interval, first, last) if stale else 0
    if changed or recomputed:
        bump_version(cur, symbol, interval)
    return recomputed


def _held_back(
    cur: Any, series: tuple[str, str], payload_id: str, stored: pa.Table, observed: pa.Table
) -> tuple[str, int] | None:
    """Why the batch must not be merged and the restatement its bars reveal (recorded), or None."""
    finding = restatement.detect(stored, observed, payload_id)
    if finding is None:
        return None
    symbol, interval = series
    restatement_id, opened = restatement.record(cur, symbol, interval, finding, payload_id)
    log.warning(
        "restatement %s %s %s: %s; batch %s held back until the series is restated (%s)",
        "detected for" if opened else "still open for",
        symbol,
        interval,
        finding.describe(),
        payload_id,
        f"marketpipe.restatements #{restatement_id}",
    )
    return f"restatement #{restatement_id}: {finding.describe()}; bars held back", restatement_id


def write_batch(
    cur: Any,
    payload_id: str,
    tables: dict[str, pa.Table],
    started_at: datetime,
    series: tuple[str, str],
) -> tuple[int, int | None]:
    """Bars, the daily bars rebuilt from them, quarantine, watermark and run log.

    ``series``: the batch's :func:`series_of`. Returns the bars changed and the restatement the
    batch revealed, if any: such a batch merges no bar (services/loader/restatement.py).
    """
    symbol, interval = series
    bars, quarantine = tables["bars"], tables["quarantine"]
    # A batch from before the observed table existed: nothing to compare.
    observed = tables.get("observed", bars.slice(0, 0))
    present = bars.num_rows > 0 or observed.num_rows > 0
    # With the lock every writer of the series takes (upsert.lock_sql): what is read next stays
    # true until the commit.
    prepare_session(cur, lock_series=symbol if present else None)
    last = pc.max(bars["bar_time"]).as_py() if bars.num_rows else None
    cur.execute(_FACTS_SQL, (payload_id, symbol, interval, utc_text(last)))
    landed, version, continued = cur.fetchone()
    if not landed:
        raise PayloadNotLandedError(f"batch {payload_id}: its raw payload was never landed")
    held, changed = None, 0
    if present:
        stored = stored_bars(cur, series, *_span(bars, observed))
        held = _held_back(cur, series, payload_id, stored, observed) if observed.num_rows else None
        if held is not None:
            bars = bars.slice(0, 0)
    if bars.num_rows:
        written = upsert_known(cur, "bars", bars, stored, OLAP_COLUMNS, OLAP_KEY, lineage=LINEAGE)
        changed = len(written)
        seen = _seen_version(tables)
        stale = seen is None or int(version) != seen
        if not stale and changed:
            stale = bool(continued) or _stored_within_not_in(stored, bars)
        changed += keep_series_exact(cur, series, bars, stale, changed)
        # From the bars now stored, never from the transformer's frames (services/loader/daily.py).
        rebuild_daily(cur, bars, stored_now(stored, bars, written))
    upsert(
        cur,
        "quarantine",
        quarantine,
        QUARANTINE_COLUMNS,
        QUARANTINE_KEY,
        lineage=("quarantined_at",),
        touch=None,
    )
    advance_watermarks(cur, series, bars)
    reasons = sorted(pc.unique(quarantine["reason"]).to_pylist()) if quarantine.num_rows else []
    status = run_status(bars.num_rows, quarantine.num_rows)
    if held is not None:
        # 'partial': nothing of it was merged; the message names the restatement.
        status, reasons = "partial", [held[0], *reasons]
    cur.execute(
        _LOG_RUN,
        (
            payload_id,
            status,
            tables["bars"].num_rows + quarantine.num_rows,
            changed,
            quarantine.num_rows,
            "; ".join(reasons)[:2000],
            utc_text(started_at),
        ),
    )
    return changed, None if held is None else held[1]


def series_of(tables: dict[str, pa.Table]) -> tuple[str, str]:
    """(symbol, interval) of a batch, from its rows ("?" for a batch with none).

    Raises :class:`MixedBatchError` for rows of more than one series (marketpipe/contract.py).
    """
    found: set[tuple[str, str]] = set()
    for table in tables.values():
        if table.num_rows and {"symbol", "interval"} <= set(table.column_names):
            symbols = pc.unique(table["symbol"]).to_pylist()
            intervals = pc.unique(table["interval"]).to_pylist()
            if len(symbols) * len(intervals) > 1:  # rare: only then the pairs themselves
                pairs = table.group_by(["symbol", "interval"]).aggregate([])
                symbols, intervals = pairs["symbol"].to_pylist(), pairs["interval"].to_pylist()
            found.update(zip(symbols, intervals, strict=True))
    if len(found) > 1:
        shown = ", ".join(f"{s} {i}" for s, i in sorted(found, key=str))
        raise MixedBatchError(f"a batch is one series; this one holds {len(found)}: {shown}")
    return next(iter(found), ("?", "?"))


def load(settings: Settings, batch_id: str) -> dict[str, Any]:
    """Load one batch in one transaction; the job's JSON result."""
    tables = broker.get_batch_tables(broker.kept_redis(settings), batch_id)
    started_at = datetime.now(UTC)
    symbol, interval = series = series_of(tables)
    with adbc_connect(settings.role_url("loader")) as conn, conn.cursor() as cur:
        changed, revealed = write_batch(cur, batch_id, tables, started_at, series)
        conn.commit()
    bars, quarantined = tables["bars"].num_rows, tables["quarantine"].num_rows
    # The one line per batch: which series, and what it changed in the table.
    log.info(
        "batch %s %s %s: %d bars, %d changed, %d quarantined",
        batch_id[:12],
        symbol,
        interval,
        bars,
        changed,
        quarantined,
    )
    if revealed is None:
        return {"bars": bars, "bars_changed": changed}
    # After the commit, so the fetcher that sees the flag finds the row.
    broker.kept_redis(settings).set(RESTATEMENT_PENDING_KEY, revealed)
    return {"bars": bars, "bars_changed": changed, "restatement": revealed}


def load_batch(batch_id: str) -> dict[str, Any]:
    """RQ entry point (``marketpipe.queues.LOAD_JOB``)."""
    return load(_settings(), batch_id)


def recompute_series(
    symbol: str, interval: str, changed_from: str, changed_through: str | None = None
) -> dict[str, Any]:
    """RQ entry point: the stored bars of a series changed from ``changed_from`` (ISO, UTC) on
    (through ``changed_through``, else to its end); recompute the derived columns they move.

    For whoever changes stored bars outside a load (e.g. a restatement check): one transaction
    under the series' lock, the version raised when a bar changed.
    """
    start = datetime.fromisoformat(changed_from)
    through = datetime.fromisoformat(changed_through) if changed_through else None
    return recompute_stored(_settings(), symbol, interval, start, through)


def recompute_stored(
    settings: Settings,
    symbol: str,
    interval: str,
    changed_from: datetime,
    changed_through: datetime | None = None,
) -> dict[str, Any]:
    """:func:`recompute_series` with explicit settings."""
    with adbc_connect(settings.role_url("loader")) as conn, conn.cursor() as cur:
        prepare_session(cur, lock_series=symbol)
        changed = recompute(cur, symbol, interval, changed_from, changed_through)
        if changed:
            bump_version(cur, symbol, interval)
        conn.commit()
    log.info("recomputed %s %s from %s: %d bars changed", symbol, interval, changed_from, changed)
    return {"bars_changed": changed}


def load_restated(settings: Settings, restatement_id: int) -> dict[str, Any]:
    """Swap a restatement's re-fetched series in, in one transaction; the job's JSON result."""
    batch = broker.get_batch_tables(
        broker.redis_from(settings), restatement_batch_id(restatement_id)
    )
    with adbc_connect(settings.role_url("loader")) as conn, conn.cursor() as cur:
        prepare_session(cur)
        result = restatement.swap_series(cur, restatement_id, batch["bars"], rebuild_daily)
        if result is not None:
            # Transforms that read the old series are stale now (services/loader/recompute.py).
            bump_version(cur, result.symbol, result.interval)
            if batch["quarantine"].num_rows:
                upsert(
                    cur,
                    "quarantine",
                    batch["quarantine"],
                    QUARANTINE_COLUMNS,
                    QUARANTINE_KEY,
                    lineage=("quarantined_at",),
                    touch=None,
                )
        conn.commit()
    if result is None:
        log.info("restatement %d is not open: nothing to swap", restatement_id)
        return {"restated": False}
    log.warning(
        "restatement %d: %s %s restated, %d bars (%d written), %d no longer served",
        restatement_id,
        result.symbol,
        result.interval,
        result.bars,
        result.bars_changed,
        result.bars_removed,
    )
    return {
        "restated": True,
        "bars": result.bars,
        "bars_changed": result.bars_changed,
        "bars_removed": result.bars_removed,
    }


def load_restatement(restatement_id: int) -> dict[str, Any]:
    """RQ entry point (``marketpipe.queues.RESTATE_LOAD_JOB``)."""
    return load_restated(_settings(), restatement_id)
