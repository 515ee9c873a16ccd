"""Idempotent bulk upsert of Arrow tables: binary COPY into a stage, one INSERT ... ON CONFLICT.

Staging: ADBC's PostgreSQL driver (``adbc_ingest``) streams the Arrow buffers to the server as
``COPY ... (FORMAT binary)`` from C++: no pandas round trip, no text encoding or parsing. The
stage is a temporary table (no WAL) without indexes or constraints, living as long as the
loader's session, in local buffers sized so it stays in memory; the target's constraints are
checked once, by the INSERT.

What counts as changed: a ``double precision`` value only when it differs from the stored one
by more than ``RELATIVE_TOLERANCE`` (|old - new| > 1e-12 * max(|old|, |new|)) or exactly one of
them is NULL; any other column when ``IS DISTINCT FROM``. A bar re-sent from a request of another
depth has sums over another stretch of history, off by ~1e-14 relative: such a row is left
exactly as it is (same ``loaded_at``, no new row version, not counted). Key and lineage columns
(which payload, when transformed) are not compared; they are rewritten with a changed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa

# A float is "changed" only beyond this relative difference (see the module docstring).
RELATIVE_TOLERANCE: Final = 1e-12
# Local buffers for temp tables: a 200k-row stage (~100 MB) stays in memory instead of spilling
# to temp files. Only settable before the session's first temp table is touched.
TEMP_BUFFERS: Final = "256MB"

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
    cur.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")


def to_stage(table: pa.Table, columns: Sequence[tuple[str, str]]) -> pa.Table:
    """The contract's columns in table order, each in the Arrow type its SQL type stages from."""
    target = pa.schema([(name, _ARROW_TYPES[sql_type]) for name, sql_type in columns])
    selected = table.select([name for name, _ in columns])
    return selected if selected.schema.equals(target) else selected.cast(target)


def stage(cur: Any, name: str, table: pa.Table) -> str:
    """Binary-COPY ``table`` into a new temporary table ``stage_<name>``; its qualified name."""
    cur.adbc_ingest(f"stage_{name}", table, mode="create", temporary=True)
    return f"pg_temp.stage_{name}"


def _beyond_tolerance(column: str) -> str:
    old, new = f't."{column}"', f'EXCLUDED."{column}"'
    # Both present: the relative test; otherwise (abs() is NULL) changed iff exactly one is NULL.
    return (
        f"coalesce(abs({old} - {new}) > {RELATIVE_TOLERANCE!r}::float8"
        f" * greatest(abs({old}), abs({new})), ({old} IS NULL) <> ({new} IS NULL))"
    )


def changed_condition(columns: Sequence[tuple[str, str]], key: Sequence[str]) -> str:
    """SQL true when the EXCLUDED row differs from the stored row ``t`` (see the docstring)."""
    compared = [(c, t) for c, t in columns if c not in key]
    floats = [c for c, t in compared if t == "double precision"]
    exact = [c for c, t in compared if t != "double precision"]

    def row(prefix: str, names: Sequence[str]) -> str:
        return "(" + ", ".join(f'{prefix}"{c}"' for c in names) + ")"

    all_names = [c for c, _ in compared]
    # The exact row comparison first: it settles an identical replay (the common case) at once,
    # and only rows that differ at all pay for the per-column tolerance.
    differs = [f"{row('t.', exact)} IS DISTINCT FROM {row('EXCLUDED.', exact)}"] if exact else []
    differs += [_beyond_tolerance(c) for c in floats]
    return (
        f"{row('t.', all_names)} IS DISTINCT FROM {row('EXCLUDED.', all_names)}"
        f" AND ({' OR '.join(differs)})"
    )


def merge_sql(
    source: str,
    target: str,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    lineage: Sequence[str],
    *,
    touch: str | None = "loaded_at",
) -> str:
    """``INSERT ... ON CONFLICT DO UPDATE ... WHERE <changed>``: writes only new or changed rows.

    ``source`` is the staged relation and ``target`` the table, both qualified; ``touch`` names
    a timestamp column set to now() when a stored row is rewritten.
    """
    names = [c for c, _ in columns]
    cols = ", ".join(f'"{c}"' for c in names)
    # Casts to the column's own type are no-ops; jsonb's is the one that does work.
    select = ", ".join(f'"{c}"::{t}' for c, t in columns)
    assignments = [f'"{c}" = EXCLUDED."{c}"' for c in names if c not in key]
    if touch:
        assignments.append(f'"{touch}" = now()')
    compared = [(c, t) for c, t in columns if c not in lineage]
    # Identifiers and types come from marketpipe.contract, never from data.
    return (
        f"INSERT INTO {target} AS t ({cols}) SELECT {select} FROM {source}"  # noqa: S608
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(assignments)}"
        f" WHERE {changed_condition(compared, key)}"
    )


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

    ``rows`` must not hold a key twice (ON CONFLICT cannot touch a row twice in one statement).
    """
    if rows.num_rows == 0:
        return 0
    source = stage(cur, table, to_stage(rows, columns))
    cur.execute(merge_sql(source, f"{schema}.{table}", columns, key, lineage, touch=touch))
    # The command tag's count: rows inserted plus rows updated (skipped conflicts are not in it).
    return int(cur.rowcount)
