"""Database access shared by the services: engines per role, raw DBAPI connections for COPY."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import adbc_driver_manager as adbc_manager
import adbc_driver_manager.dbapi as adbc_dbapi
import adbc_driver_postgresql
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
    """A cursor in one transaction: committed on success, rolled back on any error.

    On a connection of the process's pool for ``url`` (:func:`engine_for`), not a new one: the
    fetcher lands every answer of a tick through here, and a connection each cost ~4 ms of the
    ~20 ms a payload took from answer to enqueued transform (bench_tick, 50 symbols).
    """
    pooled = engine_for(url).raw_connection()
    conn = cast(psycopg2.extensions.connection, pooled.dbapi_connection)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        pooled.close()  # back to the pool


class _KeptDatabase(adbc_dbapi._SharedDatabase):
    """The process's ADBC database, which a closing connection must leave open."""

    def close(self) -> None:
        pass


_adbc_databases: dict[str, adbc_manager.AdbcDatabase] = {}


def adbc_database(url: URL) -> adbc_manager.AdbcDatabase:
    """The ADBC driver's database for ``url``, made once per process (and inherited by forks).

    Making it reads the server's type catalog (0.1-0.3 s here, measured: most of a load job's
    time on a small batch); it holds no socket afterwards, so a worker makes it before RQ forks
    its work horses and every job only opens a connection (~20 ms).
    """
    uri = url.render_as_string(hide_password=False)
    if uri not in _adbc_databases:
        _adbc_databases[uri] = adbc_driver_postgresql.connect(uri)
    return _adbc_databases[uri]


def utc_text(moment: datetime | None) -> str | None:
    """A UTC time as ISO text, for a ``$n::timestamptz`` parameter of an ADBC statement.

    ADBC binds a ``datetime`` by reading the session's time zone, setting it to UTC and setting
    it back around the statement: three round trips more for each (server log, adbc-driver-
    postgresql 1.13); text cast by the server costs none.
    """
    if moment is None:
        return None
    # A naive time is UTC, as ADBC bound one (it set the session's zone to UTC for it).
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat()


def adbc_connect(url: URL) -> adbc_dbapi.Connection:
    """A DB-API connection over ADBC (Arrow in and out), on the process's database object."""
    database = adbc_database(url)
    return adbc_dbapi.Connection(_KeptDatabase(database), adbc_manager.AdbcConnection(database))
