"""The landing table ``marketpipe.raw_payloads``: every API answer, written first, never changed.

The fetcher lands each answer here (through its INSERT-only role) before it enqueues the
transform, so a payload whose transform fails still exists and ``ops replay`` can re-run it. A
row is immutable: the id is the answer's content address, so landing it again is a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy.engine import URL

from marketpipe.contract import RawPayload
from marketpipe.db import transaction

COLUMNS: Final = (
    "payload_id",
    "source",
    "endpoint",
    "symbol",
    "interval",
    "fetched_at",
    "request",
    "body",
    "instrument",
)
JSON_COLUMNS: Final = ("request", "body", "instrument")
# Statements built from the constant column lists; values always travel as parameters. JSON is
# read as text and decoded here, so a body that is a bare JSON string stays a string.
_SELECT: Final = (
    "SELECT "  # noqa: S608
    + ", ".join(f"{c}::text" if c in JSON_COLUMNS else c for c in COLUMNS)
    + " FROM marketpipe.raw_payloads"
)
# No conflict target: naming one (payload_id) needs SELECT on it, and the fetcher's role has
# INSERT only. The primary key is the table's one unique constraint, so the meaning is the same.
_INSERT: Final = (
    f"INSERT INTO marketpipe.raw_payloads ({', '.join(COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT DO NOTHING"
)


class PayloadNotLandedError(LookupError):
    """A job names a payload id that ``marketpipe.raw_payloads`` does not hold."""


def land_payload(url: URL, payload: RawPayload) -> bool:
    """Write the raw answer once; True if it is new, False if it was already landed."""
    with transaction(url) as cur:
        cur.execute(
            _INSERT,
            (
                payload.payload_id,
                payload.source,
                payload.endpoint,
                payload.symbol,
                payload.interval,
                payload.fetched_at,
                json.dumps(payload.request),
                json.dumps(payload.body),
                json.dumps(payload.instrument),
            ),
        )
        return bool(cur.rowcount)


def _payload(row: Sequence[Any]) -> RawPayload:
    fields = dict(zip(COLUMNS, row, strict=True))
    for name in JSON_COLUMNS:
        fields[name] = json.loads(fields[name])
    return RawPayload(**fields)


def read_payload(url: URL, payload_id: str) -> RawPayload:
    """The landed payload with this id, exactly as fetched."""
    with transaction(url) as cur:
        cur.execute(_SELECT + " WHERE payload_id = %s", (payload_id,))
        row = cur.fetchone()
    if row is None:
        raise PayloadNotLandedError(f"payload {payload_id} is not in marketpipe.raw_payloads")
    return _payload(row)


def landed_payloads(
    url: URL,
    since: datetime,
    until: datetime,
    interval: str,
    symbols: Sequence[str] | None = None,
) -> list[RawPayload]:
    """Payloads of ``interval`` landed with ``since <= fetched_at < until``, oldest fetch first."""
    query = _SELECT + " WHERE fetched_at >= %s AND fetched_at < %s AND interval = %s"
    params: list[Any] = [since, until, interval]
    if symbols:
        query += " AND symbol = ANY(%s)"
        params.append(list(symbols))
    with transaction(url) as cur:
        cur.execute(query + " ORDER BY fetched_at, payload_id", params)
        return [_payload(row) for row in cur.fetchall()]
