from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from marketpipe.live import LatestTick
from services.dashboard.live import (
    StreamerStatus,
    extend_open_bar,
    strip_frame,
    with_live_candle,
)

NOW = 1_800_000_000.0
ONLINE = StreamerStatus("subscribed", True, ("BTC/USD",), {}, 60, "", {}, 1.0)
OFFLINE = StreamerStatus("reconnecting", False, (), {}, 0, "", {}, 1.0)
HOUR = pd.Timedelta(hours=1)


def bars(complete: bool) -> pd.DataFrame:
    start = pd.Timestamp(NOW, unit="s", tz="UTC").floor("h")
    return pd.DataFrame(
        {"bar_time": [start - HOUR, start], "open": [10.0, 11.0], "high": [12.0, 13.0],
         "low": [9.0, 10.5], "close": [11.0, 12.0], "is_complete": [True, complete]}
    )  # fmt: skip


def test_strip_change_is_against_the_previous_close_and_age_against_the_tick_time() -> None:
    latest = {"BTC/USD": LatestTick(110.0, NOW - 5, NOW - 4)}
    frame = strip_frame(["BTC/USD", "ETH/USD"], latest, {"BTC/USD": 100.0}, ONLINE, NOW)
    btc, eth = frame.to_dict("records")
    assert btc["change_pct"] == pytest.approx(10.0) and btc["tick_age_seconds"] == 5.0
    assert btc["badge"] == "live"
    assert pd.isna(eth["price"]) and eth["badge"] == "off"
    old = strip_frame(["BTC/USD"], {"BTC/USD": LatestTick(1.0, NOW - 600, NOW)}, {}, ONLINE, NOW)
    assert old["badge"].iloc[0] == "delayed" and pd.isna(old["change_pct"].iloc[0])
    assert strip_frame(["BTC/USD"], latest, {}, OFFLINE, NOW)["badge"].iloc[0] == "off"


def test_the_open_bar_is_extended_only_by_a_tick_inside_it() -> None:
    inside = LatestTick(14.0, NOW, NOW)
    (live,) = extend_open_bar(bars(False), inside, HOUR.to_pytimedelta()).to_dict("records")
    assert (live["open"], live["high"], live["low"], live["close"]) == (11.0, 14.0, 10.5, 14.0)
    assert extend_open_bar(bars(True), inside, HOUR.to_pytimedelta()).empty
    later = LatestTick(14.0, NOW + 7200, NOW)
    assert extend_open_bar(bars(False), later, HOUR.to_pytimedelta()).empty
    assert extend_open_bar(bars(False), None, HOUR.to_pytimedelta()).empty


def test_the_live_candle_is_named_as_not_stored() -> None:
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1)
    live = extend_open_bar(bars(False), LatestTick(9.0, NOW, NOW), HOUR.to_pytimedelta())
    names = [t.name for t in with_live_candle(figure, live).data]
    assert names == ["live (not stored)"]
    assert isinstance(with_live_candle(go.Figure(), live.iloc[0:0]), go.Figure)
