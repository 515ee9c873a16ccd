from __future__ import annotations

import json

from marketpipe.settings import Settings
from services.streamer.service import Streamer

NOW = 1_800_000_000.0


def streamer(**settings: object) -> Streamer:
    defaults: dict[str, object] = {"symbols": "AAPL,BTC/USD,ETH/USD"}
    return Streamer(Settings(**(defaults | settings)), clock=lambda: NOW)


def frame(symbol: str, offset: int, value: float) -> str:
    return json.dumps({"event": "price", "symbol": symbol, "timestamp": int(NOW) + offset,
                       "price": value})  # fmt: skip


def test_live_symbols_default_to_all_configured_capped_by_the_plan() -> None:
    service = streamer(live_max_symbols=2)
    assert service.symbols == ("AAPL", "BTC/USD")
    assert service.over_cap == ("ETH/USD",)
    assert "ETH/USD" in json.loads(service.status()["failed"])
    assert streamer(live_symbols="ETH/USD").symbols == ("ETH/USD",)


def test_frames_are_counted_by_outcome_and_only_accepted_ones_reach_the_bars() -> None:
    service = streamer()
    for raw in (
        frame("BTC/USD", -10, 90_000.0),
        frame("BTC/USD", -20, 89_000.0),  # out of order
        frame("BTC/USD", 7200, 91_000.0),  # future
        frame("ZZZZ", 0, 1.0),
        "{not json",
        frame("AAPL", 0, 260.0),
    ):
        service.on_frame(raw)
    counters = json.loads(service.status()["counters"])
    assert counters["accepted"] == 2
    assert {k: v for k, v in counters.items() if k.startswith("dropped_")} == {
        "dropped_out_of_order": 1,
        "dropped_future": 1,
        "dropped_unknown_symbol": 1,
        "dropped_malformed": 1,
    }
    assert sorted((b.symbol, b.close) for b in service.bars.take()) == [
        ("AAPL", 260.0),
        ("BTC/USD", 90_000.0),
    ]


def test_a_refused_subscription_is_reported_once_and_left_out_of_resubscription() -> None:
    service = streamer()
    status = {"event": "subscribe-status", "status": "ok",
              "success": [{"symbol": "AAPL"}, {"symbol": "BTC/USD"}],
              "fails": [{"symbol": "ETH/USD"}]}  # fmt: skip
    service.on_frame(json.dumps(status))
    service.on_frame(json.dumps(status))
    assert service.state == "subscribed"
    assert service.subscribed == {"AAPL", "BTC/USD"}
    assert list(service.failed) == ["ETH/USD"]
    assert service._subscribable() == ["AAPL", "BTC/USD"]
    service.on_frame(frame("ETH/USD", 0, 3000.0))
    assert json.loads(service.status()["counters"])["dropped_unknown_symbol"] == 1


def test_the_status_never_carries_the_key() -> None:
    service = streamer(twelve_data_api_key="s3cret-key")
    assert "s3cret" not in json.dumps(service.status())
