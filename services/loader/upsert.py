"""Idempotent bulk upsert of Arrow tables: binary COPY, only new and changed rows written.

Staging: ADBC's PostgreSQL driver (``adbc_ingest``) streams the Arrow buffers to the server as
``COPY ... (FORMAT binary)`` from C++: no pandas round trip, no text encoding or parsing. The
stage is a temporary table (no WAL) without indexes or constraints, living as long as the
loader's session, in local buffers sized so it stays in memory; the target's constraints are
checked once, by the MERGE.

Why MERGE and not ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <changed>`` (measured, 200k rows
into 500k, half new, half real updates, EXPLAIN ANALYZE with BUFFERS and WAL): ON CONFLICT
inserts every new row speculatively (an extra WAL record to confirm it) and locks every row it
finds before the WHERE is even evaluated (a lock record, a dirtied page, also for an unchanged
row). MERGE joins once and writes only what changes: WAL 905k -> 705k records (208 -> 184 MB),
shared-buffer hits 2.52M -> 1.73M; a replay of the same 200k rows 205k -> 4.8k WAL records
(83 -> 0.5 MB) and no row locked. Tried and dropped, not faster here: UPDATE ... FROM then
INSERT ... WHERE NOT EXISTS ... ON CONFLICT (three index probes per row; 3.6-7.5 s against
3.2-5.3 s), the stage sorted by the key (rows of a series already come in key order), ANALYZE
or an index on the stage (the plan does not change, +0.6-1 s), factoring the per-series
attributes out of the stage (detecting them costs more than the COPY it saves). A connection
kept across jobs does not apply: every job opens its own (jobs run in the worker process by
default and still never share one; with a work horse forked per job they cannot).

A load job reads its series' stored bars over the batch's span anyway (under its lock, for the
restatement check and the daily bars), so it uses :func:`upsert_known`: every bar is compared
with its stored one in Arrow (:func:`changed_rows`, the same rule as the SQL one, checked against
it by a property test), the changed stored bars are deleted and they and the new ones binary-
COPYed straight into the table; nothing is staged or joined. bench_load, 40 jobs of 5,000 bars,
half new, half changed, 2026-12-04: the bars' part 4.53 s against the baselines' ADBC ingest and
ON CONFLICT upsert 6.20 s (before, with a stage and ``UPDATE ... FROM``: 5.93 s against 5.85 s).
The daily bars go the same way (the symbol's stored days are read whole); the MERGE stays for
the quarantine, the restatement's swap and as the plain reference of the rule.

MERGE in PostgreSQL 15 does not resolve a race with a concurrent insert of the same key (it
fails on the primary key where ON CONFLICT would update). So every upsert first takes a
transaction-level advisory lock per value of the key's first column (the symbol; the payload of
a quarantined row), all in one sorted statement: loaders of overlapping series serialize, the
later one sees the earlier one's rows, and two loaders cannot wait on each other in a cycle.

What counts as changed: a ``double precision`` value only when it differs from the stored one
by more than ``RELATIVE_TOLERANCE`` of its scale, or exactly one of them is NULL; any other
column when ``IS DISTINCT FROM``. The scale is max(|old|, |new|), and for a column in the price
unit (``contract.PRICE_UNIT_COLUMNS``) also the stored row's |close|: such a value's rounding
error follows the price it is computed from, so MACD near zero (two EMAs of ~2,500 apart by a
few units in the last place) is not "changed" when only the order of loads moved its rounding
(seen in the crash chaos test: 1.8e-12 absolute, 1.05e-12 of MACD, 7e-16 of the close). A bar
re-sent from a request of another depth has sums over another stretch of history, off by ~1e-14
relative: such a row is left exactly as it is (same ``loaded_at``, no new row version, not
counted). Key and lineage columns (which payload, when transformed) are not compared; they are
rewritten with a changed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import PRICE_SCALE_COLUMN, PRICE_UNIT_COLUMNS

# A float is "changed" only beyond this relative difference (see the module docstring).
RELATIVE_TOLERANCE: Final = 1e-12
# Local buffers for temp tables: a 200k-row stage (~100 MB) stays in memory instead of spilling
# to temp files. Only settable before the session's first temp table is touched.
TEMP_BUFFERS: Final = "256MB"

# The MERGE's hash join of a 200k-row stage against a 500k-row table fits without spilling to
# temp files (4MB, the default, spills: 2.0 s against 1.3 s for the join). Per session, loader only.
WORK_MEM: Final = "64MB"

# Arrow type each SQL type of the contract is staged from; jsonb travels as text and is cast.
_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "text": pa.large_string(),
    "jsonb": pa.large_string(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}


# The lock every writer of a series' bars takes, on its symbol ($1): the same key as
# :func:`lock_sql`'s on marketpipe.bars, so the MERGE of a swap and a load's writes serialize.
SERIES_LOCK: Final = "pg_advisory_xact_lock(hashtextextended('marketpipe.bars|' || $1, 0))"
LOCK_SQL: Final = f"SELECT {SERIES_LOCK}"


def prepare_session(cur: Any, *, lock_series: str | None = None) -> None:
    """Session settings for bulk staging; call first thing on a fresh connection.

    ``lock_series``: also take that symbol's :data:`SERIES_LOCK`, in the same round trip.
    """
    settings = (
        f"SELECT set_config('temp_buffers', '{TEMP_BUFFERS}', false),"
        f" set_config('work_mem', '{WORK_MEM}', false)"
    )
    if lock_series is None:
        cur.execute(settings)
    else:
        cur.execute(f"{settings}, {SERIES_LOCK}", (lock_series,))
    cur.fetchall()


def to_stage(table: pa.Table, columns: Sequence[tuple[str, str]]) -> pa.Table:
    """The contract's columns in table order, each in the Arrow type its SQL type stages from."""
    target = pa.schema([(name, _ARROW_TYPES[sql_type]) for name, sql_type in columns])
    selected = table.select([name for name, _ in columns])
    return selected if selected.schema.equals(target) else selected.cast(target)


