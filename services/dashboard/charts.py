"""Charts: a frame in, a Plotly figure out (no Streamlit, no SQL).

Every colour and shared layout rule comes from theme.py. Figures carry no title: the page
names each chart above it (see app._chart), so a title can never sit under a legend or the
toolbar, or be clipped on a phone. Panels of the instrument chart are named by their y axis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from services.dashboard import theme

# Overlay label -> the indicator columns it draws on the price panel.
OVERLAYS: dict[str, tuple[str, ...]] = {
    "SMA 20": ("sma_20",),
    "SMA 50": ("sma_50",),
    "SMA 200": ("sma_200",),
    "EMA 12": ("ema_12",),
    "EMA 26": ("ema_26",),
    "Bollinger bands": ("bb_upper", "bb_lower", "bb_middle"),
}
# Space between the instrument chart's panels, as a share of the figure: room for the lower
# panel's top tick label and the upper panel's bottom one, never touching.
PANEL_GAP = 0.04
RSI_LEVELS = {70: "70 overbought", 30: "30 oversold"}
PRICE_HEIGHT = 430
LOWER_PANEL_HEIGHT = 130


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


def has_volume(bars: pd.DataFrame) -> bool:
    """Whether the series reports volume at all (crypto and forex quotes have none)."""
    volume = pd.to_numeric(bars.get("volume", pd.Series(dtype=float)), errors="coerce")
    return bool((volume.fillna(0) > 0).any())


def _panels(bars: pd.DataFrame) -> list[str]:
    return ["price", *(["volume"] if has_volume(bars) else []), "rsi", "macd"]


def _overlay_traces(bars: pd.DataFrame, overlays: Collection[str]) -> list[go.Scatter]:
    traces = []
    for label in OVERLAYS:  # the fixed order, so the legend never reshuffles
        if label not in overlays:
            continue
        for column in OVERLAYS[label]:
            if column not in bars or not bars[column].notna().any():
                continue
            traces.append(
                go.Scatter(
                    x=bars["bar_time"],
                    y=bars[column],
                    name="BB middle" if column == "bb_middle" else label,
                    mode="lines",
                    line={
                        "width": 1.2,
                        "color": theme.INDICATOR_COLOURS[column],
                        "dash": "dot" if column == "bb_middle" else None,
                    },
                    legendgroup=label,
                    # the band's two edges are one legend entry; the lower one fills to the upper
                    showlegend=column != "bb_lower",
                    fill="tonexty" if column == "bb_lower" else None,
                    fillcolor=theme.BAND_FILL if column == "bb_lower" else None,
                )
            )
    return traces


def instrument_figure(
    bars: pd.DataFrame,
    symbol: str,
    overlays: Collection[str],
    zone: str = "UTC",
    *,
    decimals: int = 2,
    currency: str = "",
    log_scale: bool = False,
    daily: bool = False,
) -> go.Figure:
    """Candlesticks + overlays, volume (when the asset reports it), RSI and MACD panels on one
    shared time axis.

    ``bars["bar_time"]`` is drawn as its wall time; ``zone`` names it on the axis and in hovers.
    The still-open bar (``is_complete`` false) is its own grey candle named "still open", so it
    is never mistaken for a final price.
    """
    panels = _panels(bars)
    lower = len(panels) - 1
    height = PRICE_HEIGHT + LOWER_PANEL_HEIGHT * lower
    figure = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=PANEL_GAP,
        row_heights=[PRICE_HEIGHT, *([LOWER_PANEL_HEIGHT] * lower)],
    )
    row = {name: index + 1 for index, name in enumerate(panels)}
    complete = bars["is_complete"].astype(bool)
    for part, name, is_open in (
        (bars[complete], symbol, False),
        (bars[~complete], "still open", True),
    ):
        if part.empty:
            continue
        up = {"line": {"color": theme.UP}, "fillcolor": theme.UP}
        down = {"line": {"color": theme.DOWN}, "fillcolor": theme.DOWN}
        if is_open:
            up = down = {"line": {"color": theme.STILL_OPEN}, "fillcolor": theme.STILL_OPEN}
        figure.add_trace(
            go.Candlestick(
                x=part["bar_time"],
                open=part["open"],
                high=part["high"],
                low=part["low"],
                close=part["close"],
                name=name,
                increasing=up,
                decreasing=down,
            ),
            row=1,
            col=1,
        )
    for trace in _overlay_traces(bars, overlays):
        figure.add_trace(trace, row=1, col=1)
    if "volume" in row:
        colours = theme.direction_colours((bars["close"] >= bars["open"]).tolist())
        colours = [
            c if done else theme.STILL_OPEN for c, done in zip(colours, complete, strict=True)
        ]
        figure.add_trace(
            go.Bar(
                x=bars["bar_time"],
                y=bars["volume"],
                name="volume",
                marker={"color": colours},
                opacity=0.7,
                showlegend=False,
            ),
            row=row["volume"],
            col=1,
        )
        figure.update_yaxes(
            title_text="Volume", hoverformat=",.0f", nticks=3, row=row["volume"], col=1
        )
    figure.add_trace(
        go.Scatter(
            x=bars["bar_time"],
            y=bars["rsi_14"],
            name="RSI 14",
            mode="lines",
            line={"color": theme.INDICATOR_COLOURS["rsi_14"], "width": 1.2},
            showlegend=False,
        ),
        row=row["rsi"],
        col=1,
    )
    for level, label in RSI_LEVELS.items():
        figure.add_hline(
            y=level,
            line={"dash": "dash", "width": 1, "color": theme.NEUTRAL},
            annotation={"text": label, "font": {"size": 10, "color": theme.NEUTRAL}},
            annotation_position="top left" if level == 70 else "bottom left",
            row=row["rsi"],
            col=1,
        )
    hist = bars["macd_hist"]
    figure.add_trace(
        go.Bar(
            x=bars["bar_time"],
            y=hist,
            name="MACD hist",
            marker={"color": theme.direction_colours((hist.fillna(0) >= 0).tolist())},
            opacity=0.6,
            showlegend=False,
        ),
        row=row["macd"],
        col=1,
    )
    for column, name in (("macd", "MACD"), ("macd_signal", "signal")):
        figure.add_trace(
            go.Scatter(
                x=bars["bar_time"],
                y=bars[column],
                name=name,
                mode="lines",
                line={"color": theme.INDICATOR_COLOURS[column], "width": 1.2},
                showlegend=False,
            ),
            row=row["macd"],
            col=1,
        )
    figure.update_yaxes(
        title_text=f"Price ({currency})" if currency else "Price",
        type="log" if log_scale else "linear",
        hoverformat=theme.price_format(decimals),
        tickformat=",",
        row=1,
        col=1,
    )
    # Only the guide levels as ticks: the panel's 0 and 100 never meet its neighbours' labels.
    figure.update_yaxes(
        title_text="RSI 14",
        range=[0, 100],
        tickvals=list(sorted(RSI_LEVELS)),
        ticktext=[str(level) for level in sorted(RSI_LEVELS)],
        hoverformat=".1f",
        row=row["rsi"],
        col=1,
    )
    figure.update_yaxes(
        title_text="MACD",
        nticks=3,
        hoverformat=f".{decimals + 2}f",
        row=row["macd"],
        col=1,
    )
    figure.update_xaxes(theme.time_axis(zone, daily=daily))
    figure.update_xaxes(title_text="trading day" if daily else f"time ({zone})", row=len(panels))
    gaps = None if daily else closed_market_gaps(bars["bar_time"])
    if gaps is not None:
        figure.update_xaxes(rangebreaks=[gaps])
    figure.update_layout(
        height=height,
        margin={**theme.MARGIN, "t": theme.LEGEND_MARGIN_TOP},
        xaxis_rangeslider_visible=False,
        legend=theme.LEGEND_ON_TOP,
        hovermode="x unified",
        bargap=0.1,
    )
    return figure


def performers_figure(ranked: pd.DataFrame) -> go.Figure:
    """Horizontal bars of ``change_window`` per symbol, in the frame's order."""
    figure = go.Figure(
        go.Bar(
            x=ranked["change_window"],
            y=ranked["symbol"],
            orientation="h",
            text=[f"{v:+.2f}%" for v in ranked["change_window"]],
            textposition="auto",
            marker={"color": theme.direction_colours((ranked["change_window"] >= 0).tolist())},
            hovertemplate="%{y}: %{x:+.2f}%<extra></extra>",
        )
    )
    figure.update_layout(
        height=70 + 32 * max(len(ranked), 1),
        margin=theme.MARGIN,
        xaxis={"title": {"text": "change, %"}, "automargin": True},
        yaxis={"autorange": "reversed", "automargin": True},
    )
    return figure


