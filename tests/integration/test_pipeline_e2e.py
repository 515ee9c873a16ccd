"""The whole pipeline on real processes: sandbox over HTTP, fetcher, RQ workers, PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import psycopg2
import requests
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from marketpipe.queues import LOAD_QUEUE, TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import DEFAULT_SYMBOLS, Settings
from services.sandbox.app import SandboxServer
from services.transformer.jobs import load_job_id
from tests.integration.conftest import OUTPUTSIZE, run_pipeline, run_service, settings_env
from tests.support.sql import query as run_query

TABLES = ("bars", "daily_bars", "raw_payloads", "quarantine", "pipeline_runs", "watermarks")


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    conn = psycopg2.connect(settings.database_url)
    tables = {}
    with conn, conn.cursor() as cur:
        for table in TABLES:
            # The fetcher's own run rows record every cycle, one that found nothing new too.
            where = " WHERE component = 'loader'" if table == "pipeline_runs" else ""
            cur.execute(f"SELECT * FROM marketpipe.{table}{where} ORDER BY 1, 2, 3")
            tables[table] = cur.fetchall()
    conn.close()
    return tables


def query(settings: Settings, statement: str, *params: object) -> list[tuple]:
    return run_query(settings.database_url, statement, *params)


def test_one_cycle_lands_exact_rows_and_a_replay_changes_nothing(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer
) -> None:
    settings = pipeline_settings
    run_pipeline(settings)

    for name in (TRANSFORM_QUEUE, LOAD_QUEUE):
        failed = FailedJobRegistry(name, connection=redis, serializer=JSONSerializer)
        assert failed.count == 0, [failed.get_job_ids()]

    counts = dict(query(settings, "SELECT symbol, count(*) FROM marketpipe.bars GROUP BY symbol"))
    assert counts == {symbol: OUTPUTSIZE for symbol in DEFAULT_SYMBOLS}
    assert query(settings, "SELECT count(*) FROM marketpipe.quarantine") == [(0,)]
    runs = query(
        settings,
        "SELECT component, status, count(*) FROM marketpipe.pipeline_runs GROUP BY 1, 2 ORDER BY 1",
    )
    # A row per payload loaded, and the fetch cycle's own row.
    assert runs == [("fetcher", "ok", 1), ("loader", "ok", len(DEFAULT_SYMBOLS))]
    sources = query(settings, "SELECT DISTINCT source FROM marketpipe.raw_payloads")
    assert sources == [("demo",)]

    # One known close, read from the API independently of the pipeline.
    answer = requests.get(
        f"{sandbox.url}/time_series",
        params={"symbol": "AAPL", "interval": "1h", "outputsize": 3, "timezone": "UTC"},
        headers={"Authorization": f"apikey {settings.api_key.get_secret_value()}"},
        timeout=10,
    ).json()
    bar = answer["values"][1]  # the newest complete bar
    stored = query(
        settings,
        "SELECT close, volume, asset_class, exchange FROM marketpipe.bars"
        " WHERE symbol = 'AAPL' AND bar_time = %s",
        datetime.fromisoformat(bar["datetime"]).replace(tzinfo=UTC),
    )
    assert stored == [
        (float(bar["close"]), float(bar["volume"]), "stock", answer["meta"]["exchange"])
    ]

    # Crypto has no volume: NULL, never 0.
    assert query(
        settings,
        "SELECT count(*) FROM marketpipe.bars WHERE symbol = 'BTC/USD' AND volume IS NOT NULL",
    ) == [(0,)]

    # SMA 20 recomputed here from the stored closes.
    closes = query(
        settings,
        "SELECT bar_time, close, sma_20, sma_50 FROM marketpipe.bars"
        " WHERE symbol = 'ETH/USD' ORDER BY bar_time",
    )
    assert all(row[2] is None for row in closes[:19])
    for i in range(19, len(closes)):
        expected = sum(row[1] for row in closes[i - 19 : i + 1]) / 20
        assert math.isclose(closes[i][2], expected, rel_tol=1e-12)
    assert closes[48][3] is None and closes[49][3] is not None

    before = snapshot(settings)
    assert len(before["bars"]) == OUTPUTSIZE * len(DEFAULT_SYMBOLS)

    # The same cycle again (same sandbox time): nothing new is enqueued, nothing changes; the
    # run log says so.
    run_pipeline(settings)
    assert snapshot(settings) == before
    cycles = query(
        settings,
        "SELECT status, symbols_asked, symbols_new FROM marketpipe.pipeline_runs"
        " WHERE component = 'fetcher' ORDER BY finished_at",
    )
    assert cycles == [("ok", 8, 8), ("no_data", 8, 0)]

    # Replaying every transform job (and so every load) changes nothing either: same rows,
    # same loaded_at, and every load job counts 0 bars changed.
    transform = Queue(TRANSFORM_QUEUE, connection=redis, serializer=JSONSerializer)
    payload_ids = [p for (p,) in query(settings, "SELECT payload_id FROM marketpipe.raw_payloads")]
    for payload_id in payload_ids:
        transform.enqueue(TRANSFORM_JOB, args=(payload_id,), job_id=f"replay-{payload_id}")
    env = settings_env(settings)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    assert snapshot(settings) == before
    loads = Job.fetch_many(
        [load_job_id(p) for p in payload_ids], connection=redis, serializer=JSONSerializer
    )
    assert [job.return_value()["bars_changed"] for job in loads if job] == [0] * len(payload_ids)
