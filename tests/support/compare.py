"""The stored tables of two databases row for row: what the soak and the continuation tests
compare against a clean backfill of the same span."""

from __future__ import annotations

import math
from typing import Any, Final

import psycopg2

from marketpipe.contract import PRICE_SCALE_COLUMN, PRICE_UNIT_COLUMNS
from services.loader.upsert import RELATIVE_TOLERANCE
from tests.integration.reliability.conftest import LINEAGE

COMPARED = ("bars", "daily_bars", "watermarks")
Rows = dict[tuple[Any, ...], dict[str, Any]]


def keyed_rows(url: str, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A table's rows by primary key, lineage columns left out."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f"marketpipe.{table}",),
        )
        key = [c for (c,) in cur.fetchall()]
        cur.execute(f"SELECT * FROM marketpipe.{table}")
        names = [d[0] for d in cur.description]
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        duplicated = 0
        for values in cur:
            row = {n: v for n, v in zip(names, values, strict=True) if n not in LINEAGE}
            k = tuple(row[c] for c in key)
            duplicated += k in rows
            rows[k] = row
    conn.close()
    assert key and not duplicated, (table, key, duplicated)
    return rows


def same_row(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Every column equal; floats within 1e-9 relative (NaN equal to NaN)."""
    if ours.keys() != theirs.keys():
        return False
    for column, value in ours.items():
        other = theirs[column]
        if isinstance(value, float) and isinstance(other, float):
            if not (
                math.isclose(value, other, rel_tol=1e-9) or (value != value and other != other)
            ):
                return False
        elif value != other:
            return False
    return True


# Two databases that loaded the same data in different orders (a chaos run and its clean run).
# A stored value is within the loader's tolerance of what a full recomputation over its stored
# series gives: a smaller difference (e.g. the last trace of older history that arrived later,
# fading as (13/14)^n in RSI's averages) is never written. So two such databases agree within
# twice that tolerance, and no closer: seen 1.15e-12 in daily RSI, on four consecutive days.
BETWEEN_LOAD_ORDERS: Final = 2 * RELATIVE_TOLERANCE


def changed_columns(
    ours: dict[str, Any], theirs: dict[str, Any], tolerance: float = RELATIVE_TOLERANCE
) -> list[str]:
    """The columns that differ between two rows of a table, by the loader's rule
    (services/loader/upsert.py) with ``tolerance``.

    Non-floats compared exactly (NULL as a value); floats beyond ``tolerance`` of the larger
    magnitude, for a price-unit column the rows' close included.
    """
    closes = [abs(r[PRICE_SCALE_COLUMN] or 0.0) for r in (ours, theirs) if PRICE_SCALE_COLUMN in r]
    changed = []
    for column, value in ours.items():
        other = theirs[column]
        if isinstance(value, float) and isinstance(other, float):
            scale = [abs(value), abs(other)]
            if column in PRICE_UNIT_COLUMNS:
                scale += closes
            if abs(value - other) > tolerance * max(scale):
                changed.append(column)
        elif value != other:
            changed.append(column)
    return changed


def agree(ours: dict[str, Any], theirs: dict[str, Any], tolerance: float) -> bool:
    """Same columns, none changed by :func:`changed_columns` with ``tolerance``."""
    return ours.keys() == theirs.keys() and not changed_columns(ours, theirs, tolerance)


def snapshot(url: str) -> dict[str, Rows]:
    """The COMPARED tables of a database by primary key, lineage left out."""
    return {table: keyed_rows(url, table) for table in COMPARED}


def compare(soaked: str, clean: str, examples: int = 3) -> tuple[dict[str, int], list[str]]:
    """Row for row: lost (in the clean backfill only), duplicated (in the soak only), different.

    Also up to ``examples`` rows of each kind per table, described.
    """
    return compare_snapshots(snapshot(soaked), snapshot(clean), examples)


def compare_snapshots(
    soaked: dict[str, Rows], clean: dict[str, Rows], examples_each: int = 3
) -> tuple[dict[str, int], list[str]]:
    """:func:`compare` of two :func:`snapshot` results."""
    counts = {"rows": 0, "lost": 0, "duplicated": 0, "different": 0}
    examples: list[str] = []
    for table in COMPARED:
        ours, theirs = soaked[table], clean[table]
        counts["rows"] += len(theirs)
        lost, surplus = theirs.keys() - ours.keys(), ours.keys() - theirs.keys()
        different = [k for k in theirs.keys() & ours.keys() if not same_row(ours[k], theirs[k])]
        counts["lost"] += len(lost)
        counts["duplicated"] += len(surplus)
        counts["different"] += len(different)
        for label, keys in (("lost", lost), ("surplus", surplus), ("different", different)):
            for k in sorted(keys, key=repr)[:examples_each]:
                detail = ""
                if label == "different":
                    detail = str(
                        {
                            c: (ours[k][c], theirs[k][c])
                            for c in ours[k]
                            if ours[k][c] != theirs[k][c]
                        }
                    )
                examples.append(f"{table} {label} {k} {detail}")
    return counts, examples
