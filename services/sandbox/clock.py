"""The sandbox's notion of "now": real, fixed, or accelerated, and settable at runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SandboxClock:
    """now = anchor + (monotonic elapsed since anchoring) x speed; speed 0 freezes time."""

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._anchor = _as_utc(start) if start is not None else datetime.now(UTC)
        self._anchor_monotonic = monotonic()
        self._speed = _check_speed(speed)

    def now(self) -> datetime:
        with self._lock:
            return self._now_locked()

    @property
    def speed(self) -> float:
        with self._lock:
            return self._speed

    def set(self, at: datetime, speed: float | None = None) -> None:
        """Jump to ``at``; keep the current speed unless one is given."""
        with self._lock:
            self._anchor = _as_utc(at)
            self._anchor_monotonic = self._monotonic()
            if speed is not None:
                self._speed = _check_speed(speed)

    def freeze(self, at: datetime | None = None) -> None:
        """Stop time at ``at`` (default: the current sandbox time)."""
        with self._lock:
            self._anchor = _as_utc(at) if at is not None else self._now_locked()
            self._anchor_monotonic = self._monotonic()
            self._speed = 0.0

    def advance(self, seconds: float) -> datetime:
        """Move time forward (or back, if negative) by ``seconds``; returns the new now."""
        with self._lock:
            self._anchor += timedelta(seconds=seconds)
            return self._now_locked()

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on without a jump."""
        with self._lock:
            self._anchor = self._now_locked()
            self._anchor_monotonic = self._monotonic()
            self._speed = _check_speed(speed)

    def state(self) -> dict[str, object]:
        with self._lock:
            now = self._now_locked()
            return {"now": now.isoformat(), "timestamp": now.timestamp(), "speed": self._speed}

    def _now_locked(self) -> datetime:
        elapsed = (self._monotonic() - self._anchor_monotonic) * self._speed
        return self._anchor + timedelta(seconds=elapsed)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _check_speed(speed: float) -> float:
    if not 0.0 <= speed <= 1_000_000:
        raise ValueError("speed must be within 0..1000000")
    return float(speed)
