"""Bad input: the sandbox's whole fault matrix, then hand-made poison landed and queued directly.

The pipeline keeps running, the other symbols flow, nothing is lost, and every bad item ends in
``marketpipe.quarantine`` or RQ's failed-job registry with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.cycle import run_cycle
from services.fetcher.handoff import BAD_SYMBOL_PREFIX
from services.sandbox.app import SandboxServer
from services.sandbox.market import model_bars
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import FROZEN_AT
from tests.integration.reliability.conftest import (
    Workers,
    failed_jobs,
    push_transform,
    query,
    wait_drained,
)
from tests.support.clock import InProcessClock
from tests.unit.transformer.payloads import CRYPTO_META, bar, hourly_times, payload

SYMBOLS = ("AAPL", "MSFT", "BTC/USD", "ETH/USD")
PLAN = (55, 5000)  # credits per minute and per day, on both sides
# One round per line: the faults scripted before that round's fetch cycle.
FAULT_ROUNDS: tuple[tuple[tuple[str, int], ...], ...] = (
    (("rate_limit", 3),),  # a 429 burst
    (("server_error", 2), ("bad_gateway", 1)),  # 5xx, one with an HTML body
    (("slow", 1), ("malformed_json", 1)),  # a timeout, a truncated JSON body
    (("legacy:server_error", 2),),  # HTTP 200 with an error body
    (("server_error", 6),),  # more than the client's attempts: the next tick catches up
    (("duplicate_bars", 1),),
    (("gaps", 1),),
    (("empty_values", 1),),
    (("unknown_symbol", 1),),  # the batch's last symbol answers "not found"
)


@pytest.fixture
def faulty_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        port=0,
        clock_start=FROZEN_AT.isoformat(),
        clock_speed=0,
        credits_per_minute=PLAN[0],
        credits_per_day=PLAN[1],
        slow_seconds=2,
    )
    with SandboxServer(settings) as server:
        yield server


def assert_complete(settings: Settings, symbol: str, now: datetime) -> int:
    """Every complete model bar from the first stored one to the watermark is stored, with the
    model's close: nothing lost to a fault. The number of bars checked."""
    first, last = query(
        settings,
        "SELECT min(bar_time), max(bar_time) FROM marketpipe.bars"
        " WHERE symbol = %s AND is_complete",
        symbol,
    )[0]
    model = model_bars(
        symbol, "1h", now, start=first, end=last + timedelta(hours=1), outputsize=5000
    )
    stored = dict(
        query(
            settings,
            "SELECT extract(epoch FROM bar_time)::bigint, close FROM marketpipe.bars"
            " WHERE symbol = %s AND is_complete",
            symbol,
        )
    )
    expected = dict(zip(model.open_time.tolist(), model.close.tolist(), strict=True))
    missing = sorted(set(expected) - set(stored))
    assert not missing, f"{symbol}: {len(missing)} bars lost, first {missing[:3]}"
    assert np.allclose([stored[t] for t in expected], list(expected.values())), symbol
    return len(expected)


def test_the_fault_matrix_loses_nothing_and_records_every_error(
    clean_db: Settings, redis: Redis, faulty_sandbox: SandboxServer, workers: Workers
) -> None:
    settings = clean_db.model_copy(
        update={
            "twelve_data_base_url": faulty_sandbox.url,
            "symbols": SYMBOLS,
            "fetch_outputsize": 60,
            "fetch_backoff_seconds": 0.05,
            "http_timeout_seconds": 1.0,
            "api_credits_per_minute": PLAN[0],
            "api_credits_per_day": PLAN[1],
        }
    )
    # In-process fetcher on the sandbox clock: its credit and backoff waits advance that clock.
    ctx = build_context(settings, clock=InProcessClock(faulty_sandbox.clock), redis=redis)
    workers.start("services.transformer", settings)
    workers.start("services.loader", settings)
    reports = []
    for faults in (*FAULT_ROUNDS, ()):
        faulty_sandbox.set_error_transport("modern")
        for name, count in faults:
            if name.startswith("legacy:"):
                faulty_sandbox.set_error_transport("legacy")
                name = name.removeprefix("legacy:")
            faulty_sandbox.faults.script(name, count=count)
        reports.append(run_cycle(ctx))
        wait_drained(redis, settings, 60, workers)
        # The API refused a symbol once: the fetcher skips it for the day. The day passes.
        redis.delete(*[f"{BAD_SYMBOL_PREFIX}:{s}" for s in SYMBOLS])
        faulty_sandbox.clock.advance(3600)
    faulty_sandbox.set_error_transport("modern")

    assert faulty_sandbox.faults.rules() == []  # every scripted fault was served
    assert any(r.deferred for r in reports), "the 6 x 500 round must defer to the next tick"
    assert any(r.api_errors for r in reports), "unknown_symbol must reach the fetcher"
    now = faulty_sandbox.clock.now()
    checked = {s: assert_complete(settings, s, now) for s in SYMBOLS}
    assert all(n >= 60 for n in checked.values()), checked

    reasons = {r for (r,) in query(settings, "SELECT DISTINCT reason FROM marketpipe.quarantine")}
    assert "duplicate_datetime" in reasons
    assert any(r.startswith("error_body: code 400") for r in reasons), reasons
    failed_runs = query(
        settings,
        "SELECT symbol, message FROM marketpipe.pipeline_runs"
        " WHERE component = 'loader' AND status = 'failed'",
    )
    assert [s for s, _ in failed_runs] == ["ETH/USD"], failed_runs
    assert failed_jobs(redis) == {}
    assert len(workers.alive("services.transformer")) == len(workers.alive("services.loader")) == 1


