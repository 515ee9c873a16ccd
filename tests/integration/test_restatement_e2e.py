"""Restatements on real processes: a 4-for-1 split and a corrected bar, detected within one tick,
restated while a reader watches, ending equal to a fresh database backfilled afterwards.

Sandbox over HTTP (its clock frozen, moved by the test), the fetcher's schedule loop, transformer
and loader workers, PostgreSQL and Redis; nothing is mocked.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from redis import Redis

from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import run_service, settings_env
from tests.support.processes import service_process, stop_with_sigterm, wait_while_running
from tests.support.scratch import empty_claimed_redis, scratch_database
from tests.support.sql import query

BEFORE_SPLIT = datetime(2026, 3, 11, 18, 45, tzinfo=UTC)  # Wednesday, New York mid-session
SPLIT_DAY = date(2026, 3, 12)
SPLIT_OPEN = datetime(2026, 3, 12, 13, 30, tzinfo=UTC)  # 09:30 New York (EDT)
AFTER_SPLIT = datetime(2026, 3, 12, 17, 50, tzinfo=UTC)  # Thursday 13:50 New York
SYMBOLS = ("AAPL", "BTC/USD")
# Lineage: which payload and when (an unchanged bar keeps the payload that last wrote it).
LINEAGE = ("loaded_at", "transformed_at", "payload_id")


def series(url: str) -> dict[str, list[dict[str, Any]]]:
    """AAPL's stored bars, daily bars and watermark, lineage timestamps left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, key in (("bars", "bar_time"), ("daily_bars", "trading_date")):
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM marketpipe.{table} WHERE symbol = 'AAPL' ORDER BY {key}")
            names = [d[0] for d in cur.description]
            out[table] = [
                {n: v for n, v in zip(names, row, strict=True) if n not in LINEAGE} for row in cur
            ]
        conn.close()
    out["watermarks"] = [
        {"bar": bar}
        for (bar,) in query(
            url, "SELECT last_complete_bar FROM marketpipe.watermarks WHERE symbol = 'AAPL'"
        )
    ]
    return out


def assert_same_series(restated: dict[str, list[dict]], fresh: dict[str, list[dict]]) -> None:
    """Row for row; floats within 1e-9 relative, everything else exactly."""
    for table in ("bars", "daily_bars", "watermarks"):
        assert len(restated[table]) == len(fresh[table]) > 0, table
        for ours, theirs in zip(restated[table], fresh[table], strict=True):
            assert ours.keys() == theirs.keys()
            for column, value in ours.items():
                other = theirs[column]
                if isinstance(value, float) and isinstance(other, float):
                    assert math.isclose(value, other, rel_tol=1e-9), (table, column, ours)
                else:
                    assert value == other, (table, column, ours)


@contextmanager
def fresh_database(
    server_db: str, redis: Redis, redis_url: str, sandbox_url: str
) -> Iterator[Settings]:
    """An empty migrated database fetching from the same sandbox, with the test's Redis db
    emptied (the pipeline under test is stopped by then: Redis db indexes are scarce)."""
    empty_claimed_redis(redis)
    with scratch_database(server_db, prefix="marketpipe_fresh") as db:
        settings = Settings(database_url=db, redis_url=redis_url, twelve_data_base_url=sandbox_url)
        migrate(settings)
        yield settings


def backfill_fresh(settings: Settings, since: date) -> str:
    """A fresh database backfilled from ``since`` on the sandbox as it answers now."""
    env = settings_env(settings)
    run_service(
        "services.fetcher", "backfill", "--since", since.isoformat(), "--symbols", "AAPL", env=env
    )
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    return settings.database_url


class Reader(threading.Thread):
    """Reads AAPL around the split date in single statements for as long as the test runs."""

    STATEMENT = (
        "SELECT (SELECT max(close) / min(close) FROM marketpipe.bars"
        " WHERE symbol = 'AAPL' AND interval = '1h' AND bar_time < %(split)s),"
        " (SELECT open FROM marketpipe.bars WHERE symbol = 'AAPL' AND interval = '1h'"
        " AND bar_time >= %(split)s ORDER BY bar_time LIMIT 1)"
        " / (SELECT close FROM marketpipe.bars WHERE symbol = 'AAPL' AND interval = '1h'"
        " AND bar_time < %(split)s ORDER BY bar_time DESC LIMIT 1)"
    )

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[float | None, float | None]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.url)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute(self.STATEMENT, {"split": SPLIT_OPEN})
                    self.seen.append(cur.fetchone())
            conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def restatement_rows(url: str) -> list[tuple]:
    return query(
        url,
        "SELECT restatement_id, kind, ratio, status, history_from, payload_id, bars_removed"
        " FROM marketpipe.restatements ORDER BY restatement_id",
    )


@pytest.fixture
def split_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        port=0,
        clock_start=BEFORE_SPLIT.isoformat(),
        clock_speed=0,
        credits_per_minute=10_000,
        credits_per_day=1_000_000,
    )
    with SandboxServer(settings) as server:
        yield server


