"""Jobs for worker tests, enqueued by dotted name like production jobs."""

from __future__ import annotations

_held: list[bytearray] = []


def hold_memory(megabytes: int) -> int:
    """Keep ``megabytes`` of touched memory alive in the worker's process, as a leak would."""
    _held.append(bytearray(megabytes * 2**20))
    return len(_held)
