"""Idempotent bulk upsert: COPY into a temporary staging table, then one INSERT ... ON CONFLICT.

Rows whose values did not change are left untouched (``IS DISTINCT FROM`` guard), so replaying a
batch changes nothing, not even lineage columns.

Encoding is half the cost of a bulk load, so it is engineered: Arrow's C++ CSV writer encodes
the rows in chunks on a background thread (it releases the GIL) while psycopg2 streams the
previous chunk to the server, so client encoding and server parsing overlap. The staging table is
temporary (no WAL, no indexes) and lives only until the transaction ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

# Rows per encoded chunk: big enough to amortise per-call overhead, small enough that the server
# starts parsing early and the queue below holds a bounded amount of memory.
CHUNK_ROWS: Final = 20_000
# Encoded chunks waiting for the socket; the encoder blocks beyond this (bounded memory).
QUEUE_DEPTH: Final = 4
# psycopg2 asks the file for this many bytes per read; our reader returns whole chunks anyway.
COPY_READ_SIZE: Final = 1 << 20
# Local buffers for temp tables; only settable before the session's first temp table is touched.
TEMP_BUFFERS: Final = "256MB"

# Arrow quotes every string ("" stays an empty string) and writes NULL as an unquoted empty
# field, which is exactly what COPY's CSV format reads as NULL.
_WRITE_OPTIONS: Final = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
_DONE: Final = object()


def to_arrow(frame: pd.DataFrame | pa.Table, columns: Sequence[str]) -> pa.Table:
    """The columns in table order, timestamps at microseconds (Postgres' precision, fewer bytes)."""
    table = (
        frame.select(list(columns))
        if isinstance(frame, pa.Table)
        else pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    )
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            field = field.with_type(pa.timestamp("us", tz=field.type.tz))
        fields.append(field)
    target = pa.schema(fields)
    return table if target.equals(table.schema) else table.cast(target)


class StreamedCSV:
    """A file-like object for ``copy_expert`` whose bytes are encoded on a background thread."""

    def __init__(self, table: pa.Table, chunk_rows: int = CHUNK_ROWS) -> None:
        self._chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._encode, args=(table, chunk_rows), name="csv-encoder", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        # Polls the stop flag so an abandoned COPY (server error) never strands this thread.
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _encode(self, table: pa.Table, chunk_rows: int) -> None:
        try:
            for offset in range(0, table.num_rows, chunk_rows):
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(table.slice(offset, chunk_rows), sink, _WRITE_OPTIONS)
                if not self._put(sink.getvalue().to_pybytes()):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the reading thread, which re-raises it
            self._put(exc)

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            return b""
        item = self._chunks.get()
        if item is _DONE:
            self._stop.set()
            return b""
        if isinstance(item, BaseException):
            self._stop.set()
            raise item
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def copy_table(cur: Cursor, target: sql.Composable, table: pa.Table) -> None:
    """COPY an Arrow table (columns already in ``target``'s order) with overlapped encoding."""
    cols = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
    statement = sql.SQL("COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv)").format(
        target=target, cols=cols
    )
    stream = StreamedCSV(table)
    try:
        cur.copy_expert(statement.as_string(cur), stream, size=COPY_READ_SIZE)
    finally:
        stream.close()


def prepare_session(cur: Cursor) -> None:
    """Session settings for bulk staging; call first thing on a fresh connection."""
    cur.execute("SET temp_buffers = %s", (TEMP_BUFFERS,))


def _stage(
    cur: Cursor,
    table: str,
    frame: pd.DataFrame | pa.Table,
    columns: Sequence[str],
    target: sql.Composable,
) -> sql.Identifier:
    stage = sql.Identifier(f"stage_{table}")
    # Only the loaded columns, without constraints or defaults (loaded_at is NOT NULL with a
    # default): the target applies them once, at INSERT, and COPY checks nothing twice.
    cur.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(stage))
    cur.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE {stage} ON COMMIT DROP"
            " AS SELECT {cols} FROM {target} WITH NO DATA"
        ).format(stage=stage, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), target=target)
    )
    copy_table(cur, stage, to_arrow(frame, columns))
    return stage


def _merge(
    stage: sql.Identifier,
    target: sql.Composable,
    columns: Sequence[str],
    key: Sequence[str],
    compare_exclude: Sequence[str],
) -> sql.Composed:
    """INSERT ... ON CONFLICT that writes only rows that are new or whose values changed."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    updatable = [c for c in columns if c not in key]
    compared = [c for c in updatable if c not in compare_exclude]
    return sql.SQL(
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


def upsert_frame(
    cur: Cursor,
    table: str,
    frame: pd.DataFrame | pa.Table,
    columns: Sequence[str],
    key: Sequence[str],
    *,
    compare_exclude: Sequence[str] = (),
    schema: str = "marketpipe",
) -> int:
    """Upsert ``frame`` into ``schema.table``; return how many rows were inserted or changed.

    ``frame`` must not hold a key twice (ON CONFLICT cannot touch a row twice in one statement).
    """
    if frame.shape[0] == 0:
        return 0
    target = sql.Identifier(schema, table)
    stage = _stage(cur, table, frame, columns, target)
    cur.execute(_merge(stage, target, columns, key, compare_exclude))
    return int(cur.rowcount)


def upsert_rows(
    cur: Cursor,
    table: str,
    frame: pd.DataFrame | pa.Table,
    columns: Sequence[str],
    key: Sequence[str],
    *,
    count_by: str,
    compare_exclude: Sequence[str] = (),
    schema: str = "marketpipe",
) -> dict[str, int]:
    """Like :func:`upsert_frame`, with the written rows counted per ``count_by`` value.

    The counting happens in the server (RETURNING into an aggregate), so only a few rows travel.
    """
    if frame.shape[0] == 0:
        return {}
    target = sql.Identifier(schema, table)
    stage = _stage(cur, table, frame, columns, target)
    merge = _merge(stage, target, columns, key, compare_exclude)
    cur.execute(
        sql.SQL(
            "WITH written AS ({merge} RETURNING t.{col}) SELECT {col}, count(*) FROM written"
            " GROUP BY {col}"
        ).format(merge=merge, col=sql.Identifier(count_by))
    )
    return {str(value): int(count) for value, count in cur.fetchall()}
