from __future__ import annotations

from services.streamer.bars import MinuteBars, minute_of
from services.streamer.ticks import Tick

T0 = 1_800_000_000 - 1_800_000_000 % 60


def tick(offset: int, price: float, symbol: str = "BTC/USD") -> Tick:
    return Tick(symbol, T0 + offset, price, None)


def test_ticks_of_a_minute_make_one_ohlc_bar() -> None:
    bars = MinuteBars(max_pending=10)
    for offset, value in ((0, 10.0), (5, 12.0), (20, 9.0), (59, 11.0)):
        bars.add(tick(offset, value))
    (bar,) = bars.take()
    assert (bar.minute, bar.open, bar.high, bar.low, bar.close, bar.ticks) == (
        T0,
        10.0,
        12.0,
        9.0,
        11.0,
        4,
    )
    assert (bar.first_tick, bar.last_tick) == (T0, T0 + 59)


def test_a_new_minute_starts_a_new_bar_and_keeps_the_old_one_pending() -> None:
    bars = MinuteBars(max_pending=10)
    bars.add(tick(10, 1.0))
    bars.add(tick(70, 2.0))
    taken = bars.take()
    assert [b.minute for b in taken] == [T0, T0 + 60]
    assert minute_of(T0 + 119) == T0 + 60


def test_a_written_bar_stays_pending_if_it_changed_after_the_take() -> None:
    bars = MinuteBars(max_pending=10)
    bars.add(tick(0, 1.0))
    bars.add(tick(61, 1.0, "ETH/USD"))
    taken = bars.take()
    bars.add(tick(1, 3.0))  # the BTC minute moved on while the write ran
    bars.written(taken)
    (left,) = bars.take()
    assert (left.symbol, left.ticks, left.high) == ("BTC/USD", 2, 3.0)
    bars.written([left])
    assert bars.pending == 0


def test_the_buffer_is_bounded_dropping_and_counting_the_oldest_bars() -> None:
    bars = MinuteBars(max_pending=3)
    for minute in range(5):
        bars.add(tick(minute * 60, 1.0))
        bars.add(tick(minute * 60 + 1, 2.0))
    assert bars.pending == 3
    assert [b.minute for b in bars.take()] == [T0 + 120, T0 + 180, T0 + 240]
    assert (bars.bars_dropped, bars.ticks_lost) == (2, 4)
