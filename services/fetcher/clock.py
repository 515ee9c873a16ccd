"""The API's clock, injectable: minute and day budgets and the schedule follow the API, not us.

Credits reset on the API's minute, and "the still-open bar" is judged on the API's time, so every
fetcher decision reads a :class:`Clock`. Production follows the HTTP ``Date`` header, the only
clock the API shows; tests and benchmarks inject their own (tests/support/clock.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

# A header this far behind our reckoning means the API's clock was set back or slowed down.
RESYNC_SECONDS: Final = 2.0
DATE_RESOLUTION_SECONDS: Final = 1.0


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of API time."""
        ...


class ApiDateClock:
    """Our wall clock, set to the API's ``Date`` headers and running at the pace they show.

    The real API's clock runs at ours; a clock that runs faster (an accelerated test double)
    shows it in the headers too. The pace is measured from the first header of a run to the
    latest, at its slowest value the headers allow (one second of ``Date`` resolution, and the
    first request's round trip) and never below 1, so a sleep may end late but never early.
    A header behind our reckoning starts the measurement again.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        real_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._wall = wall
        self._real_sleep = real_sleep
        self._rate = 1.0
        self._first: tuple[datetime, float] | None = None  # (API time, earliest wall time)
        self._anchor_wall = wall()
        self._anchor_api = datetime.fromtimestamp(self._anchor_wall, UTC)

    @property
    def rate(self) -> float:
        """API seconds per wall second, as measured so far."""
        with self._lock:
            return self._rate

    def observe(self, api_now: datetime, *, round_trip: float = 0.0) -> None:
        """Follow one ``Date`` header of an answer that took ``round_trip`` wall seconds."""
        with self._lock:
            wall = self._wall()
            ours = self._now_locked(wall)
            # The header was written after the request left: judge it against our time then. At
            # 3600x a millisecond's round trip is 3.6 API seconds, and a resync drops the pace.
            sent = self._now_locked(wall - round_trip)
            if self._first is None or api_now < sent - timedelta(seconds=RESYNC_SECONDS):
                self._first = (api_now, wall - round_trip)
                self._rate = 1.0
                self._anchor_api, self._anchor_wall = api_now, wall
                return
            first_api, first_wall = self._first
            api_span = (api_now - first_api).total_seconds() - DATE_RESOLUTION_SECONDS
            if wall > first_wall:
                self._rate = max(1.0, api_span / (wall - first_wall))
            # The later of the two: our time never runs back within a measurement.
            self._anchor_api, self._anchor_wall = max(api_now, ours), wall

    def now(self) -> datetime:
        with self._lock:
            return self._now_locked(self._wall())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._real_sleep(seconds / self.rate)

    def _now_locked(self, wall: float) -> datetime:
        elapsed = (wall - self._anchor_wall) * self._rate
        return self._anchor_api + timedelta(seconds=elapsed)
