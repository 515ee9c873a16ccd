from __future__ import annotations

import json

import pytest

from services.streamer.ticks import Control, Drop, Tick, classify

NOW = 1_800_000_000.0
KNOWN = {"AAPL", "BTC/USD"}


def price(**fields: object) -> str:
    event = {"event": "price", "symbol": "AAPL", "timestamp": int(NOW), "price": 261.5}
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not None})


def test_a_well_formed_tick_is_accepted_with_its_fields() -> None:
    result = classify(price(day_volume=1200), KNOWN, {}, NOW)
    assert result == Tick("AAPL", int(NOW), 261.5, 1200.0)


def test_crypto_ticks_need_no_day_volume() -> None:
    result = classify(price(symbol="BTC/USD", price=90000.5), KNOWN, {}, NOW)
    assert isinstance(result, Tick) and result.day_volume is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"event":"price","symbol":"AAPL"',  # truncated
        "[1, 2]",
        '{"symbol":"AAPL"}',
        price(symbol=""),
        price(price="abc"),
        price(price=-1),
        price(price=float("nan")).replace("NaN", '"NaN"'),
        price(timestamp="soon"),
        price(day_volume="many"),
        price(day_volume=-5),
        b"\xff\xfe",
    ],
)
def test_malformed_frames_are_dropped_as_malformed(raw: str | bytes) -> None:
    result = classify(raw, KNOWN, {}, NOW)
    assert isinstance(result, Drop) and result.reason == "malformed"


def test_a_symbol_not_subscribed_is_dropped() -> None:
    result = classify(price(symbol="ZZZZ"), KNOWN, {}, NOW)
    assert isinstance(result, Drop) and result.reason == "unknown_symbol"


def test_future_dated_ticks_beyond_the_tolerance_are_dropped() -> None:
    assert isinstance(classify(price(timestamp=int(NOW) + 30), KNOWN, {}, NOW), Tick)
    result = classify(price(timestamp=int(NOW) + 3600), KNOWN, {}, NOW)
    assert isinstance(result, Drop) and result.reason == "future"


def test_ticks_older_than_the_last_accepted_are_out_of_order_equal_times_are_not() -> None:
    last = {"AAPL": int(NOW)}
    assert isinstance(classify(price(), KNOWN, last, NOW), Tick)
    result = classify(price(timestamp=int(NOW) - 1), KNOWN, last, NOW)
    assert isinstance(result, Drop) and result.reason == "out_of_order"
    # another symbol's clock is its own
    assert isinstance(
        classify(price(symbol="BTC/USD", timestamp=int(NOW) - 1), KNOWN, last, NOW), Tick
    )


def test_other_events_go_to_the_connection() -> None:
    result = classify('{"event":"heartbeat","status":"ok"}', KNOWN, {}, NOW)
    assert isinstance(result, Control) and result.event == "heartbeat"
