"""Starts an RQ worker the way every marketpipe worker needs it.

Heavy modules are imported by the caller *before* this runs, so every forked work horse inherits
them (a job importing pandas after the fork pays ~0.2 s); database connections are opened inside
jobs, after the fork, so no socket is ever shared between processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

from rq import Worker
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.settings import load_settings


def run_worker(queue_name: str, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    redis = broker.redis_from(settings)
    worker = Worker(
        [broker.queue(queue_name, redis, settings)],
        connection=redis,
        serializer=JSONSerializer,
        name=f"{queue_name}.{socket.gethostname()}.{os.getpid()}",
    )
    # The scheduler moves retried jobs back onto the queue when their backoff has passed.
    worker.work(burst=args.burst, with_scheduler=True, logging_level=settings.log_level)
