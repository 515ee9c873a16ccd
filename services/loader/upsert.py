"""Idempotent bulk upsert of Arrow tables: binary COPY into a stage, one MERGE.

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

A load job knows which of its bars are stored (it reads the series' span under its lock for the
restatement check and the daily bars anyway), so it uses :func:`upsert_known`: the new bars are
COPYed straight into the table and only the stored ones staged and updated (bench_load, 40 jobs
of 5,000 bars, half new, 2026-12-03 19:22: the bars' part 4.94 s, the baselines' ADBC ingest
and ON CONFLICT upsert 5.24 s; the whole job 5.49 s; before this change and the single span
read, 18:35: 6.70 s against ADBC's 5.32 s). The MERGE stays for the other tables and the swap.

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


def prepare_session(cur: Any) -> None:
    """Session settings for bulk staging; call first thing on a fresh connection."""
    # One round trip for both (a tick's load job makes ~15).
    cur.execute(
        f"SELECT set_config('temp_buffers', '{TEMP_BUFFERS}', false),"
        f" set_config('work_mem', '{WORK_MEM}', false)"
    )
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


def _matching(
    source: str,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    lineage: Sequence[str],
    touch: str | None,
    bounded: bool,
) -> tuple[str, str, str, str]:
    """What :func:`merge_sql` and :func:`update_sql` share: the staged select list, the join
    on the key (bounded: :func:`key_bounds`), the SET list and the change rule, against ``s``."""
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
    return select, on, ", ".join(assignments), changed


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
    select, on, assignments, changed = _matching(source, columns, key, lineage, touch, bounded)
    # Identifiers and types come from marketpipe.contract, never from data.
    return (
        f"MERGE INTO {target} AS t USING (SELECT {select} FROM {source}) AS s ON {on}"  # noqa: S608
        f" WHEN MATCHED AND {changed}"
        f" THEN UPDATE SET {assignments}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in names)})"
        f" VALUES ({', '.join(f's.{chr(34)}{c}{chr(34)}' for c in names)})"
    )


def update_sql(
    source: str,
    target: str,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    lineage: Sequence[str],
    *,
    touch: str | None = "loaded_at",
) -> str:
    """``UPDATE ... FROM source ... WHERE <changed> RETURNING`` the key's last column.

    :func:`merge_sql` for rows known to be stored, with the rows it rewrote returned (MERGE has
    no RETURNING before PostgreSQL 17); the same key bounds and change rule.
    """
    select, on, assignments, changed = _matching(source, columns, key, lineage, touch, True)
    return (
        f"UPDATE {target} AS t SET {assignments}"  # noqa: S608
        f" FROM (SELECT {select} FROM {source}) AS s WHERE {on}"
        f' AND {changed} RETURNING t."{key[-1]}"'
    )


def upsert_known(
    cur: Any,
    table: str,
    rows: pa.Table,
    stored: pa.Array,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    *,
    lineage: Sequence[str] = (),
    schema: str = "marketpipe",
) -> pa.Array:
    """Upsert one series' ``rows`` whose stored keys are known; the key values written.

    ``stored``: the values of the key's last column (the bar time) already in the table, read
    under the series' lock the caller holds, so nothing can add one meanwhile. The new rows are
    binary-COPYed straight into the table (no stage, no join); only the stored ones are staged
    and updated where they changed. Once per session (the stage stays until it ends).
    """
    last = key[-1]
    staged = to_stage(rows, columns)
    times = staged[last]
    known = pc.is_in(times, value_set=stored.cast(times.type))
    fresh = staged.filter(pc.invert(known))
    if fresh.num_rows:
        cur.adbc_ingest(table, fresh, mode="append", db_schema_name=schema)
    written = [fresh[last].combine_chunks()]
    again = staged.filter(known)
    if again.num_rows:
        source = stage(cur, table, again)
        cur.execute(update_sql(source, f"{schema}.{table}", columns, key, lineage))
        written.append(cur.fetch_arrow_table()[last].combine_chunks().cast(times.type))
    return pa.concat_arrays(written)


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
