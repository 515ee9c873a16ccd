"""Container healthchecks: `python -m marketpipe.health postgres|redis|worker QUEUE|http URL`."""

from __future__ import annotations

import socket
import sys
import urllib.request

from marketpipe import broker
from marketpipe.db import connect
from marketpipe.settings import Settings


def check(argv: list[str]) -> None:
    kind = argv[0] if argv else ""
    if kind == "http":
        with urllib.request.urlopen(argv[1], timeout=3) as response:  # noqa: S310 (our own URL)
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}")
        return
    settings = Settings()
    if kind == "postgres":
        connect(settings.admin_url, connect_timeout=3).close()
    elif kind == "redis":
        broker.redis_from(settings).ping()
    elif kind == "worker":
        # Healthy when a worker of this host is registered for the queue (RQ heartbeats it).
        from rq import Worker

        redis = broker.redis_from(settings)
        hostname = socket.gethostname()
        workers = Worker.all(queue=broker.queue(argv[1], redis, settings))
        if not any(w.hostname == hostname for w in workers):
            raise RuntimeError(f"no {argv[1]} worker registered on {hostname}")
    else:
        raise SystemExit("usage: python -m marketpipe.health postgres|redis|worker QUEUE|http URL")


if __name__ == "__main__":
    try:
        check(sys.argv[1:])
    except Exception as exc:
        sys.stderr.write(f"unhealthy: {exc}\n")
        raise SystemExit(1) from None
