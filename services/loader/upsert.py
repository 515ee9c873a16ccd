"""Idempotent bulk upsert: COPY into a temporary staging table, then one INSERT ... ON CONFLICT.

Rows whose values did not change are left untouched (``IS DISTINCT FROM`` guard), so replaying a
batch changes nothing, not even lineage columns.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

# Never produced by the encoder for a real value, so it can stand for NULL in COPY's CSV.
NULL_MARKER = r"\N"


def encode_csv(frame: pd.DataFrame, columns: Sequence[str]) -> io.StringIO:
    buffer = io.StringIO()
    frame.to_csv(buffer, columns=list(columns), header=False, index=False, na_rep=NULL_MARKER)
    buffer.seek(0)
    return buffer


def upsert_frame(
    cur: Cursor,
    table: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    key: Sequence[str],
    *,
    compare_exclude: Sequence[str] = (),
    schema: str = "marketpipe",
) -> int:
    """Upsert ``frame`` into ``schema.table``; return how many rows were inserted or changed."""
    if frame.empty:
        return 0
    stage = sql.Identifier(f"stage_{table}")
    target = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DROP"
        ).format(stage=stage, target=target)
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    copy = sql.SQL("COPY {stage} ({cols}) FROM STDIN WITH (FORMAT csv, NULL {null})").format(
        stage=stage, cols=cols, null=sql.Literal(NULL_MARKER)
    )
    cur.copy_expert(copy.as_string(cur), encode_csv(frame, columns))

    updatable = [c for c in columns if c not in key]
    compared = [c for c in updatable if c not in compare_exclude]
    statement = sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM {stage}"
        " ON CONFLICT ({key}) DO UPDATE SET {assignments}"
        " WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        target=target,
        cols=cols,
        stage=stage,
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        assignments=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updatable
        ),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in compared),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in compared),
    )
    cur.execute(statement)
    return int(cur.rowcount)
