"""A credit budget shared by every fetcher process through Redis, per API minute and API day.

Twelve Data counts credits per key per minute (and per day) and refuses a request that would
overdraw, while still counting it. So every request first takes its credits here: one Lua script
checks both budgets and takes up to what is asked, atomically across replicas. When nothing is
left the caller waits, on the injected API clock, for the next minute (or day) instead of being
refused. The API's own ``Api-Credits-Used``/``Api-Credits-Left`` headers correct the counters
(another client on the same key) and reveal the key's real per-minute plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from redis import Redis

from services.fetcher.clock import Clock

log = logging.getLogger("marketpipe.fetcher.limiter")

KEY_PREFIX: Final = "marketpipe:credits"
PLAN_TTL_SECONDS: Final = 86_400

_ACQUIRE: Final = """
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
local want, at_least = tonumber(ARGV[1]), tonumber(ARGV[2])
local grant = math.min(want, tonumber(ARGV[3]) - m, tonumber(ARGV[4]) - d)
if grant < at_least then return {0, m, d} end
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('INCRBY', KEYS[2], grant)
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {grant, m + grant, d + grant}
"""
# Raise (never lower) the minute's count to what the API says was used; the difference was
# spent by someone else on this key, so it counts against the day as well.
_SYNC: Final = """
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local used = tonumber(ARGV[1])
if used > m then
    redis.call('SET', KEYS[1], used, 'EX', ARGV[2])
    redis.call('INCRBY', KEYS[2], used - m)
    redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return m
"""
# Raise (never lower) the minute's count to the plan so nobody asks again this minute; unlike
# _SYNC nothing was spent, so the day is left alone.
_CLOSE_MINUTE: Final = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


# --- pure budget math (unit-tested) ------------------------------------------------------------


def minute_index(now: datetime) -> int:
    return int(now.timestamp()) // 60


def day_index(now: datetime) -> int:
    return int(now.timestamp()) // 86_400


def seconds_to_next_minute(now: datetime) -> float:
    return 60.0 - (now.timestamp() % 60.0)


def seconds_to_next_day(now: datetime) -> float:
    return 86_400.0 - (now.timestamp() % 86_400.0)


def wait_seconds(now: datetime, used_day: int, per_day: int, at_least: int, slack: float) -> float:
    """How long to wait when refused: to the next API day if the day is spent, else the minute."""
    if per_day - used_day < at_least:
        return seconds_to_next_day(now) + slack
    return seconds_to_next_minute(now) + slack


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``7 h 12 min``: a wait as a person reads it."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@dataclass(frozen=True)
class Grant:
    credits: int
    minute_used: int
    day_used: int
    waited: float  # API seconds spent waiting for it


class CreditLimiter:
    """Take credits before each request; wait (on ``clock``) when the budget is spent.

    ``guard`` seconds before a minute ends no credits are handed out: a request sent then could
    reach the API in the next minute, where it was not counted. ``slack`` seconds after a boundary
    absorb the difference between our clock and the API's (the Date header has 1 s resolution).
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        per_minute: int,
        per_day: int,
        guard: float = 2.0,
        slack: float = 1.0,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.configured_per_minute = per_minute
        self.per_day = per_day
        self.guard = guard
        self.slack = slack
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._sync = redis.register_script(_SYNC)
        self._close_minute = redis.register_script(_CLOSE_MINUTE)
        # This process's totals: a cycle's or a window's share is the difference across it.
        self.taken = 0
        self.waited = 0.0

    @property
    def per_minute(self) -> int:
        """The key's plan as the API last showed it (Used + Left), else the configured one."""
        seen = self.redis.get(f"{self.prefix}:plan-per-minute")
        return int(seen) if seen else self.configured_per_minute

    def _keys(self, now: datetime) -> list[str]:
        return [f"{self.prefix}:m:{minute_index(now)}", f"{self.prefix}:d:{day_index(now)}"]

    def acquire(self, want: int, *, at_least: int | None = None) -> Grant:
        """Take between ``at_least`` (default: all of ``want``) and ``want`` credits, waiting.

        ``at_least`` is capped by the plan (a bigger batch could never be granted whole).
        """
        if want < 1:
            raise ValueError(f"want {want} credits: at least 1")
        per_minute = self.per_minute
        need = max(1, min(want if at_least is None else at_least, per_minute, self.per_day))
        waited = 0.0
        while True:
            now = self.clock.now()
            if seconds_to_next_minute(now) < self.guard:
                pause = seconds_to_next_minute(now) + self.slack
                reason = "the API minute is ending (a request now could count in the next)"
            else:
                grant, used_m, used_d = (
                    int(x)
                    for x in self._acquire(
                        keys=self._keys(now),
                        args=[want, need, per_minute, self.per_day, 120, 2 * 86_400],
                    )
                )
                if grant:
                    self.taken += grant
                    self.waited += waited
                    return Grant(grant, used_m, used_d, waited)
                pause = wait_seconds(now, used_d, self.per_day, need, self.slack)
                if self.per_day - used_d < need:
                    reason = f"daily budget spent ({used_d} of {self.per_day} credits)"
                else:
                    reason = f"minute budget spent ({used_m} of {per_minute}, {need} needed)"
            # Every wait is one line with its reason and length; a day's wait is a warning.
            log.log(
                logging.WARNING if pause > 120 else logging.INFO,
                "waiting %s for credits: %s",
                duration_text(pause),
                reason,
            )
            self.clock.sleep(pause)
            waited += pause

    def observe(self, used: int | None, left: int | None, at: datetime, *, refused: bool) -> None:
        """Fold an answer's ``Api-Credits-Used`` / ``-Left`` headers into the shared counters."""
        if used is None:
            return
        if left is not None and not refused and used + left > 0:
            plan = used + left
            if plan != self.per_minute:
                log.info("the API shows a plan of %d credits per minute", plan)
            self.redis.set(f"{self.prefix}:plan-per-minute", plan, ex=PLAN_TTL_SECONDS)
        self._sync(keys=self._keys(at), args=[used, 120, 2 * 86_400])

    def spent(self, scope: str, at: datetime) -> None:
        """The API refused for lack of credits: the minute (or day) is over for everyone.

        A minute refusal closes only the minute. The day keeps counting what was really used:
        the refused request's own credits were taken by ``acquire`` (the API counts refused
        requests too) and other clients' by ``observe``; booking the minute's unused plan
        against the day would make one refusal look like a spent day (a plan above
        API_CREDITS_PER_DAY, or a refusal early in a minute, meant waiting for the next day).
        """
        keys = self._keys(at)
        if scope == "day":
            self.redis.set(keys[1], self.per_day, ex=2 * 86_400)
        self._close_minute(keys=keys[:1], args=[self.per_minute, 120])

    def usage(self, at: datetime | None = None) -> tuple[int, int]:
        """(credits taken this API minute, this API day)."""
        keys = self._keys(at or self.clock.now())
        minute, day = self.redis.mget(keys)
        return int(minute or 0), int(day or 0)
