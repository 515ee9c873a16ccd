"""Database access shared by the services: engines per role, raw DBAPI connections for COPY."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from marketpipe.settings import Settings

_engines: dict[tuple[int, str], Engine] = {}


def engine_for(url: URL, **kwargs: Any) -> Engine:
    """A pooled engine per URL and process: RQ work horses are forks and must not share sockets."""
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg 3; psycopg2 is the driver we ship.
        url = url.set(drivername="postgresql+psycopg2")
    key = (os.getpid(), url.render_as_string(hide_password=False))
    if key not in _engines:
        _engines[key] = create_engine(url, pool_pre_ping=True, **kwargs)
    return _engines[key]


def reader_engine(settings: Settings) -> Engine:
    """The dashboard's read-only engine; every session is also READ ONLY at the server."""
    return engine_for(
        settings.role_url("reader"),
        connect_args={"options": "-c default_transaction_read_only=on"},
        pool_size=4,
    )


def connect(url: URL, **kwargs: Any) -> psycopg2.extensions.connection:
    """A plain psycopg2 connection (COPY, DDL) from a SQLAlchemy URL."""
    conn: psycopg2.extensions.connection = psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **kwargs,
    )
    return conn


@contextmanager
def transaction(url: URL) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in one transaction: committed on success, rolled back on any error."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()
