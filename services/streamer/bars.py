"""One-minute OHLC bars built from accepted ticks, with a bounded buffer of unwritten bars (pure).

Every bar a tick touched since the last successful write is *pending*; a write takes copies
and confirms them, so a bar that changed meanwhile stays pending. When the store is down the
pending bars wait, up to ``max_pending``: beyond that the oldest are dropped and counted
(``bars_dropped`` and the ``ticks_lost`` they held), never silently.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from services.streamer.ticks import Tick


@dataclass
class MinuteBar:
    symbol: str
    minute: int  # epoch seconds of the minute's start (UTC)
    open: float
    high: float
    low: float
    close: float
    ticks: int
    day_volume: float | None
    first_tick: int
    last_tick: int


def minute_of(timestamp: int) -> int:
    return timestamp - timestamp % 60


class MinuteBars:
    """The open bar of each symbol and every bar waiting to be written."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._current: dict[str, MinuteBar] = {}
        self._pending: OrderedDict[tuple[str, int], MinuteBar] = OrderedDict()
        self.bars_dropped = 0
        self.ticks_lost = 0

    def add(self, tick: Tick) -> None:
        """Fold an accepted (in-order) tick into its symbol's minute bar."""
        minute = minute_of(tick.timestamp)
        bar = self._current.get(tick.symbol)
        if bar is None or bar.minute != minute:
            bar = MinuteBar(tick.symbol, minute, tick.price, tick.price, tick.price, tick.price,
                            0, tick.day_volume, tick.timestamp, tick.timestamp)  # fmt: skip
            self._current[tick.symbol] = bar
        bar.high = max(bar.high, tick.price)
        bar.low = min(bar.low, tick.price)
        bar.close = tick.price
        bar.ticks += 1
        bar.last_tick = tick.timestamp
        if tick.day_volume is not None:
            bar.day_volume = tick.day_volume
        key = (tick.symbol, minute)
        if key not in self._pending:
            self._pending[key] = bar
            while len(self._pending) > self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self.bars_dropped += 1
                self.ticks_lost += oldest.ticks

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> list[MinuteBar]:
        """Copies of the pending bars, oldest first, for one write."""
        return [replace(bar) for bar in self._pending.values()]

    def written(self, bars: list[MinuteBar]) -> None:
        """Confirm a successful write: bars unchanged since :meth:`take` are no longer pending."""
        for bar in bars:
            key = (bar.symbol, bar.minute)
            current = self._pending.get(key)
            if current is not None and current.ticks == bar.ticks:
                del self._pending[key]