def test_a_split_and_a_correction_are_detected_and_restated_without_readers_seeing_a_mixture(
    clean_db: Settings,
    redis: Redis,
    split_sandbox: SandboxServer,
    server_urls: tuple[str, str],
    tmp_path: Path,
) -> None:
    sandbox = split_sandbox
    settings = clean_db.model_copy(
        update={
            "twelve_data_base_url": sandbox.url,
            "symbols": SYMBOLS,
            "fetch_outputsize": 120,
            "restatement_poll_seconds": 0.5,
        }
    )
    url = settings.database_url
    env = settings_env(settings, RESTATEMENT_POLL_SECONDS="0.5")
    reader_url = settings.role_url("reader").render_as_string(hide_password=False)

    # History before the split: one tick, loaded.
    run_service("services.fetcher", "--once", env=env)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    before = series(url)
    assert before["bars"] and restatement_rows(url) == []

    # AAPL splits 4-for-1 on Thursday; the next tick comes on Thursday afternoon.
    admin = f"{sandbox.url}/__sandbox"
    made = requests.post(
        f"{admin}/splits",
        json={"symbol": "AAPL", "date": SPLIT_DAY.isoformat(), "to_factor": 4},
        timeout=5,
    )
    assert made.status_code == 200, made.text
    sandbox.clock.set(AFTER_SPLIT)
    sandbox.clock.freeze()

    reader = Reader(reader_url)
    reader.start()
    with ExitStack() as stack:
        workers = [
            stack.enter_context(service_process(m, env, tmp_path / f"{m}.log"))
            for m in ("services.transformer", "services.loader")
        ]
        fetcher_log = tmp_path / "fetcher.log"
        fetcher = stack.enter_context(service_process("services.fetcher", env, fetcher_log))

        def restated(count: int) -> bool:
            rows = restatement_rows(url)
            return len(rows) == count and all(r[3] == "restated" for r in rows)

        wait_while_running(fetcher, fetcher_log, lambda: restated(1), "the split's restatement")
        reader.stop.set()
        reader.join(timeout=10)
        assert reader.error is None, reader.error
        [(split_id, kind, ratio, _, history_from, payload_id, removed)] = restatement_rows(url)
        assert kind == "split" and ratio == pytest.approx(4.0, rel=1e-6) and removed == 0
        # Detected in the tick: the tick's AAPL payload is the one held back.
        [(status, message)] = query(
            url,
            "SELECT status, message FROM marketpipe.pipeline_runs WHERE payload_id = %s",
            payload_id,
        )
        assert status == "partial" and f"#{split_id}" in message
        # Only one tick ran (the split was restated before the next), BTC merged as usual.
        assert query(
            url, "SELECT count(*) FROM marketpipe.restatements WHERE symbol <> 'AAPL'"
        ) == [(0,)]

        # No reader ever saw old and new prices side by side.
        assert reader.seen, "the reader never read"
        spans = [s for s, _ in reader.seen if s is not None]
        jumps = [j for _, j in reader.seen if j is not None]
        assert max(spans) < 2.0, "a half-restated history (prices 4x apart before the split)"
        assert all(0.8 < j < 1.25 for j in jumps), "old prices next to split-adjusted ones"
        assert reader.seen[0][1] is None  # it read the series before the restatement too
        assert jumps, "it read the restated series too"

        restated_split = series(url)
        old = {r["bar_time"]: r["close"] for r in before["bars"] if r["is_complete"]}
        new = {r["bar_time"]: r["close"] for r in restated_split["bars"]}
        common = [t for t in old if t in new and t < SPLIT_OPEN]
        assert common and all(abs(new[t] - old[t] / 4) <= 5e-7 for t in common)

        # A vendor correction of one stored bar, seen by the next tick an hour later (run here
        # as `--once`, as another replica would; the running fetcher does the restatement).
        sandbox.clock.set(AFTER_SPLIT + timedelta(hours=1))
        sandbox.clock.freeze()
        corrected_bar = AFTER_SPLIT - timedelta(hours=3, minutes=20)  # 10:30 New York, stored
        assert corrected_bar in new
        fixed = requests.post(
            f"{admin}/corrections",
            json={"symbol": "AAPL", "bar_time": corrected_bar.isoformat(), "factor": 1.01},
            timeout=5,
        )
        assert fixed.status_code == 200, fixed.text
        run_service("services.fetcher", "--once", env=env)
        wait_while_running(
            fetcher, fetcher_log, lambda: restated(2), "the correction's restatement"
        )
        correction = restatement_rows(url)[1]
        assert correction[1] == "correction" and correction[2] is None
        [(first_bar, last_bar, affected)] = query(
            url,
            "SELECT first_bar, last_bar, bars_affected FROM marketpipe.restatements"
            " WHERE restatement_id = %s",
            correction[0],
        )
        assert (first_bar, last_bar, affected) == (corrected_bar, corrected_bar, 1)
        restated_fix = series(url)
        fixed_close = {r["bar_time"]: r["close"] for r in restated_fix["bars"]}[corrected_bar]
        assert abs(fixed_close - new[corrected_bar] * 1.01) <= 0.01  # a raw price, in cents
        stop_with_sigterm(fetcher, fetcher_log)
        for worker in workers:
            stop_with_sigterm(worker, tmp_path / "worker.log")

    # Each restated series equals a fresh database backfilled from the sandbox as it answered
    # then: after the split (the correction was made later, so it is not served yet), and after
    # the correction.
    for at, restated_series, since in (
        (AFTER_SPLIT, restated_split, history_from.date()),
        (AFTER_SPLIT + timedelta(hours=1), restated_fix, correction[4].date()),
    ):
        sandbox.clock.set(at)
        sandbox.clock.freeze()
        with fresh_database(server_urls[0], redis, settings.redis_url, sandbox.url) as fresh:
            assert_same_series(restated_series, series(backfill_fresh(fresh, since)))
