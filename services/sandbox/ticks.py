"""Ticks of the price stream, derived from the same price path as the sandbox's bars.

Within one hourly bar (open ``T``, ``L`` minutes: 60, or 30 for a session's last half hour) the
ticks fall every ``tick_seconds`` from ``T``. Their prices are the model's minute path (the
``1min`` bars' opens, and the hour's close at its end) interpolated linearly, kept inside the
hour's low..high, with four anchors set exactly: the first tick is the hour's open, the last its
close, and the interior ticks nearest the path's top and bottom are the hour's high and low. So
the one-minute bars a stream client builds over an hour reproduce that hour's OHLC from
``/time_series`` exactly (same rounding), and every minute's prices stay on the model's path.

Stocks tick only in session (the XNYS calendar of the market model); crypto around the clock.
``day_volume`` (stocks) is the session's ``1min`` volumes summed up to the tick's minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

from services.sandbox.calendar import session_table
from services.sandbox.market import get_instrument, model_bars, round_prices

HOUR = 3600


@dataclass(frozen=True)
class HourTicks:
    """Every tick of one hourly bar: epoch seconds, prices and (stocks) day volume."""

    bar_open: int
    bar_end: int
    times: np.ndarray
    prices: np.ndarray
    day_volume: np.ndarray | None


def _utc(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def bar_bounds(symbol: str, moment: int) -> tuple[int, int] | None:
    """(open, end) epoch seconds of the hourly bar trading at ``moment``, or None (no session)."""
    instrument = get_instrument(symbol)
    if instrument is None:
        raise KeyError(symbol)
    table = session_table(instrument.calendar)
    session = int(np.searchsorted(table.open_s, moment, side="right")) - 1
    if session < 0 or moment >= int(table.close_s[session]):
        return None
    session_open, session_close = int(table.open_s[session]), int(table.close_s[session])
    bar_open = session_open + (moment - session_open) // HOUR * HOUR
    return bar_open, min(bar_open + HOUR, session_close)


def next_session_open(symbol: str, moment: int) -> int | None:
    """The first session open after ``moment`` (None past the calendar's end)."""
    instrument = get_instrument(symbol)
    if instrument is None:
        raise KeyError(symbol)
    table = session_table(instrument.calendar)
    index = int(np.searchsorted(table.open_s, moment, side="right"))
    return int(table.open_s[index]) if index < len(table) else None


@lru_cache(maxsize=4096)
def hour_ticks(symbol: str, bar_open: int, bar_end: int, tick_seconds: int) -> HourTicks:
    """The ticks of the hourly bar opening at ``bar_open`` (see the module docstring)."""
    instrument = get_instrument(symbol)
    if instrument is None:
        raise KeyError(symbol)
    hour = model_bars(symbol, "1h", _utc(bar_end), start=_utc(bar_open), outputsize=1)
    minutes = model_bars(symbol, "1min", _utc(bar_end), start=_utc(bar_open), outputsize=60)
    if len(hour) != 1 or int(hour.open_time[0]) != bar_open or len(minutes) == 0:
        raise ValueError(f"{symbol}: no hourly bar opens at {_utc(bar_open).isoformat()}")
    bar_o, bar_h = float(hour.open[0]), float(hour.high[0])
    bar_l, bar_c = float(hour.low[0]), float(hour.close[0])
    nodes = np.append(minutes.open, bar_c)  # the path at each whole minute and at the end
    count = (bar_end - bar_open) // tick_seconds
    offsets = np.arange(count, dtype=np.int64) * tick_seconds
    path = np.interp(offsets / 60.0, np.arange(len(nodes), dtype=np.float64), nodes)
    prices = round_prices(instrument, np.clip(path, bar_l, bar_h))
    prices[0], prices[-1] = bar_o, bar_c
    if count > 3:
        interior = path[1:-1]
        top, bottom = 1 + int(np.argmax(interior)), 1 + int(np.argmin(interior))
        if top == bottom:  # a flat path: any two distinct interior ticks will do
            top, bottom = 1, 2
        prices[top], prices[bottom] = bar_h, bar_l
    day_volume = None
    if minutes.volume is not None:
        table = session_table(instrument.calendar)
        session = int(np.searchsorted(table.open_s, bar_open, side="right")) - 1
        earlier = model_bars(
            symbol, "1min", _utc(bar_open), start=_utc(int(table.open_s[session])), outputsize=1440
        )
        start_volume = int(earlier.volume.sum()) if earlier.volume is not None else 0
        traded = np.concatenate([[0], np.cumsum(minutes.volume)])
        day_volume = start_volume + traded[np.minimum(offsets // 60, len(traded) - 1)]
    return HourTicks(bar_open, bar_end, bar_open + offsets, prices, day_volume)


class TickSource:
    """The ticks of one symbol, read forward in time window by window (cheap per window)."""

    def __init__(self, symbol: str, tick_seconds: int) -> None:
        self.symbol = symbol
        self.tick_seconds = tick_seconds
        self._hour: HourTicks | None = None

    def between(self, after: int, until: int) -> list[tuple[int, float, int | None]]:
        """Ticks with ``after < time <= until``: (epoch seconds, price, day volume or None)."""
        ticks: list[tuple[int, float, int | None]] = []
        moment = after + 1
        while moment <= until:
            hour = self._hour
            if hour is None or not hour.bar_open <= moment < hour.bar_end:
                bounds = bar_bounds(self.symbol, moment)
                if bounds is None:
                    following = next_session_open(self.symbol, moment)
                    if following is None:
                        break
                    moment = following
                    continue
                hour = self._hour = hour_ticks(self.symbol, *bounds, self.tick_seconds)
            first = int(np.searchsorted(hour.times, moment, side="left"))
            last = int(np.searchsorted(hour.times, until, side="right"))
            for index in range(first, last):
                volume = None if hour.day_volume is None else int(hour.day_volume[index])
                ticks.append((int(hour.times[index]), float(hour.prices[index]), volume))
            moment = hour.bar_end
        return ticks