def comparison_figure(
    rebased: pd.DataFrame,
    colours: Mapping[str, str],
    zone: str = "UTC",
    *,
    y_title: str = "index (start = 100)",
    log_scale: bool = False,
    daily: bool = False,
) -> go.Figure:
    """One line per symbol (``rebased`` column), coloured by ``colours``; 100 marked."""
    figure = go.Figure()
    for symbol, series in rebased.groupby("symbol", sort=True):
        figure.add_trace(
            go.Scatter(
                x=series["bar_time"],
                y=series["rebased"],
                name=str(symbol),
                mode="lines",
                line={"color": colours.get(str(symbol), theme.NEUTRAL), "width": 1.6},
                hovertemplate=f"{symbol}: %{{y:.2f}}<extra></extra>",
            )
        )
    figure.add_hline(y=100, line={"dash": "dot", "width": 1, "color": theme.BENCHMARK})
    figure.update_layout(
        height=420,
        yaxis={"title": {"text": y_title}, "type": "log" if log_scale else "linear"},
        xaxis={
            **theme.time_axis(zone, daily=daily),
            "title": {"text": "trading day" if daily else f"time ({zone})"},
        },
        margin={**theme.MARGIN, "t": theme.LEGEND_MARGIN_TOP},
        legend=theme.LEGEND_ON_TOP,
        hovermode="x unified",
    )
    return figure


