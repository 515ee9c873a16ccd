"""The chaos tests' shared record: each test adds one line to the table `make chaos` prints.

Every test here is marked ``chaos`` (long; `make test` leaves them out). A line says how many
faults were injected, how many jobs ran, and how the final tables compare with the expected
rows: lost (expected, not found) and duplicated (found more than once or unexpected).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.loader.upsert import RELATIVE_TOLERANCE

# The integration fixtures (own database, own Redis db, sandbox) and the worker pool, shared.
from tests.integration.conftest import (  # noqa: F401
    REPO_ROOT,
    base_settings,
    clean_db,
    database_url,
    pipeline_settings,
    redis,
    redis_url,
    sandbox,
    server_urls,
)
from tests.integration.reliability.conftest import table_rows, workers  # noqa: F401

REPORT = Path(os.environ.get("CHAOS_REPORT", REPO_ROOT / ".chaos" / "results.jsonl"))
KEYED = ("bars", "daily_bars", "watermarks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.chaos)


def jobs_run(client: Redis, settings: Settings) -> int:
    """Jobs that finished, over both queues (a retried job counts once)."""
    return sum(
        broker.queue(name, client, settings).finished_job_registry.count
        for name in (TRANSFORM_QUEUE, LOAD_QUEUE)
    )


def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    return {table: table_rows(settings, table) for table in KEYED}


_FLOAT = object()  # where a float stood, in a row's exact part


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """The loader's own rule for "unchanged": every float within RELATIVE_TOLERANCE."""
    return all(
        abs(x - y) <= RELATIVE_TOLERANCE * max(abs(x), abs(y)) for x, y in zip(a, b, strict=True)
    )


def _split(row: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[float, ...]]:
    """(the row with its floats masked: key, NULLs and text compared exactly; the floats)."""
    return (
        tuple(_FLOAT if isinstance(v, float) else v for v in row),
        tuple(v for v in row if isinstance(v, float)),
    )


def compare(
    expected: dict[str, list[tuple[Any, ...]]], found: dict[str, list[tuple[Any, ...]]]
) -> dict[str, int]:
    """Row for row: lost = expected rows missing, duplicated = surplus or unexpected rows.

    Two rows are the same row when their non-float values are equal and their floats agree to
    the loader's 1e-12 relative rule (services/loader/upsert.py), which is also what makes a
    re-sent bar count as unchanged: indicators seeded over a different stretch of history
    differ below it, depending on load order.
    """
    lost = duplicated = 0
    for table in expected.keys() | found.keys():
        unmatched: dict[tuple[Any, ...], list[tuple[float, ...]]] = {}
        for row in expected.get(table, []):
            key, floats = _split(row)
            unmatched.setdefault(key, []).append(floats)
        for row in found.get(table, []):
            key, floats = _split(row)
            candidates = unmatched.get(key, [])
            match = next((i for i, c in enumerate(candidates) if _same(c, floats)), None)
            if match is None:
                duplicated += 1
            else:
                candidates.pop(match)
        lost += sum(len(c) for c in unmatched.values())
    return {
        "rows_expected": sum(len(rows) for rows in expected.values()),
        "rows_found": sum(len(rows) for rows in found.values()),
        "lost": lost,
        "duplicated": duplicated,
    }


def lost_by_series(
    expected: dict[str, list[tuple[Any, ...]]], found: dict[str, list[tuple[Any, ...]]]
) -> dict[str, tuple[int, str, str]]:
    """For a failure message: per table and symbol, how many rows are missing and their span
    (a gap at one end of a series points at the fetch, holes inside it at a lost job)."""
    out = {}
    for table, rows in expected.items():
        missing = Counter(rows) - Counter(found.get(table, []))
        for symbol in sorted({r[0] for r in missing}):
            keys = sorted(str(r[1:3]) for r in missing if r[0] == symbol)
            out[f"{table} {symbol}"] = (len(keys), keys[0], keys[-1])
    return out


def differences(
    expected: dict[str, list[tuple[Any, ...]]],
    found: dict[str, list[tuple[Any, ...]]],
    limit: int = 8,
) -> list[str]:
    """For a failure message: found rows no expected row matches, each with the expected row of
    the same non-float values and the float positions (column order, lineage left out) that
    differ beyond the rule, both values shown; or "no expected row" when none shares them."""
    out: list[str] = []
    for table in sorted(found):
        by_exact: dict[tuple[Any, ...], list[tuple[float, ...]]] = {}
        for row in expected.get(table, []):
            exact, floats = _split(row)
            by_exact.setdefault(exact, []).append(floats)
        for row in found[table]:
            exact, floats = _split(row)
            candidates = by_exact.get(exact, [])
            if any(_same(c, floats) for c in candidates):
                continue
            if not candidates:
                out.append(f"{table} {row[:3]}: no expected row with the same non-float values")
            else:
                near = candidates[0]
                cols = [
                    f"float#{i} {x!r} expected {y!r}"
                    for i, (x, y) in enumerate(zip(floats, near, strict=True))
                    if abs(x - y) > RELATIVE_TOLERANCE * max(abs(x), abs(y))
                ]
                out.append(f"{table} {row[:3]}: {'; '.join(cols)}")
            if len(out) >= limit:
                return out
    return out


@pytest.fixture
def chaos_record(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    lines: list[dict[str, Any]] = []

    def record(scenario: str, *, faults: int, jobs: int, **comparison: int) -> None:
        lines.append({"scenario": scenario, "faults": faults, "jobs": jobs, **comparison})

    yield record
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        for line in lines:
            out.write(json.dumps({**line, "test": request.node.name}) + "\n")
