"""One statement against a test database, as the superuser URL the test holds."""

from __future__ import annotations

from typing import Any

import psycopg2


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    conn.close()
    return rows