def stage(cur: Any, name: str, table: pa.Table) -> str:
    """Binary-COPY ``table`` into a new temporary table ``stage_<name>``; its qualified name."""
    cur.adbc_ingest(f"stage_{name}", table, mode="create", temporary=True)
    return f"pg_temp.stage_{name}"


def _beyond_tolerance(column: str, new: str, price_scaled: bool) -> str:
    old, new = f't."{column}"', f'{new}."{column}"'
    scale = [f"abs({old})", f"abs({new})"]
    if price_scaled:
        scale.append(f'abs(t."{PRICE_SCALE_COLUMN}")')  # greatest() skips a NULL
    # Both present: the relative test; otherwise (abs() is NULL) changed iff exactly one is NULL.
    return (
        f"coalesce(abs({old} - {new}) > {RELATIVE_TOLERANCE!r}::float8"
        f" * greatest({', '.join(scale)}), ({old} IS NULL) <> ({new} IS NULL))"
    )


def changed_condition(
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    new: str = "EXCLUDED",
    *,
    priced: bool = False,
) -> str:
    """SQL true when the row ``new`` differs from the stored row ``t`` (see the docstring).

    ``priced``: ``t`` has the price-scale column, so price-unit columns are scaled by it too.
    """
    compared = [(c, t) for c, t in columns if c not in key]
    floats = [c for c, t in compared if t == "double precision"]
    exact = [c for c, t in compared if t != "double precision"]

    def row(prefix: str, names: Sequence[str]) -> str:
        return "(" + ", ".join(f'{prefix}."{c}"' for c in names) + ")"

    all_names = [c for c, _ in compared]
    # The exact row comparison first: it settles an identical replay (the common case) at once,
    # and only rows that differ at all pay for the per-column tolerance.
    differs = [f"{row('t', exact)} IS DISTINCT FROM {row(new, exact)}"] if exact else []
    differs += [_beyond_tolerance(c, new, priced and c in PRICE_UNIT_COLUMNS) for c in floats]
    return (
        f"{row('t', all_names)} IS DISTINCT FROM {row(new, all_names)} AND ({' OR '.join(differs)})"
    )


def lock_sql(source: str, target: str, by: str) -> str:
    """Takes this transaction's advisory lock on each ``by`` value in ``source``, in order."""
    # One sorted statement: two loaders wanting overlapping sets never wait on each other in a
    # cycle. The target's name keeps the locks of different tables apart.
    return (
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT"  # noqa: S608
        f" hashtextextended('{target}|' || \"{by}\", 0) AS k FROM {source} ORDER BY k) AS keys"
    )


def key_bounds(source: str, key: Sequence[str]) -> str:
    """SQL bounding the target's key ``t`` to each key column's range in ``source``."""
    # Scalar subqueries, computed once before the join (InitPlans); the planner then reads the
    # bounded range of the target's primary key.
    return " AND ".join(
        f't."{c}" BETWEEN (SELECT min("{c}") FROM {source})'  # noqa: S608
        f' AND (SELECT max("{c}") FROM {source})'
        for c in key
    )


