"""Figures: what each chart draws from its frame."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from marketpipe.indicators import indicator_columns
from services.dashboard import charts, metrics, theme

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
    colours = theme.symbol_colours(["A", "B"])
    figure = charts.comparison_figure(rebased, colours, zone="UTC")
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
    figure = charts.performers_figure(ranked)
    assert list(figure.data[0].y) == ["UP", "DOWN"]
    assert tuple(figure.data[0].marker.color) == (theme.UP, theme.DOWN)


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


# -- the visual language: fixed colours, panels by asset class, layouts that never collide --


def colour_of(figure: object, name: str) -> str:
    (trace,) = [t for t in figure.data if t.name == name and t.showlegend is not False]  # type: ignore[attr-defined]
    return str(trace.line.color)


@pytest.mark.parametrize("open_last", [False, True])
def test_an_indicator_keeps_its_colour_whatever_else_is_drawn(open_last: bool) -> None:
    frame = bars(260, open_last=open_last)
    alone = charts.instrument_figure(frame, "AAPL", ["SMA 50"])
    crowded = charts.instrument_figure(frame, "AAPL", list(charts.OVERLAYS))
    for figure in (alone, crowded):
        assert colour_of(figure, "SMA 50") == theme.INDICATOR_COLOURS["sma_50"]
    for label in ("SMA 20", "SMA 200", "EMA 12", "EMA 26"):
        assert colour_of(crowded, label) == theme.INDICATOR_COLOURS[label.lower().replace(" ", "_")]
    # no line takes the colour of a direction
    lines = [t for t in crowded.data if t.type == "scatter"]
    assert {str(t.line.color) for t in lines}.isdisjoint({theme.UP, theme.DOWN})


def test_bollinger_edges_share_a_colour_and_one_legend_entry() -> None:
    figure = charts.instrument_figure(bars(60, open_last=False), "AAPL", ["Bollinger bands"])
    edges = [t for t in figure.data if t.name == "Bollinger bands"]
    assert len(edges) == 2
    assert edges[0].line.color == edges[1].line.color
    assert [t.showlegend for t in edges].count(True) == 1


def test_volume_and_macd_histogram_are_coloured_by_sign() -> None:
    frame = bars(60, open_last=True)
    frame.loc[::3, "open"] = frame.loc[::3, "close"] + 2  # some falling candles
    frame["macd_hist"] = [math.sin(i / 5) for i in range(len(frame))]  # both signs
    figure = charts.instrument_figure(frame, "AAPL", [])
    (volume,) = [t for t in figure.data if t.name == "volume"]
    expected = [
        theme.STILL_OPEN if not done else theme.UP if c >= o else theme.DOWN
        for o, c, done in zip(frame["open"], frame["close"], frame["is_complete"], strict=True)
    ]
    assert list(volume.marker.color) == expected
    (hist,) = [t for t in figure.data if t.name == "MACD hist"]
    signs = [theme.UP if v >= 0 else theme.DOWN for v in frame["macd_hist"].fillna(0)]
    assert list(hist.marker.color) == signs
    assert len(set(signs)) == 2  # both signs occur in this frame


def panel_titles(figure: object) -> list[str]:
    """The y-axis titles from the top panel down."""
    layout = figure.layout  # type: ignore[attr-defined]
    axes = sorted((a for a in layout if a.startswith("yaxis")), key=lambda a: -layout[a].domain[1])
    return [layout[a].title.text for a in axes]


def test_an_asset_without_volume_gets_no_volume_panel() -> None:
    crypto = bars(60, open_last=False).assign(volume=0.0)
    figure = charts.instrument_figure(crypto, "BTC/USD", [])
    assert "volume" not in names(figure)
    assert panel_titles(figure) == ["Price", "RSI 14", "MACD"]
    stock = charts.instrument_figure(bars(60, open_last=False), "AAPL", [], currency="USD")
    assert panel_titles(stock) == [
        "Price (USD)",
        "Volume",
        "RSI 14",
        "MACD",
    ]


def y_domains(figure: object) -> dict[str, tuple[float, float]]:
    layout = figure.layout  # type: ignore[attr-defined]
    return {
        a.replace("yaxis", "y"): tuple(layout[a].domain) for a in layout if a.startswith("yaxis")
    }


@pytest.mark.parametrize("volume", [True, False])
def test_panels_never_touch_and_every_label_sits_inside_its_panel(volume: bool) -> None:
    frame = bars(60, open_last=False)
    figure = charts.instrument_figure(frame if volume else frame.assign(volume=None), "X", [])
    domains = sorted(y_domains(figure).values(), reverse=True)
    for upper, lower in itertools.pairwise(domains):
        assert upper[0] - lower[1] >= charts.PANEL_GAP * 0.99, (upper, lower)
    layout = figure.layout
    assert not layout.title.text  # the page names the chart; nothing to collide with
    assert layout.legend.yanchor == "bottom" and layout.legend.y >= 1.0
    assert layout.margin.t >= theme.LEGEND_MARGIN_TOP
    rsi_axis = next(a for a in layout if a.startswith("yaxis") and layout[a].title.text == "RSI 14")
    assert list(layout[rsi_axis].tickvals) == [30, 70]  # no 0/100 labels at the panel's edges
    labels = {a.text: a for a in layout.annotations}
    assert set(labels) == {"70 overbought", "30 oversold"}
    rsi_ref = rsi_axis.replace("yaxis", "y")
    for annotation in labels.values():
        assert annotation.yref == rsi_ref and 0 < annotation.y < 100


def test_time_axis_labels_are_few_and_horizontal_and_hovers_name_the_zone() -> None:
    figure = charts.instrument_figure(
        bars(24, open_last=False), "AAPL", [], zone="America/New_York", decimals=2
    )
    for axis in (a for a in figure.layout if a.startswith("xaxis")):
        assert figure.layout[axis].tickangle == 0
        assert figure.layout[axis].nticks <= theme.TIME_TICKS
        assert figure.layout[axis].hoverformat.endswith("(America/New_York)")
    assert figure.layout.yaxis.hoverformat == ",.2f"
    assert figure.layout.yaxis.type == "linear"
    log = charts.instrument_figure(bars(24, open_last=False), "AAPL", [], log_scale=True)
    assert log.layout.yaxis.type == "log"


def lab(colour: str) -> tuple[float, float, float]:
    """CIELAB of an sRGB hex colour (D65), for perceptual distances."""
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
    x = (0.4124 * linear[0] + 0.3576 * linear[1] + 0.1805 * linear[2]) / 0.95047
    y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    z = (0.0193 * linear[0] + 0.1192 * linear[1] + 0.9505 * linear[2]) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def test_the_first_eight_symbol_colours_are_far_apart() -> None:
    colours = theme.SYMBOL_PALETTE[:8]
    distances = [math.dist(lab(a), lab(b)) for i, a in enumerate(colours) for b in colours[i + 1 :]]
    assert min(distances) > 25, min(distances)


def test_a_symbol_keeps_its_colour_when_others_are_added_or_dropped() -> None:
    known = ["AAPL", "AMZN", "BTC/USD", "ETH/USD", "GOOGL", "MSFT"]
    colours = theme.symbol_colours(known)
    frame = pd.DataFrame(
        {
            "symbol": ["MSFT", "MSFT"],
            "bar_time": [T0, T0 + timedelta(hours=1)],
            "rebased": [100, 101],
        }
    )
    few = charts.comparison_figure(frame, colours)
    many = charts.comparison_figure(
        pd.concat([frame, frame.assign(symbol="AAPL"), frame.assign(symbol="AMZN")]), colours
    )
    assert colour_of(few, "MSFT") == colour_of(many, "MSFT") == colours["MSFT"]
    assert len({colour_of(many, s) for s in ("MSFT", "AAPL", "AMZN")}) == 3


def test_returns_distribution_is_one_box_per_symbol() -> None:
    returns = pd.DataFrame(
        {"symbol": ["A"] * 5 + ["B"] * 5, "return_pct": [0.1, -0.2, 0.3, 0.0, 0.5] * 2}
    )
    figure = charts.returns_distribution(returns, theme.symbol_colours(["A", "B"]))
    assert [t.type for t in figure.data] == ["box", "box"]
    assert names(figure) == ["A", "B"]
    assert figure.layout.showlegend is False  # each box is named on its axis: no legend to cover it
