"""Charts: a frame in, a Plotly figure out (no Streamlit, no SQL).

No template or background colour is set here: Streamlit's Plotly theme draws them in the
viewer's light or dark theme. Trace colours are mid-tones that read on both backgrounds.
"""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Overlay label -> the indicator columns it draws on the price panel.
OVERLAYS: dict[str, tuple[str, ...]] = {
    "SMA 20": ("sma_20",),
    "SMA 50": ("sma_50",),
    "SMA 200": ("sma_200",),
    "EMA 12": ("ema_12",),
    "EMA 26": ("ema_26",),
    "Bollinger bands": ("bb_upper", "bb_middle", "bb_lower"),
}
OPEN_BAR_COLOUR = "#9e9e9e"
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def closed_market_gaps(bar_times: pd.Series) -> dict[str, object] | None:
    """A Plotly rangebreak hiding the slots with no bar (nights, weekends, holidays).

    The slots are the regular grid of the most common bar spacing from the first bar to the
    last; crypto trades in every slot, so it gets none.
    """
    # On the wall clock the times are drawn in (the exchange's for stocks): sessions are regular
    # there across DST changes.
    index = pd.DatetimeIndex(bar_times)
    times = (index.tz_localize(None) if index.tz is not None else index).unique().sort_values()
    if len(times) < 3:
        return None
    step = pd.Series(times).diff().mode().iloc[0]
    missing = pd.date_range(times[0], times[-1], freq=step).difference(times)
    if missing.empty:
        return None
    return {"values": list(missing), "dvalue": step / pd.Timedelta(milliseconds=1)}


def instrument_figure(
    bars: pd.DataFrame, symbol: str, overlays: Collection[str], zone: str = "UTC"
) -> go.Figure:
    """Candlesticks + overlays, volume, RSI and MACD panels on one shared time axis.

    ``bars["bar_time"]`` is drawn as its wall time; ``zone`` names it on the axis and in hovers.

    The still-open bar (``is_complete`` false) is its own grey candle named "still open", so it
    is never mistaken for a final price.
    """
    figure = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.02,
        row_heights=[0.55, 0.13, 0.16, 0.16],
        subplot_titles=(f"{symbol} price", "Volume", "RSI 14", "MACD 12/26/9"),
    )
    complete = bars["is_complete"].astype(bool)
    for part, name, is_open in (
        (bars[complete], symbol, False),
        (bars[~complete], "still open", True),
    ):
        if part.empty:
            continue
        candle = go.Candlestick(
            x=part["bar_time"],
            open=part["open"],
            high=part["high"],
            low=part["low"],
            close=part["close"],
            name=name,
        )
        if is_open:
            grey = {"line": {"color": OPEN_BAR_COLOUR}, "fillcolor": OPEN_BAR_COLOUR}
            candle.update(increasing=grey, decreasing=grey)
        figure.add_trace(candle, row=1, col=1)
    for label in overlays:
        for column in OVERLAYS[label]:
            if column in bars and bars[column].notna().any():
                dash = "dot" if column in ("bb_upper", "bb_lower") else None
                figure.add_trace(
                    go.Scatter(
                        x=bars["bar_time"],
                        y=bars[column],
                        name=label if column != "bb_middle" else "BB middle",
                        mode="lines",
                        line={"width": 1.2, "dash": dash},
                        legendgroup=label,
                    ),
                    row=1,
                    col=1,
                )
    figure.add_trace(
        go.Bar(x=bars["bar_time"], y=bars["volume"], name="volume", opacity=0.6, showlegend=False),
        row=2,
        col=1,
    )
    figure.add_trace(
        go.Scatter(x=bars["bar_time"], y=bars["rsi_14"], name="RSI 14", mode="lines"), row=3, col=1
    )
    for level in (30, 70):
        figure.add_hline(y=level, line={"dash": "dash", "width": 1}, opacity=0.5, row=3, col=1)
    figure.add_trace(
        go.Bar(x=bars["bar_time"], y=bars["macd_hist"], name="MACD hist", opacity=0.5),
        row=4,
        col=1,
    )
    for column, name in (("macd", "MACD"), ("macd_signal", "signal")):
        figure.add_trace(
            go.Scatter(x=bars["bar_time"], y=bars[column], name=name, mode="lines"), row=4, col=1
        )
    figure.update_yaxes(range=[0, 100], row=3, col=1)
    figure.update_xaxes(title_text=f"time ({zone})", row=4, col=1)
    figure.update_xaxes(hoverformat=f"%Y-%m-%d %H:%M ({zone})")
    gaps = closed_market_gaps(bars["bar_time"])
    if gaps is not None:
        figure.update_xaxes(rangebreaks=[gaps])
    figure.update_layout(
        height=820,
        margin=MARGIN,
        xaxis_rangeslider_visible=False,
        legend={"orientation": "h", "y": -0.04},
        hovermode="x unified",
    )
    return figure


def performers_figure(ranked: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of ``change_window`` per symbol, in the frame's order."""
    figure = go.Figure(
        go.Bar(
            x=ranked["change_window"],
            y=ranked["symbol"],
            orientation="h",
            text=[f"{v:+.2f}%" for v in ranked["change_window"]],
            textposition="auto",
            marker={"color": ["#2e9e5b" if v >= 0 else "#d9534f" for v in ranked["change_window"]]},
        )
    )
    figure.update_layout(
        title=title,
        height=80 + 32 * max(len(ranked), 1),
        margin=MARGIN,
        xaxis_title="change, %",
        yaxis={"autorange": "reversed"},
    )
    return figure


def comparison_figure(rebased: pd.DataFrame, zone: str = "UTC") -> go.Figure:
    figure = go.Figure()
    for symbol, series in rebased.groupby("symbol", sort=True):
        figure.add_trace(
            go.Scatter(x=series["bar_time"], y=series["rebased"], name=str(symbol), mode="lines")
        )
    figure.add_hline(y=100, line={"dash": "dot", "width": 1}, opacity=0.5)
    figure.update_layout(
        title="Performance, rebased to 100 at the start of the window",
        height=420,
        yaxis_title="index (start = 100)",
        xaxis={"title": {"text": f"time ({zone})"}, "hoverformat": f"%Y-%m-%d %H:%M ({zone})"},
        margin=MARGIN,
        legend={"orientation": "h"},
    )
    return figure


def returns_histogram(returns: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    for symbol, series in returns.groupby("symbol", sort=True):
        figure.add_trace(
            go.Histogram(x=series["return_pct"], name=str(symbol), opacity=0.55, nbinsx=60)
        )
    figure.update_layout(
        title="Distribution of returns on the common grid",
        barmode="overlay",
        height=380,
        xaxis_title="return per grid step, %",
        yaxis_title="steps",
        margin=MARGIN,
        legend={"orientation": "h"},
    )
    return figure


def correlation_heatmap(correlation: pd.DataFrame) -> go.Figure:
    labels = [str(c) for c in correlation.columns]
    figure = go.Figure(
        go.Heatmap(
            z=correlation.to_numpy(),
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            text=correlation.round(2).to_numpy(),
            texttemplate="%{text}",
            colorbar={"title": {"text": "corr"}},
        )
    )
    figure.update_layout(
        title="Correlation of returns on the common grid",
        height=120 + 40 * max(len(labels), 4),
        margin=MARGIN,
        yaxis={"autorange": "reversed"},
    )
    return figure
