"""Dashboard metrics against plain-loop computations of the same definitions."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from services.dashboard import metrics

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def closes_frame(
    series: dict[str, list[float]], step: timedelta = timedelta(hours=1)
) -> pd.DataFrame:
    rows = [
        {"symbol": symbol, "bar_time": T0 + i * step, "close": value}
        for symbol, values in series.items()
        for i, value in enumerate(values)
    ]
    # shuffled on purpose: the metrics must not rely on the order rows arrive in
    return pd.DataFrame(rows).sample(frac=1.0, random_state=7).reset_index(drop=True)


SERIES = {"AAA": [10.0, 11.0, 9.0, 12.0, 6.0, 8.0], "BBB": [100.0, 90.0, 95.0, 99.0, 120.0, 60.0]}


def test_rebase_to_100_divides_by_each_symbols_first_close() -> None:
    rebased = metrics.rebase_to_100(closes_frame(SERIES))
    for symbol, values in SERIES.items():
        got = rebased[rebased["symbol"] == symbol]["rebased"].tolist()
        assert got == pytest.approx([100.0 * v / values[0] for v in values])


def test_bar_returns_are_consecutive_percent_changes_per_symbol() -> None:
    returns = metrics.bar_returns(closes_frame(SERIES))
    for symbol, values in SERIES.items():
        expected = [100.0 * (b / a - 1) for a, b in itertools.pairwise(values)]
        got = returns[returns["symbol"] == symbol].sort_values("bar_time")["return_pct"]
        assert got.tolist() == pytest.approx(expected)


def loop_drawdown(values: list[float]) -> float:
    peak, worst = values[0], 0.0
    for value in values:
        peak = max(peak, value)
        worst = min(worst, value / peak - 1)
    return 100.0 * worst


@pytest.mark.parametrize("values", [*SERIES.values(), [1.0, 2.0, 3.0], [5.0]])
def test_max_drawdown_matches_a_running_peak_loop(values: list[float]) -> None:
    assert metrics.max_drawdown_pct(pd.Series(values)) == pytest.approx(loop_drawdown(values))


def test_volatility_is_return_std_scaled_by_observed_bars_per_year() -> None:
    values = SERIES["AAA"]
    times = pd.Series([T0 + i * timedelta(days=1) for i in range(len(values))])
    returns = [b / a - 1 for a, b in itertools.pairwise(values)]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    bars_per_year = len(returns) / ((len(values) - 1) / 365.25)
    expected = 100 * std * math.sqrt(bars_per_year)
    got = metrics.annualized_volatility_pct(pd.Series(values), times)
    assert got == pytest.approx(expected)


def test_performance_summary_per_symbol() -> None:
    summary = metrics.performance_summary(closes_frame(SERIES)).set_index("symbol")
    for symbol, values in SERIES.items():
        row = summary.loc[symbol]
        assert row["return_pct"] == pytest.approx(100 * (values[-1] / values[0] - 1))
        assert row["max_drawdown_pct"] == pytest.approx(loop_drawdown(values))
        assert row["bars"] == len(values)
        assert row["first_close"] == values[0] and row["last_close"] == values[-1]


def test_return_correlation_matches_numpy_on_shared_times() -> None:
    correlation = metrics.return_correlation(closes_frame(SERIES))
    a, b = (np.diff(v) / np.array(v[:-1]) for v in SERIES.values())
    assert correlation.loc["AAA", "BBB"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert correlation.loc["AAA", "AAA"] == pytest.approx(1.0)


def test_changes_and_best_and_worst() -> None:
    overview = pd.DataFrame(
        {
            "symbol": ["A", "B", "C", "D"],
            "last_price": [110.0, 90.0, 50.0, 10.0],
            "close_1h_ago": [100.0, 100.0, 50.0, None],
            "close_24h_ago": [100.0, 100.0, 25.0, 0.0],
            "close_7d_ago": [55.0, 100.0, 100.0, None],
            "close_window_ago": [100.0, 100.0, 100.0, None],
        }
    )
    changes = metrics.with_changes(overview).set_index("symbol")
    assert changes.loc["A", "change_1h"] == pytest.approx(10.0)
    assert changes.loc["C", "change_24h"] == pytest.approx(100.0)
    assert changes.loc["A", "change_7d"] == pytest.approx(100.0)
    # no reference (or a zero one) is unknown, never infinite
    assert math.isnan(changes.loc["D", "change_1h"]) and math.isnan(changes.loc["D", "change_24h"])
    best, worst = metrics.best_and_worst(changes.reset_index(), 2)
    assert best["symbol"].tolist() == ["A", "B"]
    assert worst["symbol"].tolist() == ["C", "B"]


def test_indicators_match_loop_definitions() -> None:
    rng = np.random.default_rng(3)
    close = list(100 + np.cumsum(rng.normal(0, 1, 260)))
    out = metrics.with_indicators(pd.DataFrame({"close": close}))
    i = 250
    assert out["sma_20"].iloc[i] == pytest.approx(sum(close[i - 19 : i + 1]) / 20)
    assert out["sma_200"].iloc[i] == pytest.approx(sum(close[i - 199 : i + 1]) / 200)
    assert math.isnan(out["sma_200"].iloc[198])
    window = close[i - 19 : i + 1]
    mean = sum(window) / 20
    std = math.sqrt(sum((v - mean) ** 2 for v in window) / 20)
    assert out["bb_upper"].iloc[i] == pytest.approx(mean + 2 * std)
    ema = close[0]
    for value in close[1 : i + 1]:
        ema = ema + (2 / 13) * (value - ema)
    assert out["ema_12"].iloc[i] == pytest.approx(ema)
    gain = loss = 0.0
    for k in range(1, i + 1):
        change = close[k] - close[k - 1]
        gain = max(change, 0) if k == 1 else gain + (max(change, 0) - gain) / 14
        loss = max(-change, 0) if k == 1 else loss + (max(-change, 0) - loss) / 14
    assert out["rsi_14"].iloc[i] == pytest.approx(100 - 100 / (1 + gain / loss))
    assert out["macd_hist"].iloc[i] == pytest.approx(
        out["macd"].iloc[i] - out["macd_signal"].iloc[i]
    )


def test_rsi_of_a_series_that_never_falls_is_100() -> None:
    out = metrics.with_indicators(pd.DataFrame({"close": [float(v) for v in range(1, 40)]}))
    assert out["rsi_14"].iloc[-1] == 100.0


HOURLY = "5 * * * *"
NOW = datetime(2026, 3, 11, 18, 30, tzinfo=UTC)  # due: 18:05 (grace 10 min), then 17:05
GRACE = timedelta(minutes=10)


def test_due_fetches_are_the_last_ticks_before_now_minus_grace() -> None:
    assert metrics.due_fetches(HOURLY, NOW, GRACE) == [
        datetime(2026, 3, 11, 18, 5, tzinfo=UTC),
        datetime(2026, 3, 11, 17, 5, tzinfo=UTC),
    ]
    # within the grace period the newest tick is not due yet
    early = datetime(2026, 3, 11, 18, 10, tzinfo=UTC)
    assert metrics.due_fetches(HOURLY, early, GRACE)[0] == datetime(2026, 3, 11, 17, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_fetch", "expected"),
    [
        (datetime(2026, 3, 11, 18, 5, 3, tzinfo=UTC), "fresh"),
        (datetime(2026, 3, 11, 18, 4, tzinfo=UTC), "fresh"),  # the API clock a minute behind
        (datetime(2026, 3, 11, 17, 5, tzinfo=UTC), "late"),
        (datetime(2026, 3, 11, 16, 5, tzinfo=UTC), "stale"),
        (None, "no data"),
    ],
)
def test_classify_freshness(last_fetch: datetime | None, expected: str) -> None:
    due = metrics.due_fetches(HOURLY, NOW, GRACE)
    assert metrics.classify_freshness(last_fetch, due) == expected


def test_freshness_table_lists_configured_symbols_without_data() -> None:
    stored = pd.DataFrame(
        {"symbol": ["AAPL"], "last_fetch": [pd.Timestamp("2026-03-11 18:05", tz="UTC")]}
    )
    table = metrics.freshness_table(stored, ["AAPL", "MSFT"], NOW, HOURLY, GRACE)
    assert table[["symbol", "status"]].values.tolist() == [["AAPL", "fresh"], ["MSFT", "no data"]]
    assert table["fetch_age_minutes"].iloc[0] == pytest.approx(25.0)


def test_sparkline_points_are_ordered_per_symbol() -> None:
    points = metrics.sparkline_points(closes_frame(SERIES))
    assert points == SERIES
