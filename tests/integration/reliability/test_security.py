"""Nobody gets in where they do not belong: pickled jobs, hostile symbols, the read-only side.

The API key grep (logs, jobs, Redis, every table) is the fetcher's test:
tests/integration/fetcher/test_schedule_backfill_secrets.py. Role privileges are in
tests/integration/marketpipe/test_migrate.py; compose in tests/unit/deploy/test_compose.py.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from redis import Redis
from rq import Queue
from sqlalchemy.exc import DBAPIError

from marketpipe.db import reader_engine
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import SYMBOL_PATTERN, Settings
from services.sandbox.app import SandboxServer
from tests.integration.conftest import REPO_ROOT, run_pipeline, run_service, settings_env
from tests.integration.reliability.conftest import (
    drain_bursts,
    failed_jobs,
    push_transform,
    query,
)
from tests.unit.transformer.payloads import CRYPTO_META, bar, hourly_times, payload

HOSTILE = "BTC/USD'); DROP TABLE marketpipe.bars;--"


class _MkdirOnUnpickle:
    """Unpickling this object creates a directory: proof that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@pytest.mark.parametrize(
    ("queue_name", "module"),
    [(TRANSFORM_QUEUE, "services.transformer"), (LOAD_QUEUE, "services.loader")],
)
def test_a_pickled_job_is_failed_without_being_unpickled_or_run(
    base_settings: Settings, redis: Redis, tmp_path: Path, queue_name: str, module: str
) -> None:
    unpickled, ran = tmp_path / "unpickled", tmp_path / "ran"
    # RQ's default serializer is pickle: what an attacker with Redis access would enqueue.
    hostile = Queue(queue_name, connection=redis)
    hostile.enqueue("os.mkdir", str(ran), _MkdirOnUnpickle(unpickled), job_id="pickled")
    # RQ stores job data zlib-compressed; inside is a pickle (protocol marker 0x80).
    data = zlib.decompress(redis.hget("rq:job:pickled", "data"))
    assert data[:1] == b"\x80"

    run_service(module, "--burst", env=settings_env(base_settings))

    assert not unpickled.exists() and not ran.exists()
    failures = failed_jobs(redis)
    assert "DeserializationError" in failures["pickled"]
    # And the test's own premise: this blob really does run code when unpickled.
    pickle.loads(data)
    assert unpickled.exists()


def test_forged_payloads_with_hostile_symbols_are_quarantined_not_loaded(
    clean_db: Settings, redis: Redis
) -> None:
    fetched = datetime(2026, 3, 2, tzinfo=UTC)
    values = [bar(t, 100 + i) for i, t in enumerate(hourly_times(datetime(2026, 3, 1), 24))]
    good = payload("ETH/USD", CRYPTO_META, values, fetched_at=fetched)
    # The payload's own symbol is hostile (meta agrees, so only the symbol check stops it).
    forged = payload(HOSTILE, CRYPTO_META, values, fetched_at=fetched)
    # A valid payload symbol whose meta names a hostile one.
    meta_lie = good.model_copy(
        update={
            "payload_id": "meta-lie",
            "body": {**good.body, "meta": {**good.body["meta"], "symbol": HOSTILE}},
        }
    )
    for item in (good, forged, meta_lie):
        push_transform(redis, clean_db, item)
    drain_bursts(clean_db)

    assert query(clean_db, "SELECT DISTINCT symbol FROM marketpipe.bars") == [("ETH/USD",)]
    reasons = dict(query(clean_db, "SELECT payload_id, reason FROM marketpipe.quarantine"))
    assert reasons[forged.payload_id].startswith("invalid_symbol")
    assert reasons["meta-lie"].startswith("unknown_shape: meta symbol")
    assert failed_jobs(redis) == {}
    for table in ("bars", "daily_bars", "watermarks"):
        symbols = query(clean_db, f"SELECT DISTINCT symbol FROM marketpipe.{table}")
        assert all(SYMBOL_PATTERN.fullmatch(s) for (s,) in symbols), table


class TamperingProxy:
    """Forwards to the sandbox and plants hostile symbols in /time_series batch answers: an
    extra hostile key, and a hostile meta symbol inside the answer for ``victim``."""

    def __init__(self, upstream: str, victim: str) -> None:
        self.upstream, self.victim = upstream, victim
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = requests.get(
                    proxy.upstream + self.path,
                    headers={"Authorization": self.headers.get("Authorization", "")},
                    timeout=10,
                )
                body = answer.content
                if self.path.startswith("/time_series") and answer.status_code == 200:
                    body = json.dumps(proxy.tamper(answer.json())).encode()
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tamper(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.victim not in body:
            return body
        victim = body[self.victim]
        body[HOSTILE] = json.loads(json.dumps(victim))
        victim["meta"]["symbol"] = HOSTILE
        return body

    def __enter__(self) -> TamperingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tampering_proxy(sandbox: SandboxServer) -> Iterator[TamperingProxy]:
    with TamperingProxy(sandbox.url, "BTC/USD") as proxy:
        yield proxy


def test_a_hostile_symbol_inside_an_api_batch_answer_is_quarantined_not_loaded(
    pipeline_settings: Settings, redis: Redis, tampering_proxy: TamperingProxy
) -> None:
    settings = pipeline_settings.model_copy(update={"twelve_data_base_url": tampering_proxy.url})
    run_pipeline(settings)

    loaded = {s for (s,) in query(settings, "SELECT DISTINCT symbol FROM marketpipe.bars")}
    assert loaded == set(settings.symbols) - {"BTC/USD"}  # the others flowed
    reasons = query(settings, "SELECT DISTINCT symbol, reason FROM marketpipe.quarantine")
    assert reasons == [("BTC/USD", f"unknown_shape: meta symbol {HOSTILE.upper()} is not BTC/USD")]
    assert query(
        settings, "SELECT count(*) FROM marketpipe.raw_payloads WHERE symbol = %s", HOSTILE
    ) == [(0,)]
    assert failed_jobs(redis) == {}


def test_the_dashboard_engine_cannot_write(clean_db: Settings) -> None:
    with (
        pytest.raises(DBAPIError, match=r"permission denied|read-only transaction"),
        reader_engine(clean_db).begin() as conn,
    ):
        conn.execute(sqlalchemy.text("DELETE FROM marketpipe.bars"))


def test_the_dashboard_code_only_ever_uses_the_reader_engine() -> None:
    sources = {p: p.read_text() for p in (REPO_ROOT / "services" / "dashboard").glob("*.py")}
    for path, text in sources.items():
        for writer_access in ('role_url("loader")', "admin_url", "engine_for(", "db.connect("):
            assert writer_access not in text, (path.name, writer_access)
    assert any("reader_engine" in text for text in sources.values())