def merge_sql(
    source: str,
    target: str,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    lineage: Sequence[str],
    *,
    touch: str | None = "loaded_at",
    bounded: bool = True,
) -> str:
    """``MERGE ... WHEN MATCHED AND <changed> ... WHEN NOT MATCHED``: writes new or changed rows.

    ``source`` is the staged relation and ``target`` the table, both qualified; ``touch`` names
    a timestamp column set to now() when a stored row is rewritten. Safe against a concurrent
    writer of the same keys only under :func:`lock_sql`'s locks (see the module docstring).
    ``bounded`` (:func:`key_bounds`): the join also bounds the target's key to the staged rows'
    range. Every staged row lies within it, so no stored row it matches is left out, and the
    planner can join that range of the primary key instead of probing it once per staged row
    (EXPLAIN ANALYZE, one series of 5,000 bars, half new, into 500k: 123 ms -> 99 ms; the
    baselines' ON CONFLICT 129 ms).
    """
    names = [c for c, _ in columns]
    # Casts to the column's own type are no-ops; jsonb's is the one that does work.
    select = ", ".join(f'"{c}"::{t} AS "{c}"' for c, t in columns)
    on = " AND ".join(f't."{c}" = s."{c}"' for c in key)
    if bounded:
        on += " AND " + key_bounds(source, key)
    assignments = [f'"{c}" = s."{c}"' for c, _ in columns if c not in key]
    if touch:
        assignments.append(f'"{touch}" = now()')
    compared = [(c, t) for c, t in columns if c not in lineage]
    priced = any(c == PRICE_SCALE_COLUMN for c, _ in columns)
    changed = changed_condition(compared, key, "s", priced=priced)
    # Identifiers and types come from marketpipe.contract, never from data.
    return (
        f"MERGE INTO {target} AS t USING (SELECT {select} FROM {source}) AS s ON {on}"  # noqa: S608
        f" WHEN MATCHED AND {changed}"
        f" THEN UPDATE SET {', '.join(assignments)}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in names)})"
        f" VALUES ({', '.join(f's.{chr(34)}{c}{chr(34)}' for c in names)})"
    )


def _distinct(
    old: pa.ChunkedArray, new: pa.ChunkedArray, differs: pa.ChunkedArray
) -> pa.ChunkedArray:
    """``differs`` where both values are present; else whether exactly one is NULL."""
    both = pc.and_(pc.is_valid(old), pc.is_valid(new))
    return pc.if_else(both, differs, pc.not_equal(pc.is_valid(old), pc.is_valid(new)))


def changed_rows(
    old: pa.Table,
    new: pa.Table,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
) -> pa.ChunkedArray:
    """Per aligned row, whether ``new`` differs from the stored ``old``: the rule of
    :func:`changed_condition` (``priced`` when the columns hold the price scale), in Arrow.

    ``old`` and ``new`` have the same rows in the same order and ``columns`` in the same types.
    """
    compared = [(c, t) for c, t in columns if c not in key]
    priced = any(c == PRICE_SCALE_COLUMN for c, _ in compared)
    changed = pa.chunked_array([np.zeros(new.num_rows, dtype=bool)])
    for name, sql_type in compared:
        o, n = old[name], new[name]
        if sql_type == "double precision":
            # As _beyond_tolerance: the scale skips a NULL, the stored close for a price unit.
            scale = [pc.abs(o), pc.abs(n)]
            if priced and name in PRICE_UNIT_COLUMNS:
                scale.append(pc.abs(old[PRICE_SCALE_COLUMN]))
            bound = pc.multiply(pc.max_element_wise(*scale, skip_nulls=True), RELATIVE_TOLERANCE)
            differs = pc.greater(pc.abs(pc.subtract(o, n)), bound)
        else:
            differs = pc.not_equal(o, n)
        changed = pc.or_(changed, _distinct(o, n, differs))
    return changed


