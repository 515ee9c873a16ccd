"""Figures: what each chart draws from its frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from marketpipe.indicators import indicator_columns
from services.dashboard import charts, metrics

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def bars(count: int, open_last: bool) -> pd.DataFrame:
    close = [100.0 + i for i in range(count)]
    frame = pd.DataFrame(
        {
            "bar_time": [T0 + i * timedelta(hours=1) for i in range(count)],
            "open": close,
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
            "volume": [1000.0] * count,
            "is_complete": [True] * (count - 1) + [not open_last],
        }
    )
    # The pipeline's own indicator columns, as stored (the dashboard computes none).
    columns = indicator_columns(frame, frame["bar_time"].dt.normalize().to_numpy(), 8760.0)
    return frame.assign(**columns)


def names(figure: object) -> list[str]:
    return [trace.name for trace in figure.data]  # type: ignore[attr-defined]


def test_instrument_figure_panels_overlays_and_open_bar() -> None:
    frame = bars(60, open_last=True)
    figure = charts.instrument_figure(frame, "AAPL", ["SMA 20", "Bollinger bands"])
    assert names(figure)[:2] == ["AAPL", "still open"]
    assert {"SMA 20", "Bollinger bands", "BB middle", "volume", "RSI 14", "MACD"} <= set(
        names(figure)
    )
    assert "SMA 50" not in names(figure)
    (open_candle,) = [t for t in figure.data if t.name == "still open"]
    assert pd.to_datetime(list(open_candle.x), utc=True).tolist() == [frame["bar_time"].iloc[-1]]
    # four panels, one time axis: every lower panel follows the price panel's x axis
    assert figure.layout.xaxis2.matches == "x4" or figure.layout.xaxis.matches == "x4"


def test_instrument_figure_without_open_bar_has_no_open_trace() -> None:
    figure = charts.instrument_figure(bars(30, open_last=False), "AAPL", [])
    assert "still open" not in names(figure)


def test_overlays_without_values_are_not_drawn() -> None:
    figure = charts.instrument_figure(bars(30, open_last=False), "AAPL", ["SMA 200"])
    assert "SMA 200" not in names(figure)


def test_comparison_and_correlation_figures() -> None:
    closes = pd.DataFrame(
        {
            "symbol": ["A"] * 4 + ["B"] * 4,
            "bar_time": [T0 + i * timedelta(hours=1) for i in range(4)] * 2,
            "close": [1.0, 2.0, 1.5, 3.0, 10.0, 9.0, 12.0, 11.0],
        }
    )
    rebased = closes.assign(
        rebased=closes["close"] / closes.groupby("symbol")["close"].transform("first") * 100
    )
    figure = charts.comparison_figure(rebased, zone="UTC")
    assert names(figure) == ["A", "B"]
    assert [next(iter(t.y)) for t in figure.data] == [100.0, 100.0]
    assert figure.layout.xaxis.title.text == "time (UTC)"
    grid = metrics.common_grid(
        closes.assign(asset_class="crypto", exchange_timezone=None), "1h", daily=False
    )
    heatmap = charts.correlation_heatmap(metrics.return_correlation(grid))
    assert list(heatmap.data[0].x) == ["A", "B"]
    assert (heatmap.data[0].zmin, heatmap.data[0].zmax) == (-1, 1)


def test_performers_figure_colours_gains_and_losses() -> None:
    ranked = pd.DataFrame({"symbol": ["UP", "DOWN"], "change_window": [3.0, -2.0]})
    figure = charts.performers_figure(ranked, "Best")
    assert list(figure.data[0].y) == ["UP", "DOWN"]
    gain, loss = figure.data[0].marker.color
    assert gain != loss


def test_closed_market_slots_are_hidden_and_trading_slots_kept() -> None:
    session = [T0 + timedelta(hours=14, minutes=30) + h * timedelta(hours=1) for h in range(7)]
    two_days = pd.Series(session + [t + timedelta(days=1) for t in session])
    gaps = charts.closed_market_gaps(two_days)
    assert gaps is not None
    assert gaps["dvalue"] == 3_600_000
    hidden = pd.DatetimeIndex(gaps["values"])
    # The night between the two sessions: 21:30 .. 13:30 UTC, 17 hourly slots.
    assert len(hidden) == 17
    assert not set(hidden) & set(two_days.dt.tz_localize(None))


def test_round_the_clock_series_hide_nothing() -> None:
    assert charts.closed_market_gaps(bars(48, open_last=False)["bar_time"]) is None
