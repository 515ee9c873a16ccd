"""A fetcher clock driven by an in-process sandbox's clock, so tests and benchmarks never wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol


class SandboxLikeClock(Protocol):
    """What :class:`InProcessClock` needs of ``services.sandbox.clock.SandboxClock``."""

    def now(self) -> datetime: ...

    @property
    def speed(self) -> float: ...

    def advance(self, seconds: float) -> datetime: ...


class InProcessClock:
    """An in-process sandbox's clock as the fetcher's :class:`~services.fetcher.clock.Clock`.

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
