"""Migrations, roles and Pagila coexistence on a real PostgreSQL."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from psycopg2 import errors, sql

from marketpipe.contract import QUARANTINE_COLUMNS, QUARANTINE_KEY, column_names
from marketpipe.db import connect, transaction
from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.loader.upsert import upsert_frame

PAGILA_DIR = Path(__file__).resolve().parents[3] / "shared" / "pagila"


def catalog(settings: Settings) -> list[tuple]:
    """Everything migrations define in our schema: columns, indexes, grants, versions."""
    conn = connect(settings.admin_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'marketpipe'"
            " ORDER BY table_name, ordinal_position"
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'marketpipe'"
            " ORDER BY indexname"
        )
        rows += cur.fetchall()
        cur.execute(
            "SELECT grantee, table_name, privilege_type FROM information_schema.table_privileges"
            " WHERE table_schema = 'marketpipe' ORDER BY 1, 2, 3"
        )
        rows += cur.fetchall()
        cur.execute("SELECT version, name FROM marketpipe.schema_migrations ORDER BY version")
        rows += cur.fetchall()
    conn.close()
    return rows


@pytest.fixture
def scratch_db(base_settings: Settings) -> Iterator[Settings]:
    """Another fresh database on the same server, dropped after the test."""
    name = f"marketpipe_scratch_{secrets.token_hex(4)}"
    admin = connect(base_settings.admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = base_settings.admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield Settings(database_url=url, redis_url=base_settings.redis_url)
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def test_migrating_twice_is_harmless(scratch_db: Settings) -> None:
    assert migrate(scratch_db) == [1, 2]
    before = catalog(scratch_db)
    assert migrate(scratch_db) == []
    assert catalog(scratch_db) == before


def test_the_sql_files_alone_give_the_same_catalog_as_migrate(
    scratch_db: Settings, base_settings: Settings
) -> None:
    """docker-entrypoint-initdb.d runs the files with psql; `migrate` must agree with that path."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is needed to apply db/init the way the postgres image does")
    url = scratch_db.admin_url
    for path in sorted((Path(__file__).resolve().parents[2] / "db" / "init").glob("*.sql")):
        subprocess.run(
            [
                psql,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                "-d",
                url.database or "",
                "-f",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
    assert migrate(scratch_db) == []  # every version was recorded by the files themselves
    assert catalog(scratch_db) == catalog(base_settings)


def _as(settings: Settings, role: str, statement: str) -> None:
    conn = psycopg2.connect(settings.role_url(role).render_as_string(hide_password=False))  # type: ignore[arg-type]
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO marketpipe.watermarks (symbol, interval, last_complete_bar)"
        " VALUES ('X', '1h', now())",
        "UPDATE marketpipe.bars SET close = 0",
        "DELETE FROM marketpipe.bars",
        "CREATE TABLE marketpipe.mine (x int)",
        "CREATE TABLE public.mine (x int)",
    ],
)
def test_the_reader_role_cannot_write(clean_db: Settings, statement: str) -> None:
    with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
        _as(clean_db, "reader", statement)


def test_the_reader_role_reads_our_schema(clean_db: Settings) -> None:
    _as(clean_db, "reader", "SELECT count(*) FROM marketpipe.bars")


def test_the_loader_role_cannot_drop_or_delete(clean_db: Settings) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        _as(clean_db, "loader", "DELETE FROM marketpipe.bars")
    with pytest.raises(errors.InsufficientPrivilege):
        _as(clean_db, "loader", "DROP TABLE marketpipe.bars")


def test_quarantine_upsert_is_idempotent(clean_db: Settings) -> None:
    frame = pd.DataFrame(
        {
            "payload_id": ["p1", "p1"],
            "symbol": ["AAPL", "AAPL"],
            "interval": ["1h", "1h"],
            "row_key": ["", "2026-08-20 15:30:00"],  # the empty key must not become NULL
            "reason": ["api error 404", "high below max(open, close)"],
            "raw": ['{"code": 404}', '{"high": "1"}'],
            "quarantined_at": [datetime(2026, 8, 20, tzinfo=UTC)] * 2,
        }
    )
    columns = column_names(QUARANTINE_COLUMNS)
    with transaction(clean_db.role_url("loader")) as cur:
        assert upsert_frame(cur, "quarantine", frame, columns, QUARANTINE_KEY) == 2
    later = frame.assign(quarantined_at=datetime(2026, 8, 21, tzinfo=UTC))
    with transaction(clean_db.role_url("loader")) as cur:
        assert (
            upsert_frame(
                cur,
                "quarantine",
                later,
                columns,
                QUARANTINE_KEY,
                compare_exclude=("quarantined_at",),
            )
            == 0
        )


@pytest.fixture
def pagila_db(scratch_db: Settings) -> Settings:
    if not (PAGILA_DIR / "pagila-schema.sql").is_file():
        pytest.skip(f"Pagila not found at {PAGILA_DIR} (../shared/pagila beside the checkout)")
    url = scratch_db.admin_url
    for part in ("pagila-schema.sql", "pagila-data.sql"):
        subprocess.run(
            [
                "psql",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                "-d",
                url.database or "",
                "-f",
                str(PAGILA_DIR / part),
            ],
            check=True,
            capture_output=True,
        )
    return scratch_db


def pagila_counts(settings: Settings) -> dict[str, int]:
    conn = connect(settings.admin_url)
    counts = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        for (table,) in cur.fetchall():
            cur.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table)))
            counts[table] = cur.fetchone()[0]
    conn.close()
    return counts


def test_our_schema_coexists_with_pagila(pagila_db: Settings) -> None:
    before = pagila_counts(pagila_db)
    assert before["film"] == 1000 and before["rental"] > 16000
    migrate(pagila_db)
    with transaction(pagila_db.role_url("loader")) as cur:
        cur.execute(
            "INSERT INTO marketpipe.watermarks (symbol, interval, last_complete_bar)"
            " VALUES ('AAPL', '1h', now())"
        )
    assert pagila_counts(pagila_db) == before
    with pytest.raises(errors.InsufficientPrivilege):
        _as(pagila_db, "reader", "SELECT count(*) FROM public.film")
    with pytest.raises(errors.InsufficientPrivilege):
        _as(pagila_db, "loader", "SELECT count(*) FROM public.customer")
