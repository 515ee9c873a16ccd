"""The recovery commands, run as an operator would: `python -m services.ops ...`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis

from marketpipe import broker
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.handoff import hand_on
from services.sandbox.app import SandboxServer
from services.transformer.jobs import load_job_id
from tests.integration.conftest import (
    FROZEN_AT,
    REPO_ROOT,
    run_pipeline,
    run_service,
    settings_env,
)
from tests.integration.loader.conftest import put_batch
from tests.integration.reliability.conftest import (
    drain_bursts,
    failed_jobs,
    query,
    table_rows,
)
from tests.support.scratch import empty_claimed_redis
from tests.unit.transformer.payloads import STOCK_META, bar, payload, stock_session_times

# A zone the installed tz database does not know yet, as America/Ciudad_Juarez was until tzdata
# 2022g: the vendor is ahead of us.
NEW_ZONE = "America/Nueva_Zona"


def test_requeue_failed_gives_failed_jobs_another_run(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "SOL/USD", 24)
    hidden = "hidden-batch"
    redis.rename(broker._batch_key(batch_id), hidden)  # as if the blob had expired
    # No retries: the job fails once and stays in the failed-job registry.
    broker.queue(LOAD_QUEUE, redis, clean_db).enqueue(
        LOAD_JOB, args=(batch_id,), job_id=load_job_id(batch_id)
    )
    env = settings_env(clean_db)
    run_service("services.loader", "--burst", env=env)
    assert "MissingBlobError" in failed_jobs(redis)[f"load-{batch_id}"]

    redis.rename(hidden, broker._batch_key(batch_id))  # the cause is fixed
    out = run_service("services.ops", "requeue-failed", "--queue", "marketpipe-load", env=env)
    assert "marketpipe-load: 1 failed job(s) requeued" in out
    run_service("services.loader", "--burst", env=env)

    assert failed_jobs(redis) == {}
    assert query(clean_db, "SELECT count(*) FROM marketpipe.bars") == [(24,)]


def test_replay_rebuilds_a_window_from_raw_payloads_without_the_api(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer
) -> None:
    settings = pipeline_settings
    run_pipeline(settings)
    before = {t: table_rows(settings, t) for t in ("bars", "daily_bars", "watermarks")}
    assert before["bars"]

    # Damage: a bad deploy zeroed one symbol's closes, and Redis lost every blob.
    conn_rows = query(
        settings,
        "WITH d AS (UPDATE marketpipe.bars SET close = 0, sma_20 = NULL"
        " WHERE symbol = 'AAPL' RETURNING 1) SELECT count(*) FROM d",
    )
    assert conn_rows[0][0] > 0
    empty_claimed_redis(redis)
    credits = sandbox.credits.snapshot("marketpipe-sandbox", sandbox.clock.now()).day_used

    env = settings_env(settings)
    window = ("--since", FROZEN_AT.date().isoformat(), "--until", "2026-03-12T00:00:00")
    dry = run_service("services.ops", "replay", *window, "--symbols", "aapl", "--dry-run", env=env)
    assert "would replay 1 payload(s)" in dry and "AAPL: 1" in dry
    assert broker.queue("marketpipe-transform", redis, settings).count == 0
    out = run_service("services.ops", "replay", *window, "--symbols", "AAPL", env=env)
    assert "replaying 1 payload(s)" in out
    drain_bursts(settings)

    assert {t: table_rows(settings, t) for t in before} == before
    assert failed_jobs(redis) == {}
    assert sandbox.credits.snapshot("marketpipe-sandbox", sandbox.clock.now()).day_used == credits


def test_replay_recovers_a_payload_whose_transform_failed(
    clean_db: Settings, redis: Redis, tmp_path: Path
) -> None:
    fetched = datetime(2026, 3, 9, tzinfo=UTC)
    meta = {**STOCK_META, "symbol": "NUEV", "exchange_timezone": NEW_ZONE, "exchange": "BMV"}
    times = stock_session_times(datetime(2026, 3, 2), 5)
    values = [bar(t, 50 + i) for i, t in enumerate(times)]
    poison = payload("NUEV", meta, values, fetched_at=fetched)
    # Exactly what the fetcher does with an answer: land it raw, then enqueue its transform.
    assert hand_on(build_context(clean_db, redis=redis), poison)
    drain_bursts(clean_db)

    assert query(clean_db, "SELECT count(*) FROM marketpipe.bars") == [(0,)]
    reasons = query(clean_db, "SELECT payload_id, reason FROM marketpipe.quarantine")
    assert [(p, NEW_ZONE in r) for p, r in reasons] == [(poison.payload_id, True)]
    assert query(clean_db, "SELECT status FROM marketpipe.pipeline_runs") == [("failed",)]
    assert query(clean_db, "SELECT payload_id FROM marketpipe.raw_payloads") == [
        (poison.payload_id,)
    ]

    # The fix: a tz database that has the zone (here the rules of Mexico City under its name).
    zones = tmp_path / "zoneinfo"
    (zones / "America").mkdir(parents=True)
    shutil.copy("/usr/share/zoneinfo/America/Mexico_City", zones / NEW_ZONE)
    env = settings_env(clean_db, PYTHONTZPATH=zones)
    out = run_service(
        "services.ops", "replay", "--since", "2026-03-09", "--until", "2026-03-10", env=env
    )
    assert "replaying 1 payload(s)" in out
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)

    assert query(clean_db, "SELECT symbol, count(*) FROM marketpipe.bars GROUP BY 1") == [
        ("NUEV", len(times))
    ]
    assert query(clean_db, "SELECT DISTINCT exchange_timezone FROM marketpipe.bars") == [
        (NEW_ZONE,)
    ]
    assert query(clean_db, "SELECT status FROM marketpipe.pipeline_runs") == [("ok",)]
    assert failed_jobs(redis) == {}


def test_status_prints_the_fetch_cycles_the_loads_and_the_queues(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer
) -> None:
    settings = pipeline_settings
    empty = run_service("services.ops", "status", env=settings_env(settings))
    assert "none yet: the fetcher has not run" in empty
    run_pipeline(settings)
    out = run_service("services.ops", "status", env=settings_env(settings))
    lines = out.splitlines()
    header = lines[1].split()
    assert header[:4] == ["finished_at", "status", "run_id", "asked"]
    cycle = dict(zip(header[1:], lines[2].split()[2:], strict=False))  # the date took 2 cells
    symbols = len(settings.symbols)
    assert cycle["status"] == "ok" and cycle["run_id"].startswith("fetch:1h:once:")
    assert (cycle["asked"], cycle["symbols_new"]) == (str(symbols), str(symbols))
    assert int(cycle["credits"]) >= symbols
    loads = lines[lines.index("Loads in the last 24 h") + 2].split()
    assert loads[:2] == ["ok", str(symbols)]
    queues = lines[lines.index("Queues") + 1 :]
    assert [q.split()[0] for q in queues[1:]] == ["marketpipe-transform", "marketpipe-load"]
    assert all(q.split()[1:] == ["0", "0", "0", "0"] for q in queues[1:])


def test_restate_on_demand_refetches_and_swaps_a_series(
    pipeline_settings: Settings, redis: Redis
) -> None:
    settings = pipeline_settings
    run_pipeline(settings)
    env = settings_env(settings)
    stored = query(
        settings, "SELECT min(bar_time), count(*) FROM marketpipe.bars WHERE symbol = 'ETH/USD'"
    )
    others = table_rows(settings, "bars")
    out = run_service("services.ops", "restate", "--symbol", "ETH/USD", env=env)
    assert "restatement #" in out and "ETH/USD 1h recorded" in out
    again = run_service("services.ops", "restate", "--symbol", "ETH/USD", env=env)
    assert "already open" in again
    [(kind, status, history_from)] = query(
        settings, "SELECT kind, status, history_from FROM marketpipe.restatements"
    )
    assert (kind, status, history_from) == ("requested", "detected", stored[0][0])

    run_pipeline(settings)  # the fetcher re-fetches, the workers swap
    [(status, removed, message)] = query(
        settings, "SELECT status, bars_removed, message FROM marketpipe.restatements"
    )
    assert (status, removed) == ("restated", 0), message
    # The re-fetch starts at the first stored bar's day and has every indicator's warm-up.
    [(first, count)] = query(
        settings, "SELECT min(bar_time), count(*) FROM marketpipe.bars WHERE symbol = 'ETH/USD'"
    )
    assert first == stored[0][0].replace(hour=0) and count >= stored[0][1]
    assert [r for r in table_rows(settings, "bars") if "ETH/USD" not in r] == [
        r for r in others if "ETH/USD" not in r
    ]
    assert failed_jobs(redis) == {}
    # The run log has the restatement's row: opened by the fetcher, closed by the swap.
    [(run_status, symbol, windows, credits, replaced, rows_removed)] = query(
        settings,
        "SELECT status, symbol, windows, credits, rows_loaded, rows_removed"
        " FROM marketpipe.pipeline_runs WHERE component = 'restatement'",
    )
    assert (run_status, symbol, rows_removed) == ("ok", "ETH/USD", 0)
    assert windows >= 1 and credits >= windows and replaced >= 0
    status = run_service("services.ops", "status", env=env).splitlines()
    section = status.index("Restatements: re-fetch and swap (newest 10)")
    assert status[section + 1].split()[:6] == [
        "finished_at",
        "status",
        "symbol",
        "interval",
        "windows",
        "credits",
    ]
    assert status[section + 2].split()[2:5] == ["ok", "ETH/USD", "1h"]

    refused = subprocess.run(
        [sys.executable, "-m", "services.ops", "restate", "--symbol", "META"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "no stored bars of META 1h" in refused.stderr
