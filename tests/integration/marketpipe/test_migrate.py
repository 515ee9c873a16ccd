"""Migrations, roles and Pagila coexistence on a real PostgreSQL."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pandas as pd
import psycopg2
import pyarrow as pa
import pytest
from psycopg2 import errors, sql

from marketpipe.contract import QUARANTINE_COLUMNS, QUARANTINE_KEY
from marketpipe.db import connect, transaction
from marketpipe.migrate import migrate, migration_files
from marketpipe.settings import Settings
from services.loader.upsert import upsert

PAGILA_DIR = Path(__file__).resolve().parents[4] / "shared" / "pagila"


def run_psql_file(settings: Settings, path: Path) -> None:
    """Apply a SQL file with psql, as the postgres image's entrypoint does."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is needed to apply SQL files the way the postgres image does")
    url = settings.admin_url
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
        cur.execute(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'marketpipe'"
            " ORDER BY viewname"
        )
        rows += cur.fetchall()
        cur.execute(
            "SELECT p.proname, pg_get_functiondef(p.oid), p.proacl::text FROM pg_proc p"
            " WHERE p.pronamespace = 'marketpipe'::regnamespace ORDER BY 1, 2"
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
    assert migrate(scratch_db) == [v for v, _ in migration_files()]
    before = catalog(scratch_db)
    assert migrate(scratch_db) == []
    assert catalog(scratch_db) == before


def test_the_sql_files_alone_give_the_same_catalog_as_migrate(
    scratch_db: Settings, base_settings: Settings
) -> None:
    """docker-entrypoint-initdb.d runs the files with psql; `migrate` must agree with that path."""
    for path in sorted((Path(__file__).resolve().parents[3] / "db" / "init").glob("*.sql")):
        run_psql_file(scratch_db, path)
    assert migrate(scratch_db) == []  # every version was recorded by the files themselves
    assert catalog(scratch_db) == catalog(base_settings)


@pytest.mark.parametrize("applied_first", range(1, len(migration_files())))
def test_an_upgraded_database_ends_identical_to_a_fresh_one(
    scratch_db: Settings, base_settings: Settings, tmp_path: Path, applied_first: int
) -> None:
    """An older release's database (its first N files) migrated to the latest = fresh."""
    older = tmp_path / "older"
    older.mkdir()
    for _, path in migration_files()[:applied_first]:
        shutil.copy(path, older / path.name)
    # versions, not a count: numbers are reserved per branch, so the sequence may have gaps
    assert migrate(scratch_db, older) == [v for v, _ in migration_files()[:applied_first]]
    upgraded = migrate(scratch_db)
    assert upgraded == [v for v, _ in migration_files()][applied_first:]
    assert catalog(scratch_db) == catalog(base_settings)


def _as(settings: Settings, role: str, statement: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(settings.role_url(role).render_as_string(hide_password=False))  # type: ignore[arg-type]
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
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
        "CREATE VIEW marketpipe.mine AS SELECT 1 AS x",
        "CREATE FUNCTION marketpipe.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "TRUNCATE marketpipe.raw_payloads",
    ],
)
def test_the_reader_role_cannot_write(clean_db: Settings, statement: str) -> None:
    with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
        _as(clean_db, "reader", statement)


def test_the_reader_role_reads_our_schema(clean_db: Settings) -> None:
    assert _as(clean_db, "reader", "SELECT count(*) FROM marketpipe.bars") == [(0,)]
    assert _as(clean_db, "reader", "SELECT count(*) FROM marketpipe.latest_quotes") == [(0,)]
    assert _as(clean_db, "reader", "SELECT count(*) FROM marketpipe.daily_performance") == [(0,)]
    assert _as(
        clean_db,
        "reader",
        "SELECT count(*) FROM marketpipe.rebased(now() - interval '1 day', now())",
    ) == [(0,)]


WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def test_the_analyst_role_has_select_and_execute_only(clean_db: Settings) -> None:
    """Every relation of our schema, views included: SELECT yes, any write no; no CREATE."""
    conn = connect(clean_db.admin_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname, c.relkind,"
            " has_table_privilege('marketpipe_analyst', c.oid, 'SELECT'),"
            " ARRAY(SELECT p FROM unnest(%s::text[]) p"
            "       WHERE has_table_privilege('marketpipe_analyst', c.oid, p))"
            " FROM pg_class c WHERE c.relnamespace = 'marketpipe'::regnamespace"
            " AND c.relkind IN ('r', 'v')",
            (list(WRITE_PRIVILEGES),),
        )
        relations = cur.fetchall()
        cur.execute(
            "SELECT has_schema_privilege('marketpipe_analyst', 'marketpipe', 'CREATE'),"
            " has_function_privilege('marketpipe_analyst',"
            "   'marketpipe.rebased(timestamptz, timestamptz, text)', 'EXECUTE'),"
            " has_function_privilege('public',"
            "   'marketpipe.rebased(timestamptz, timestamptz, text)', 'EXECUTE'),"
            " has_table_privilege('marketpipe_writer', 'marketpipe.latest_quotes', 'INSERT')"
        )
        flags = cur.fetchone()
    conn.close()
    assert {kind for _, kind, _, _ in relations} == {"r", "v"}
    assert [(name, select, writes) for name, _, select, writes in relations] == [
        (name, True, []) for name, _, _, _ in relations
    ]
    assert flags == (False, True, False, False)