def test_poison_payloads_are_recorded_and_the_good_one_still_flows(
    clean_db: Settings, redis: Redis, workers: Workers
) -> None:
    fetched = datetime(2026, 3, 2, tzinfo=UTC)
    times = hourly_times(datetime(2026, 3, 1), 24)
    good = payload(
        "ETH/USD", CRYPTO_META, [bar(t, 100 + i) for i, t in enumerate(times)], fetched_at=fetched
    )
    rows = [bar(t, 50) for t in times[:6]]
    rows[0]["close"] = "abc"
    rows[1]["open"] = "-5"
    rows[2]["high"] = "1"  # below open and close
    rows[3]["datetime"] = "yesterday"
    rows[4]["close"] = "NaN"
    rows[5] = {"datetime": times[5]}  # no prices at all
    bad_rows = payload("SOL/USD", CRYPTO_META, rows, fetched_at=fetched)

    def body_variant(name: str, body: object) -> object:
        return good.model_copy(update={"payload_id": name, "body": body})

    shape_poison = {
        "list-body": body_variant("list-body", [1, 2, 3]),
        "string-body": body_variant("string-body", "<html>502 Bad Gateway</html>"),
        "no-meta": body_variant("no-meta", {"values": good.body["values"], "status": "ok"}),
        "values-not-list": body_variant("values-not-list", {**good.body, "values": {"a": 1}}),
        "error-200": body_variant("error-200", {"code": 500, "message": "x", "status": "error"}),
        "wrong-interval": body_variant(
            "wrong-interval", {**good.body, "meta": {**good.body["meta"], "interval": "1day"}}
        ),
    }

    workers.start("services.transformer", clean_db)
    workers.start("services.loader", clean_db)
    push_transform(redis, clean_db, good)
    push_transform(redis, clean_db, bad_rows)
    for item in shape_poison.values():
        push_transform(redis, clean_db, item)
    # A job naming a payload that was never landed, and one with arguments no transform takes.
    transform = broker.queue(TRANSFORM_QUEUE, redis, clean_db)
    transform.enqueue(TRANSFORM_JOB, args=("never-landed",), job_id="never-landed")
    transform.enqueue(TRANSFORM_JOB, args=(1, 2, 3), job_id="bad-arguments")
    wait_drained(redis, clean_db, 120, workers)

    assert len(workers.alive("services.transformer")) == 1, "a poison job killed the worker"
    assert len(workers.alive("services.loader")) == 1
    assert query(clean_db, "SELECT symbol, count(*) FROM marketpipe.bars GROUP BY 1") == [
        ("ETH/USD", 24)
    ]
    quarantined = dict(
        query(
            clean_db,
            "SELECT row_key || ' ' || payload_id, reason FROM marketpipe.quarantine",
        )
    )
    by_payload = {k.split(" ")[1]: v for k, v in quarantined.items()}
    for name in shape_poison:
        assert name in by_payload, name
    assert by_payload["list-body"].startswith("unknown_shape")
    assert by_payload["error-200"].startswith("error_body")
    sol = sorted(v for k, v in quarantined.items() if k.endswith(bad_rows.payload_id))
    assert len(sol) == 6, sol
    assert any(r.startswith("non_numeric") for r in sol)
    assert any(r.startswith("non_positive_price") for r in sol)
    assert any(r.startswith("missing_value") for r in sol)

    failures = failed_jobs(redis)
    assert set(failures) == {"never-landed", "bad-arguments"}
    assert "PayloadNotLandedError" in failures["never-landed"]
    assert "TypeError" in failures["bad-arguments"]
