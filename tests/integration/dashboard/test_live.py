"""The live strip, the live candle and the streamer's health, from what a streamer left in Redis."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from redis import Redis
from streamlit.testing.v1 import AppTest

from marketpipe.live import LATEST_KEY, STATUS_KEY, LatestTick
from marketpipe.settings import Settings
from services.dashboard import theme
from tests.integration.conftest import FROZEN_AT

OpenApp = Callable[..., AppTest]


def publish(settings: Settings, ticks: dict[str, LatestTick], state: str = "subscribed") -> None:
    redis = Redis.from_url(settings.redis_url)
    if ticks:
        redis.hset(LATEST_KEY, mapping={s: t.to_json() for s, t in ticks.items()})
    redis.hset(
        STATUS_KEY,
        mapping={
            "state": state,
            "subscribed": json.dumps(sorted(ticks)),
            "failed": json.dumps({"SOL/USD": "subscription refused by the stream"}),
            "ticks_per_minute": "120",
            "counters": json.dumps({"accepted": 240, "dropped_malformed": 1}),
            "last_error": "ConnectionClosedError: no close frame received or sent",
            "stream": "ws://127.0.0.1:8091",
            "updated_at": f"{time.time():.3f}",
        },
    )
    redis.close()


def values(encoded: Any) -> list[float]:
    """A trace's numbers, whether plain JSON or Plotly's typed-array encoding."""
    if isinstance(encoded, dict):
        raw = base64.b64decode(encoded["bdata"])
        return [float(v) for v in np.frombuffer(raw, dtype=encoded["dtype"])]
    return [float(v) for v in encoded]


def strip(app: AppTest) -> dict[str, tuple[str, str]]:
    """symbol -> (label badge, value) of the live strip's metrics."""
    found = {}
    for metric in app.metric:
        symbol, _, rest = metric.label.partition(" · ")
        if rest.endswith(("live", "delayed", "off")):
            found[symbol] = (rest, metric.value)
    return found


def test_overview_strip_shows_live_delayed_and_off(
    empty_settings: Settings, open_app: OpenApp
) -> None:
    now = time.time()
    publish(
        empty_settings,
        {
            "BTC/USD": LatestTick(91234.5, now - 2, now - 1.9),
            "AAPL": LatestTick(261.25, now - 3600, now - 3600, 1_000_000),
        },
    )
    app = open_app(empty_settings, view="overview")
    shown = strip(app)
    assert set(shown) == set(empty_settings.symbols)
    assert shown["BTC/USD"] == ("🟢 live", "91,234.50")
    assert shown["AAPL"] == ("🟠 delayed", "261.25")
    assert shown["ETH/USD"] == ("⚪ off", theme.MISSING)


def test_without_a_streamer_the_strip_is_one_line(
    empty_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(empty_settings, view="overview")
    assert strip(app) == {}
    assert any("no streamer has published" in caption.value for caption in app.caption)


def test_a_stopped_streamer_turns_every_badge_off(
    empty_settings: Settings, open_app: OpenApp
) -> None:
    now = time.time()
    publish(
        empty_settings, {"BTC/USD": LatestTick(91234.5, now - 2, now - 2)}, state="reconnecting"
    )
    shown = strip(open_app(empty_settings, view="overview"))
    assert shown["BTC/USD"] == ("⚪ off", "91,234.50")


def test_instrument_chart_extends_the_open_candle_with_the_live_price(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    at = FROZEN_AT.timestamp() - 60  # inside the still-open 18:00 bar of the frozen sandbox
    publish(loaded_settings, {"BTC/USD": LatestTick(1.0, at, at)})  # a new low, unmistakable
    app = open_app(loaded_settings, view="instrument", symbol="BTC/USD", window="7d")
    assert set(strip(app)) == {"BTC/USD"}
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    traces = {trace.get("name"): trace for trace in spec["data"]}
    assert "still open" in traces  # the stored bar is still drawn as it is
    live = traces["live (not stored)"]
    assert values(live["close"]) == [1.0] and values(live["low"]) == [1.0]
    assert values(live["open"]) == values(traces["still open"]["open"])
    assert values(traces["still open"]["close"]) != [1.0]  # the stored bar is not changed


def test_health_shows_the_streamer_state_symbols_rate_and_last_error(
    empty_settings: Settings, open_app: OpenApp
) -> None:
    now = time.time()
    publish(empty_settings, {"BTC/USD": LatestTick(91234.5, now, now)})
    app = open_app(empty_settings, view="health")
    assert any("**subscribed**" in s.value and "120 ticks/min" in s.value for s in app.success)
    captions = [c.value for c in app.caption]
    assert "Subscribed: BTC/USD" in captions
    assert any("Last error: ConnectionClosedError" in c for c in captions)
    frames = [f.value for f in app.dataframe]
    assert any(list(f.columns) == ["symbol", "reason"] and f["symbol"].tolist() == ["SOL/USD"]
               for f in frames)  # fmt: skip
    counters = next(f for f in frames if list(f.columns) == ["counter", "value"])
    assert dict(zip(counters["counter"], counters["value"], strict=True))["accepted"] == 240