def test_the_loader_role_deletes_only_bars_it_replaces_and_drops_nothing(
    clean_db: Settings,
) -> None:
    # A changed bar or daily bar is replaced: deleted and COPYed anew in one transaction (0015).
    held = table_privileges(clean_db, "marketpipe_loader")
    assert {t for t, privileges in held.items() if "DELETE" in privileges} == {"bars", "daily_bars"}
    assert not any("TRUNCATE" in privileges for privileges in held.values())
    with pytest.raises(errors.InsufficientPrivilege):
        _as(clean_db, "loader", "DELETE FROM marketpipe.quarantine")
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
    later = frame.assign(quarantined_at=datetime(2026, 8, 21, tzinfo=UTC))
    written = []
    for rows in (frame, later):
        uri = clean_db.role_url("loader").render_as_string(hide_password=False)
        with adbc.connect(uri) as conn, conn.cursor() as cur:
            written.append(
                upsert(
                    cur,
                    "quarantine",
                    pa.Table.from_pandas(rows, preserve_index=False),
                    QUARANTINE_COLUMNS,
                    QUARANTINE_KEY,
                    lineage=("quarantined_at",),
                    touch=None,
                )
            )
            conn.commit()
    assert written == [2, 0]
    assert _as(
        clean_db, "reader", "SELECT count(*) FROM marketpipe.quarantine WHERE row_key = ''"
    ) == [(1,)]


TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def table_privileges(settings: Settings, role: str) -> dict[str, set[str]]:
    """Every privilege ``role`` holds on a relation of our schema (directly or inherited)."""
    conn = connect(settings.admin_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname, p FROM pg_class c, unnest(%s::text[]) p"
            " WHERE c.relnamespace = 'marketpipe'::regnamespace AND c.relkind IN ('r', 'v')"
            " AND has_table_privilege(%s, c.oid, p)",
            (list(TABLE_PRIVILEGES), role),
        )
        rows = cur.fetchall()
    conn.close()
    held: dict[str, set[str]] = {}
    for relation, privilege in rows:
        held.setdefault(relation, set()).add(privilege)
    return held


def test_the_fetcher_and_transformer_roles_hold_exactly_what_they_need(
    clean_db: Settings,
) -> None:
    assert table_privileges(clean_db, "marketpipe_fetcher") == {
        "raw_payloads": {"INSERT"},
        "watermarks": {"SELECT"},
        "restatements": {"SELECT"},  # which series wait for a restate
        # Its own run rows (0010), and the loader's for `backfill --wait`.
        "pipeline_runs": {"SELECT", "INSERT", "UPDATE"},
        # The series it was configured with and their automatic backfills (0013).
        "configured_series": {"SELECT", "INSERT", "UPDATE"},
    }
    # The transformer reads the payload and the stored series its bars continue (0008).
    assert table_privileges(clean_db, "marketpipe_transformer") == {
        "raw_payloads": {"SELECT"},
        "bars": {"SELECT"},
        "series_versions": {"SELECT"},
    }
    # Landed rows are immutable: the loader's role may read them, nothing more.
    assert table_privileges(clean_db, "marketpipe_loader")["raw_payloads"] == {"SELECT"}


@pytest.mark.parametrize(
    ("role", "statement"),
    [
        ("fetcher", "SELECT count(*) FROM marketpipe.raw_payloads"),
        ("fetcher", "UPDATE marketpipe.raw_payloads SET body = '{}'"),
        ("fetcher", "DELETE FROM marketpipe.raw_payloads"),
        ("fetcher", "SELECT count(*) FROM marketpipe.bars"),
        ("transformer", "UPDATE marketpipe.raw_payloads SET body = '{}'"),
        ("transformer", "UPDATE marketpipe.bars SET close = close"),
        ("transformer", "UPDATE marketpipe.series_versions SET version = 0"),
        ("transformer", "SELECT count(*) FROM marketpipe.daily_bars"),
        ("loader", "UPDATE marketpipe.raw_payloads SET body = '{}'"),
        ("loader", "DELETE FROM marketpipe.raw_payloads"),
        ("loader", "TRUNCATE marketpipe.raw_payloads"),
    ],
)
def test_no_service_can_change_a_landed_payload_or_read_beyond_its_need(
    clean_db: Settings, role: str, statement: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        _as(clean_db, role, statement)


@pytest.fixture
def pagila_db(scratch_db: Settings) -> Settings:
    if not (PAGILA_DIR / "pagila-schema.sql").is_file():
        pytest.skip(f"Pagila not found at {PAGILA_DIR} (../shared/pagila beside the checkout)")
    for part in ("pagila-schema.sql", "pagila-data.sql"):
        run_psql_file(scratch_db, PAGILA_DIR / part)
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
    for table in before:
        with pytest.raises(errors.InsufficientPrivilege):
            _as(pagila_db, "reader", f"SELECT 1 FROM public.{table} LIMIT 1")
    with pytest.raises(errors.InsufficientPrivilege):
        _as(pagila_db, "reader", "UPDATE public.film SET title = title")
    with pytest.raises(errors.InsufficientPrivilege):
        _as(pagila_db, "loader", "SELECT count(*) FROM public.customer")


def test_migrate_leaves_the_cluster_wide_role_passwords_alone(
    scratch_db: Settings,
) -> None:
    def role_passwords() -> list[tuple[str, str | None]]:
        conn = connect(scratch_db.admin_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT rolname, rolpassword FROM pg_authid"
                    " WHERE rolname LIKE 'marketpipe\\_%' ORDER BY rolname"
                )
                return list(cur.fetchall())
        finally:
            conn.close()

    migrate(scratch_db)
    before = role_passwords()
    other = scratch_db.model_copy(update={"loader_db_password": "not-the-servers-one"})
    migrate(other)  # another database's migration, with other passwords: the logins stay
    assert role_passwords() == before
