"""The dashboard's visual language, in one place: a colour per role and per indicator, a
qualitative palette for symbols, and the Plotly layout rules every figure shares.

Colours never follow trace order: an indicator, a role (up, down, still open, live, benchmark)
or a symbol always has the same colour, whatever else is drawn. Mid-tones that read on
Streamlit's light and dark backgrounds; no template or background is set (Streamlit's Plotly
theme draws those). The up/down pair is used only for direction, never for a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

# What a missing value shows, in every table cell, card and text alike (Streamlit's tables
# would draw a grey "None"): an em dash.
MISSING: Final = "\u2014"

# Roles
UP: Final = "#26a69a"  # a rising candle, a gain, a positive MACD histogram bar
DOWN: Final = "#ef5350"  # a falling candle, a loss, a negative one
STILL_OPEN: Final = "#9e9e9e"  # the newest bar, not final yet
LIVE: Final = "#ff9800"  # the open bar extended with the streamer's price (not stored)
BENCHMARK: Final = "#7f7f7f"  # the reference line of a relative view (and rebased 100)
NEUTRAL: Final = "#8c8c8c"  # guide lines (RSI 30/70, rebased 100)

# One colour per indicator column: lines on the price panel and in the lower panels. None of
# them is the up or down colour, so a line is never mistaken for a direction.
INDICATOR_COLOURS: Final[dict[str, str]] = {
    "sma_20": "#f2a93b",  # amber
    "sma_50": "#4e79a7",  # blue
    "sma_200": "#9c755f",  # brown
    "ema_12": "#b07aa1",  # purple
    "ema_26": "#17becf",  # cyan
    "bb_upper": "#8f8fbf",  # lavender: the band's two edges share one colour
    "bb_middle": "#8f8fbf",
    "bb_lower": "#8f8fbf",
    "rsi_14": "#b07aa1",
    "macd": "#4e79a7",
    "macd_signal": "#f2a93b",
}
BAND_FILL: Final = "rgba(143, 143, 191, 0.12)"

# Symbols: distinguishable hues (no two of the first eight share a hue family; Tableau 10
# reordered so neighbours differ most). A symbol's colour is fixed by its place among all
# symbols the database holds, so choosing or dropping one never recolours another.
SYMBOL_PALETTE: Final[tuple[str, ...]] = (
    "#4e79a7",  # blue
    "#f28e2b",  # orange
    "#59a14f",  # green
    "#e15759",  # red
    "#b07aa1",  # purple
    "#edc948",  # yellow
    "#76b7b2",  # teal
    "#9c755f",  # brown
    "#ff9da7",  # pink
    "#bab0ac",  # grey
)

# Layout shared by every figure: no in-figure title (the page names each chart above it, where
# neither the legend nor a narrow width can hide it), a legend on top, margins that leave room
# for tick labels.
MARGIN: Final = {"l": 8, "r": 8, "t": 8, "b": 8}
LEGEND_ON_TOP: Final = {
    "orientation": "h",
    "x": 0,
    "xanchor": "left",
    "y": 1.0,
    "yanchor": "bottom",
    "yref": "paper",
}
LEGEND_MARGIN_TOP: Final = 40
# At most this many time-axis labels, horizontal: never rotated, bunched or clipped at 390 px.
TIME_TICKS: Final = 6
# Labels that say what a tick is at each zoom: times within a day, dates beyond.
TIME_TICK_FORMATS: Final = (
    {"dtickrange": [None, 86_400_000], "value": "%H:%M\n%b %d"},
    {"dtickrange": [86_400_000, 604_800_000], "value": "%b %d"},
    {"dtickrange": [604_800_000, "M1"], "value": "%b %d\n%Y"},
    {"dtickrange": ["M1", None], "value": "%b %Y"},
)
# Streamlit's st.plotly_chart config: no Plotly toolbar over the charts (viewer mode); zoom by
# dragging and double-click to reset still work.
PLOTLY_CONFIG: Final[dict[str, Any]] = {"displayModeBar": False, "displaylogo": False}


def symbol_colours(symbols: Iterable[str]) -> dict[str, str]:
    """Each symbol's colour by its place in ``symbols`` (pass every known symbol, sorted)."""
    return {s: SYMBOL_PALETTE[i % len(SYMBOL_PALETTE)] for i, s in enumerate(symbols)}


def direction_colours(up: Sequence[bool]) -> list[str]:
    return [UP if rising else DOWN for rising in up]


def price_format(decimals: int) -> str:
    """Plotly's d3 format of a price at its quoted precision, with thousands separators."""
    return f",.{decimals}f"


def time_axis(zone: str, *, daily: bool = False) -> dict[str, Any]:
    """The x axis of a time series: few horizontal labels, hovers in the named zone."""
    return {
        "nticks": TIME_TICKS,
        "tickangle": 0,
        "tickformatstops": list(TIME_TICK_FORMATS),
        "automargin": True,
        "hoverformat": "%Y-%m-%d (trading day)" if daily else f"%Y-%m-%d %H:%M ({zone})",
    }