def returns_distribution(returns: pd.DataFrame, colours: Mapping[str, str]) -> go.Figure:
    """One box per symbol (median, quartiles, outliers): readable for any number of series,
    where overlaid histograms of eight hide each other."""
    figure = go.Figure()
    for symbol, series in returns.groupby("symbol", sort=True):
        figure.add_trace(
            go.Box(
                x=series["return_pct"],
                name=str(symbol),
                marker={"color": colours.get(str(symbol), theme.NEUTRAL), "size": 3},
                line={"width": 1.2},
                boxmean=True,
                orientation="h",
                hoverinfo="x",
            )
        )
    figure.update_layout(
        height=90 + 36 * max(returns["symbol"].nunique(), 1),
        xaxis={"title": {"text": "return per grid step, %"}, "zeroline": True, "automargin": True},
        yaxis={"autorange": "reversed", "automargin": True},
        margin=theme.MARGIN,
        showlegend=False,
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
            texttemplate="%{text:.2f}",
            textfont={"size": 11},
            hovertemplate="%{y} / %{x}: %{z:.2f}<extra></extra>",
            colorbar={"title": {"text": "corr"}, "thickness": 10},
        )
    )
    figure.update_layout(
        height=140 + 34 * max(len(labels), 4),
        margin=theme.MARGIN,
        # Vertical labels above four: their boxes never overlap, however narrow the cells.
        xaxis={"tickangle": -90 if len(labels) > 4 else 0, "automargin": True},
        yaxis={"autorange": "reversed", "automargin": True},
    )
    return figure
