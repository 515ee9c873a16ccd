"""The SQL in db/init and the column contract in marketpipe.contract must never drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marketpipe.contract import DAILY_COLUMNS, OLAP_COLUMNS, QUARANTINE_COLUMNS
from marketpipe.migrate import MIGRATIONS_DIR, migration_files

ALL_SQL = "\n".join(p.read_text() for _, p in migration_files())


def table_columns(table: str) -> list[tuple[str, str]]:
    match = re.search(
        rf"CREATE TABLE IF NOT EXISTS marketpipe\.{table} \((.*?)\n\);", ALL_SQL, re.DOTALL
    )
    assert match, f"no CREATE TABLE for marketpipe.{table}"
    columns = []
    for line in match.group(1).splitlines():
        parts = line.strip().rstrip(",").split()
        if len(parts) < 2 or parts[0].upper() in ("PRIMARY", "UNIQUE", "CHECK", "CONSTRAINT"):
            continue
        columns.append((parts[0], "double precision" if parts[1] == "double" else parts[1]))
    # Later migrations add columns at the end of the table.
    for added in re.finditer(rf"ALTER TABLE marketpipe\.{table}\n(.*?);", ALL_SQL, re.DOTALL):
        for line in added.group(1).splitlines():
            parts = line.strip().rstrip(",").split()
            if parts[:5] == ["ADD", "COLUMN", "IF", "NOT", "EXISTS"]:
                kind = "double precision" if parts[6] == "double" else parts[6]
                columns.append((parts[5], kind))
    return columns


@pytest.mark.parametrize(
    ("table", "contract"),
    [("bars", OLAP_COLUMNS), ("daily_bars", DAILY_COLUMNS), ("quarantine", QUARANTINE_COLUMNS)],
)
def test_tables_hold_exactly_the_contract_columns(table: str, contract: tuple) -> None:
    in_sql = [c for c in table_columns(table) if c[0] != "loaded_at"]
    assert in_sql == list(contract)


def test_migrations_are_numbered_and_record_their_own_version() -> None:
    files = migration_files()
    versions = [v for v, _ in files]
    # Increasing from 1; a gap is a number reserved for a branch not merged yet (parallel
    # branches are assigned their numbers, so they never collide).
    assert versions[0] == 1 and versions == sorted(set(versions))
    for version, path in files:
        assert f"VALUES ({version}, '{path.stem.split('_', 1)[1]}')" in path.read_text()


def test_migrations_never_touch_pagila_tables() -> None:
    for _, path in migration_files(MIGRATIONS_DIR):
        text = path.read_text()
        for statement in re.findall(
            r"(?:CREATE|ALTER|DROP|INSERT INTO|UPDATE|DELETE FROM)"
            r"\s+(?:TABLE|INDEX|VIEW)?\s*(?:IF NOT EXISTS\s+)?(\S+)",
            text,
        ):
            assert not statement.startswith("public."), f"{path.name} touches {statement}"


def test_no_stray_files_in_the_init_folder() -> None:
    assert all(p.suffix == ".sql" for p in Path(MIGRATIONS_DIR).iterdir())
