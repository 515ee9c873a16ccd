"""The API's clock, injectable: minute and day budgets and the schedule follow the API, not us.

Credits reset on the API's minute, and "the still-open bar" is judged on the API's time, so every
fetcher decision reads a :class:`Clock`. Production follows the HTTP ``Date`` header (the sandbox
sets it from its own, possibly accelerated, clock); tests and benchmarks inject the sandbox clock
itself, and a ``sleep`` that advances it, so nothing waits on the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import requests


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of API time."""
        ...


class ApiDateClock:
    """Wall clock corrected by the offset the API's ``Date`` header shows (1 s resolution).

    ``speed`` > 1 follows an accelerated sandbox: API time advances ``speed`` times faster than
    ours from the last sync, and sleeps are shortened by the same factor.
    """

    def __init__(
        self,
        *,
        speed: float = 1.0,
        wall: Callable[[], float] = time.time,
        real_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed <= 0:
            raise ValueError("a frozen API clock cannot be waited on; speed must be > 0")
        self._lock = threading.Lock()
        self._wall = wall
        self._real_sleep = real_sleep
        self._speed = speed
        self._anchor_api = datetime.fromtimestamp(wall(), UTC)
        self._anchor_wall = wall()

    def observe(self, api_now: datetime) -> None:
        """Re-anchor on a ``Date`` header; keeps the later of the two so time never runs back."""
        with self._lock:
            ours = self._now_locked()
            # The header truncates to the second: only move when we are more than that off.
            if abs((api_now - ours).total_seconds()) >= 1.0:
                self._anchor_api = api_now
                self._anchor_wall = self._wall()

    def now(self) -> datetime:
        with self._lock:
            return self._now_locked()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._real_sleep(seconds / self._speed)

    def _now_locked(self) -> datetime:
        elapsed = (self._wall() - self._anchor_wall) * self._speed
        return self._anchor_api + timedelta(seconds=elapsed)


class SandboxLikeClock(Protocol):
    """What :class:`InProcessClock` needs of ``services.sandbox.clock.SandboxClock``."""

    def now(self) -> datetime: ...

    @property
    def speed(self) -> float: ...

    def advance(self, seconds: float) -> datetime: ...


class InProcessClock:
    """An in-process sandbox's clock (tests, benchmarks).

    A sleep waits ``seconds / speed`` real seconds on a running clock; on a frozen clock, and
    for waits of at least ``fast_forward_seconds`` of API time, it advances the clock instead,
    so idle hours between ticks cost no real time and a frozen test never hangs.
    """

    def __init__(
        self,
        clock: SandboxLikeClock,
        *,
        fast_forward_seconds: float | None = None,
        real_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._fast_forward = fast_forward_seconds
        self._real_sleep = real_sleep
        self.slept = 0.0  # API seconds waited, for tests and reports

    def now(self) -> datetime:
        return self._clock.now()

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.slept += seconds
        speed = self._clock.speed
        if speed == 0 or (self._fast_forward is not None and seconds >= self._fast_forward):
            self._clock.advance(seconds)
        else:
            self._real_sleep(seconds / speed)


def sandbox_speed(base_url: str, timeout: float) -> float | None:
    """The demo sandbox's clock speed from its admin endpoint; None where it does not answer."""
    try:
        answer = requests.get(f"{base_url}/__sandbox/clock", timeout=timeout)
        if answer.ok:
            return float(answer.json()["speed"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        pass
    return None
