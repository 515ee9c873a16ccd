"""Container healthchecks, cheap enough to run every few seconds (no pandas, no SQLAlchemy).

python -m marketpipe.health http URL              # the service answers HTTP (sandbox)
python -m marketpipe.health dashboard URL         # it answers HTTP and its database answers
python -m marketpipe.health worker QUEUE          # an RQ worker of this host is registered
python -m marketpipe.health redis | postgres [ROLE]
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

USAGE = __doc__ or ""


def beat(path: Path) -> None:
    """Record that the calling loop is alive (compose's healthchecks read the file's age)."""
    path.touch()
    os.utime(path)


def _http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our own URL)
        if response.status >= 400:
            raise RuntimeError(f"HTTP {response.status}")


def check(argv: list[str]) -> None:
    kind = argv[0] if argv else ""
    if kind == "http":
        _http(argv[1])
        return
    if kind == "dashboard":
        # Unhealthy until its database answers: the page would only show the notice.
        _http(argv[1])
        check(["postgres", "reader"])
        return
    # Imported here: the HTTP check needs none of it.
    from redis import Redis

    from marketpipe.settings import Settings

    settings = Settings()
    if kind == "postgres":
        from marketpipe.reach import check_postgres

        url = settings.role_url(argv[1]) if len(argv) > 1 else settings.admin_url  # type: ignore[arg-type]
        check_postgres(url)
    elif kind == "redis":
        Redis.from_url(settings.redis_url, socket_timeout=3).ping()
    elif kind == "worker":
        # Healthy when a worker of this host is registered for the queue (RQ heartbeats it).
        from rq import Queue, Worker

        redis = Redis.from_url(settings.redis_url, socket_timeout=3)
        hostname = socket.gethostname()
        workers = Worker.all(queue=Queue(argv[1], connection=redis))
        if not any(w.hostname == hostname for w in workers):
            raise RuntimeError(f"no {argv[1]} worker registered on {hostname}")
    else:
        raise SystemExit(USAGE)


if __name__ == "__main__":
    try:
        check(sys.argv[1:])
    except Exception as exc:
        sys.stderr.write(f"unhealthy: {exc}\n")
        raise SystemExit(1) from None
