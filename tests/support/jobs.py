"""Jobs for worker tests, enqueued by dotted name like production jobs."""

from __future__ import annotations

import time

from rq.timeouts import JobTimeoutException

_held: list[bytearray] = []


def hold_memory(megabytes: int) -> int:
    """Keep ``megabytes`` of touched memory alive in the worker's process, as a leak would."""
    _held.append(bytearray(megabytes * 2**20))
    return len(_held)


def outlive_timeout(seconds: float) -> None:
    """Sleep ``seconds``, and as long again when the job's timeout interrupts: a stuck job."""
    try:
        time.sleep(seconds)
    except JobTimeoutException:
        time.sleep(seconds)
