"""A database outage: jobs retry with backoff, the worker survives, every row arrives.

The shared PostgreSQL cannot be stopped, so the loader reaches it through a TCP proxy started
here; cutting the proxy closes its port and every open connection, as a server restart does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis
from rq import Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe.settings import Settings
from services.transformer.jobs import load_job_id
from tests.integration.loader.conftest import count_rows, enqueue_load, put_batch, wait_for

BARS = 24
RETRIES = 20


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database; ``cut`` and ``restore`` simulate an outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None

    def restore(self) -> None:
        self._stop.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                with self._lock:
                    self._open += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(clean_db: Settings) -> Iterator[TcpProxy]:
    url = clean_db.admin_url
    tcp = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    tcp.restore()
    yield tcp
    tcp.cut()


def test_the_loader_rides_out_a_database_outage(
    clean_db: Settings, redis: Redis, proxy: TcpProxy, start_loader: Callable[..., Any]
) -> None:
    through_proxy = clean_db.model_copy(
        update={
            "database_url": clean_db.admin_url.set(port=proxy.port).render_as_string(
                hide_password=False
            )
        }
    )
    worker = start_loader(through_proxy)
    # Short backoff so the test is quick; production uses RETRY_INTERVALS (5 s ... 5 min).
    retry = Retry(max=RETRIES, interval=1)
    first = put_batch(redis, clean_db, "BTC/USD", BARS)
    enqueue_load(redis, clean_db, first, retry=retry)
    wait_for(lambda: count_rows(clean_db)["bars"] == BARS, 60, "the first batch")

    proxy.cut()
    later = [put_batch(redis, clean_db, s, BARS) for s in ("ETH/USD", "SOL/USD", "ADA/USD")]
    for batch_id in later:
        enqueue_load(redis, clean_db, batch_id, retry=retry)

    def failed_and_rescheduled() -> bool:
        jobs = Job.fetch_many(
            [load_job_id(b) for b in later], connection=redis, serializer=JSONSerializer
        )
        return all(j is not None and (j.retries_left or 0) < RETRIES for j in jobs)

    wait_for(failed_and_rescheduled, 60, "every job to fail against the cut database")
    assert count_rows(clean_db)["bars"] == BARS  # nothing got through the outage

    proxy.restore()
    wait_for(lambda: count_rows(clean_db)["bars"] == 4 * BARS, 90, "every row after the outage")
    assert worker.poll() is None, "the worker process died"
    assert count_rows(clean_db)["raw_payloads"] == 4
