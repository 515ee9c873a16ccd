"""The chaos tests' shared record: each test adds one line to the table `make chaos` prints.

Every test here is marked ``chaos`` (long; `make test` leaves them out). A line says how many
faults were injected, how many jobs ran, and how the final tables compare with the expected
rows: lost (expected, not found) and duplicated (found more than once or unexpected).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import Settings

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
from tests.integration.reliability.conftest import workers  # noqa: F401
from tests.support.compare import BETWEEN_LOAD_ORDERS, Rows, agree, changed_columns
from tests.support.compare import snapshot as support_snapshot

REPORT = Path(os.environ.get("CHAOS_REPORT", REPO_ROOT / ".chaos" / "results.jsonl"))


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


def snapshot(settings: Settings) -> dict[str, Rows]:
    """bars, daily bars and watermarks by primary key, lineage left out."""
    return support_snapshot(settings.database_url)


def compare(expected: dict[str, Rows], found: dict[str, Rows]) -> dict[str, int]:
    """Row for row: lost = expected rows missing, duplicated = surplus or unexpected rows.

    Two rows with the same key are the same row when their values agree by the loader's rule
    within BETWEEN_LOAD_ORDERS (tests/support/compare.py: each run's stored values are within
    the loader's tolerance of a full recomputation, so two runs within twice it). A row that
    differs counts as lost (the expected one) and duplicated (the one found).
    """
    lost = duplicated = 0
    for table in expected.keys() | found.keys():
        ours, theirs = found.get(table, {}), expected.get(table, {})
        different = sum(
            not agree(ours[k], theirs[k], BETWEEN_LOAD_ORDERS) for k in ours.keys() & theirs.keys()
        )
        lost += len(theirs.keys() - ours.keys()) + different
        duplicated += len(ours.keys() - theirs.keys()) + different
    return {
        "rows_expected": sum(len(rows) for rows in expected.values()),
        "rows_found": sum(len(rows) for rows in found.values()),
        "lost": lost,
        "duplicated": duplicated,
    }


def lost_by_series(
    expected: dict[str, Rows], found: dict[str, Rows]
) -> dict[str, tuple[int, str, str]]:
    """For a failure message: per table and symbol, how many keys are missing and their span
    (a gap at one end of a series points at the fetch, holes inside it at a lost job)."""
    out = {}
    for table, rows in expected.items():
        missing = rows.keys() - found.get(table, {}).keys()
        for symbol in sorted({k[0] for k in missing}):
            keys = sorted(str(k[1:]) for k in missing if k[0] == symbol)
            out[f"{table} {symbol}"] = (len(keys), keys[0], keys[-1])
    return out


def differences(expected: dict[str, Rows], found: dict[str, Rows], limit: int = 8) -> list[str]:
    """For a failure message: rows found under an expected key that :func:`compare` calls
    different, with each differing column's value found and expected; or surplus keys."""
    out: list[str] = []
    for table in sorted(found):
        theirs = expected.get(table, {})
        for key, row in sorted(found[table].items(), key=repr):
            if key not in theirs:
                out.append(f"{table} {key}: no expected row with this key")
            elif not agree(row, theirs[key], BETWEEN_LOAD_ORDERS):
                cols = [
                    f"{c} {row[c]!r} expected {theirs[key][c]!r}"
                    for c in changed_columns(row, theirs[key], BETWEEN_LOAD_ORDERS)
                ]
                out.append(f"{table} {key}: {'; '.join(cols)}")
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