def _delete_stored(
    cur: Any, target: str, key: Sequence[tuple[str, str]], stored: pa.Table, rows: pa.Table
) -> None:
    """Delete the stored rows of ``rows``' keys: one series, one statement, by runs.

    A run is a stretch of consecutive stored rows that are all deleted; it is deleted as the
    range between its first and last key, which holds no other stored row (``stored`` holds every
    stored row between its first and last key). The plain form, ``= ANY(<every key>)``, probed
    the primary key once per row: 12 ms for 2,500 bars against 2 ms for their one range
    (bench_load's shape, 2026-12-04); a steady tick's re-sent open bar is one run of one.
    """
    *prefix, (last, last_type) = key
    times = stored[last].combine_chunks()
    times = times.take(pc.sort_indices(times))
    deleted = np.asarray(pc.is_in(times, value_set=rows[last].cast(times.type)), dtype=np.int8)
    edges = np.diff(np.concatenate(([0], deleted, [0])))
    first, final = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1

    def one_list(values: pa.Array) -> pa.ListArray:
        # As text, cast by the server (see marketpipe.db.utc_text: no time zone round trips).
        text = values.cast(pa.string())
        return pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text)

    # One row of parameters: the series' leading key values, the runs' first and last keys.
    parameters = pa.record_batch(
        [
            *(rows[c].slice(0, 1).combine_chunks() for c, _ in prefix),
            one_list(times.take(pa.array(first))),
            one_list(times.take(pa.array(final))),
        ],
        names=[*(c for c, _ in prefix), "run_first", "run_last"],
    )
    matches = " AND ".join(f't."{c}" = ${i}' for i, (c, _) in enumerate(prefix, start=1))
    bounds = f"${len(prefix) + 1}::{last_type}[], ${len(prefix) + 2}::{last_type}[]"
    runs = f"unnest({bounds}) AS r(run_first, run_last)"
    cur.execute(
        f"DELETE FROM {target} AS t USING {runs} WHERE {matches}"  # noqa: S608
        f' AND t."{last}" BETWEEN r.run_first AND r.run_last',
        parameters,
    )


def upsert_known(
    cur: Any,
    table: str,
    rows: pa.Table,
    stored: pa.Table,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    *,
    lineage: Sequence[str] = (),
    schema: str = "marketpipe",
) -> pa.Array:
    """Upsert one series' ``rows`` against its ``stored`` rows; the key values written.

    ``stored``: every stored row of the series over a range of its key that holds the keys of
    ``rows``, with ``columns``, read under the series' lock the caller holds, so nothing can
    change them meanwhile. Each row is compared with its stored one here (:func:`changed_rows`);
    the changed stored rows are deleted and they and the new ones binary-COPYed straight into
    the table: no stage, no join.
    A row equal within the tolerance is left exactly as it is (its ``loaded_at``, its version).
    Every row of ``rows`` shares the key's leading columns (one series).

    Why not the stage and ``UPDATE ... FROM`` it replaced (bench_load's micro-bench, one series
    of 5,000 bars, half stored and changed, into 125k, 2026-12-04): stage + UPDATE 62 ms, delete
    + COPY of the same rows 32 ms; comparing here needs the stored rows' every column, which the
    span read now returns (+11 ms). :func:`upsert` (stage, MERGE) stays the plain reference.
    """
    *leading, last = key
    for name in leading:
        # The runs delete and the match by the last key column hold for one series only.
        if pc.count_distinct(rows[name]).as_py() > 1:
            raise ValueError(f"upsert_known is for one series; {table} rows hold several {name}")
    staged = to_stage(rows, columns)
    names = [c for c, _ in columns]
    times = staged[last]
    stored_times = stored[last].cast(times.type)
    position = pc.index_in(times, value_set=stored_times)
    known = pc.is_valid(position)
    write = pc.invert(known)
    replaced = staged.slice(0, 0)
    if stored.num_rows:
        old = stored.select(names).cast(staged.schema).take(pc.fill_null(position, 0))
        differs = changed_rows(old, staged, [(c, t) for c, t in columns if c not in lineage], key)
        replace = pc.and_(known, differs)
        write = pc.or_(write, replace)
        replaced = staged.filter(replace)
    written = staged.filter(write)
    if replaced.num_rows:
        types = dict(columns)
        _delete_stored(cur, f'{schema}."{table}"', [(c, types[c]) for c in key], stored, replaced)
    if written.num_rows:
        cur.adbc_ingest(table, written, mode="append", db_schema_name=schema)
    return written[last].combine_chunks()


def upsert(
    cur: Any,
    table: str,
    rows: pa.Table,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    *,
    lineage: Sequence[str] = (),
    touch: str | None = "loaded_at",
    schema: str = "marketpipe",
) -> int:
    """Upsert ``rows`` into ``schema.table``; how many rows were inserted or changed.

    ``rows`` must not hold a key twice (MERGE refuses to touch a row twice in one statement).
    Holds the key's first column's advisory locks until the transaction ends.
    """
    if rows.num_rows == 0:
        return 0
    source = stage(cur, table, to_stage(rows, columns))
    target = f"{schema}.{table}"
    cur.execute(lock_sql(source, target, key[0]))
    cur.fetchall()
    cur.execute(merge_sql(source, target, columns, key, lineage, touch=touch))
    # The command tag's count: rows inserted plus rows updated (skipped matches are not in it).
    return int(cur.rowcount)
