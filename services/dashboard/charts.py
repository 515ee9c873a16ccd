"""Charts: a frame in, a Plotly figure out (no Streamlit, no SQL)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

MOVING_AVERAGES = (("sma_20", "SMA 20"), ("sma_50", "SMA 50"), ("sma_200", "SMA 200"))


def price_figure(history: pd.DataFrame, symbol: str) -> go.Figure:
    """Candlesticks with the moving averages that have values; the open bar drawn apart."""
    figure = go.Figure()
    figure.add_trace(
        go.Candlestick(
            x=history["bar_time"],
            open=history["open"],
            high=history["high"],
            low=history["low"],
            close=history["close"],
            name=symbol,
        )
    )
    for column, label in MOVING_AVERAGES:
        if column in history and history[column].notna().any():
            figure.add_trace(
                go.Scatter(x=history["bar_time"], y=history[column], name=label, mode="lines")
            )
    open_bars = history[~history["is_complete"].astype(bool)] if "is_complete" in history else None
    if open_bars is not None and not open_bars.empty:
        figure.add_trace(
            go.Scatter(
                x=open_bars["bar_time"],
                y=open_bars["close"],
                mode="markers",
                marker={"symbol": "circle-open", "size": 12},
                name="still open",
            )
        )
    figure.update_layout(
        title=f"{symbol} price",
        xaxis_rangeslider_visible=False,
        height=480,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h"},
    )
    return figure


def rebase_to_100(closes: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's close divided by its first close in the window, times 100."""
    ordered = closes.sort_values(["symbol", "bar_time"])
    first = ordered.groupby("symbol")["close"].transform("first")
    return ordered.assign(rebased=ordered["close"] / first * 100.0)


def comparison_figure(closes: pd.DataFrame) -> go.Figure:
    rebased = rebase_to_100(closes)
    figure = go.Figure()
    for symbol, series in rebased.groupby("symbol", sort=True):
        figure.add_trace(
            go.Scatter(x=series["bar_time"], y=series["rebased"], name=str(symbol), mode="lines")
        )
    figure.update_layout(
        title="Performance, rebased to 100 at the start of the window",
        height=420,
        yaxis_title="index",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h"},
    )
    return figure
