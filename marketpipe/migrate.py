"""Apply the versioned, forward-only SQL files in db/init; set the login roles' passwords if asked.

Roles are cluster-wide: on a shared server, setting their passwords while migrating one
database would change the logins of every other database's services, so ``migrate`` sets them
only with ``--set-role-passwords`` (compose does: its server is the stack's own).

The same files are mounted into the postgres container's docker-entrypoint-initdb.d; each file
records its own version, so a database initialised by either path ends identical.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import psycopg2
from psycopg2 import sql

from marketpipe.db import connect
from marketpipe.logs import setup_logging
from marketpipe.reach import check_postgres, exit_if_unreachable
from marketpipe.settings import (
    FETCHER_ROLE,
    LOADER_ROLE,
    READER_ROLE,
    STREAMER_ROLE,
    TRANSFORMER_ROLE,
    Settings,
    load_settings,
)

log = logging.getLogger("marketpipe.migrate")

# In the checkout a link to db/init; in an installed wheel the files themselves (package data).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Serialises concurrent migrators (several replicas starting at once) on one database.
ADVISORY_LOCK_ID = 0x6D61726B6574


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """Numbered SQL files in order; anything else in the folder is an error, not ignored."""
    found = []
    for path in sorted(directory.iterdir()):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migrations are named NNNN_snake_case.sql")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration version in {directory}")
    return found


def create_database_if_missing(settings: Settings) -> bool:
    """Create the target database (e.g. `pagila`) when it does not exist; True if created."""
    target = settings.admin_url.database
    if not target:
        raise ValueError("DATABASE_URL names no database")
    conn = connect(settings.admin_url.set(database="postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
            log.info("created database %s", target)
            return True
    finally:
        conn.close()


def applied_versions(cur: psycopg2.extensions.cursor) -> set[int]:
    cur.execute("SELECT to_regclass('marketpipe.schema_migrations') IS NOT NULL")
    row = cur.fetchone()
    if not row or not row[0]:
        return set()
    cur.execute("SELECT version FROM marketpipe.schema_migrations")
    return {v for (v,) in cur.fetchall()}


def migrate(
    settings: Settings, directory: Path = MIGRATIONS_DIR, *, set_role_passwords: bool = False
) -> list[int]:
    """Apply every pending migration in one transaction each; return the versions applied."""
    applied: list[int] = []
    conn = connect(settings.admin_url)
    try:
        for version, path in migration_files(directory):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
                if version in applied_versions(cur):
                    continue
                cur.execute(path.read_text())
                cur.execute(
                    "INSERT INTO marketpipe.schema_migrations (version, name) VALUES (%s, %s)"
                    " ON CONFLICT (version) DO NOTHING",
                    (version, path.stem.split("_", 1)[1]),
                )
                applied.append(version)
                log.info("applied migration %s", path.name)
        if set_role_passwords:  # only when asked: roles are cluster-wide (module docstring)
            with conn, conn.cursor() as cur:
                for role, password in (
                    (LOADER_ROLE, settings.loader_db_password),
                    (READER_ROLE, settings.reader_db_password),
                    (FETCHER_ROLE, settings.fetcher_db_password),
                    (TRANSFORMER_ROLE, settings.transformer_db_password),
                    (STREAMER_ROLE, settings.streamer_db_password),
                ):
                    cur.execute(
                        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(
                            sql.Identifier(role)
                        ),
                        (password.get_secret_value(),),
                    )
    finally:
        conn.close()
    return applied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--create-database", action="store_true", help="create the database first if missing"
    )
    parser.add_argument(
        "--set-role-passwords",
        action="store_true",
        help="set the login roles' passwords (cluster-wide!) from *_DB_PASSWORD",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, "migrate")
    # With --create-database the target may not exist yet: the server's own database answers.
    server = settings.admin_url.set(database="postgres") if args.create_database else None
    exit_if_unreachable([lambda: check_postgres(server or settings.admin_url)], "migrate")
    if args.create_database:
        create_database_if_missing(settings)
    applied = migrate(settings, set_role_passwords=args.set_role_passwords)
    log.info("schema up to date (%d migration(s) applied now)", len(applied))


if __name__ == "__main__":
    main()
