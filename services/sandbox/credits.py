"""Per-key API credit budgets, per minute and per day, on the sandbox clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

PRICING_URL = "https://twelvedata.com/pricing"


@dataclass(frozen=True)
class CreditDecision:
    """Outcome of charging one request; ``used``/``left`` are this minute's, as the headers say."""

    allowed: bool
    cost: int
    used: int
    left: int
    message: str = ""

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Api-Credits-Used", str(self.used)),
            ("Api-Credits-Left", str(self.left)),
            ("Api-Credits-Request", str(self.cost)),
        ]


@dataclass
class _Usage:
    minute: int = -1
    minute_used: int = 0
    day: int = -1
    day_used: int = 0


@dataclass(frozen=True)
class UsageSnapshot:
    minute_used: int
    day_used: int
    per_minute: int
    per_day: int


class CreditLedger:
    """Counts credits per key; a refused request is still counted, as the real API does."""

    def __init__(self, plan_for: Callable[[str], tuple[int, int]]) -> None:
        self._plan_for = plan_for
        self._lock = threading.Lock()
        self._usage: dict[str, _Usage] = {}

    def charge(self, api_key: str, cost: int, now: datetime) -> CreditDecision:
        per_minute, per_day = self._plan_for(api_key)
        with self._lock:
            usage = self._current(api_key, now)
            over_day = usage.day_used + cost > per_day
            over_minute = usage.minute_used + cost > per_minute
            usage.minute_used += cost
            usage.day_used += cost
            left = max(0, per_minute - usage.minute_used)
            if over_day:
                message = (
                    "You have run out of API credits for the day. "
                    f"{usage.day_used} API credits were used, with the current limit being "
                    f"{per_day}. Wait for the next day or consider switching to a higher tier "
                    f"plan at {PRICING_URL}"
                )
                return CreditDecision(False, cost, usage.minute_used, left, message)
            if over_minute:
                message = (
                    "You have run out of API credits for the current minute. "
                    f"{usage.minute_used} API credits were used, with the current limit being "
                    f"{per_minute}. Wait for the next minute or consider switching to a higher "
                    f"tier plan at {PRICING_URL}"
                )
                return CreditDecision(False, cost, usage.minute_used, left, message)
            return CreditDecision(True, cost, usage.minute_used, left)

    def peek(self, api_key: str, now: datetime) -> CreditDecision:
        """The current minute's figures without charging (for answers that cost nothing)."""
        per_minute, _ = self._plan_for(api_key)
        with self._lock:
            usage = self._current(api_key, now)
            return CreditDecision(
                True, 0, usage.minute_used, max(0, per_minute - usage.minute_used)
            )

    def snapshot(self, api_key: str, now: datetime) -> UsageSnapshot:
        per_minute, per_day = self._plan_for(api_key)
        with self._lock:
            usage = self._current(api_key, now)
            return UsageSnapshot(usage.minute_used, usage.day_used, per_minute, per_day)

    def reset(self) -> None:
        with self._lock:
            self._usage.clear()

    def _current(self, api_key: str, now: datetime) -> _Usage:
        usage = self._usage.setdefault(api_key, _Usage())
        timestamp = int(now.timestamp())
        minute, day = timestamp // 60, timestamp // 86400
        if minute != usage.minute:
            usage.minute, usage.minute_used = minute, 0
        if day != usage.day:
            usage.day, usage.day_used = day, 0
        return usage
