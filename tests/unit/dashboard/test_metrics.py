"""Dashboard metrics against plain-loop computations of the same definitions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

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


def test_rebase_and_indicators_are_not_computed_here() -> None:
    """Indicators are stored by the pipeline and returns defined in SQL (db/init/0007)."""
    for gone in ("with_indicators", "with_changes", "rebase_to_100", "bar_returns"):
        assert not hasattr(metrics, gone)


def loop_drawdown(values: list[float]) -> float:
    peak, worst = values[0], 0.0
    for value in values:
        peak = max(peak, value)
        worst = min(worst, value / peak - 1)
    return 100.0 * worst


@pytest.mark.parametrize("values", [*SERIES.values(), [1.0, 2.0, 3.0], [5.0]])
def test_max_drawdown_matches_a_running_peak_loop(values: list[float]) -> None:
    assert metrics.max_drawdown_pct(pd.Series(values)) == pytest.approx(loop_drawdown(values))


def mixed_closes() -> pd.DataFrame:
    """A NYSE stock (bars open at :30, sessions only) and a coin (every hour, at :00)."""
    rows = []
    for day in range(3):
        session = datetime(2026, 3, 9 + day, 13, 30, tzinfo=UTC)
        for hour in range(7):
            rows.append(
                (
                    "AAPL",
                    "stock",
                    "America/New_York",
                    session + timedelta(hours=hour),
                    200.0 + day * 3 + hour * (-1) ** day,
                )
            )
    for hour in range(24 * 3):
        when = datetime(2026, 3, 9, tzinfo=UTC) + timedelta(hours=hour)
        rows.append(("BTC/USD", "crypto", None, when, 60000.0 + 100 * math.sin(hour / 5)))
    frame = pd.DataFrame(
        rows, columns=["symbol", "asset_class", "exchange_timezone", "bar_time", "close"]
    )
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_a_mixed_set_shares_the_stock_bar_times() -> None:
    closes = mixed_closes()
    grid = metrics.common_grid(closes, "1h", daily=False)
    stock_times = sorted(closes.loc[closes["symbol"] == "AAPL", "bar_time"])
    assert list(grid.closes.index) == stock_times
    coin = closes[closes["symbol"] == "BTC/USD"].set_index("bar_time")["close"].sort_index()
    for when, value in grid.closes["BTC/USD"].items():
        assert value == coin[coin.index <= when].iloc[-1]  # the last close at or before
    correlation = metrics.return_correlation(grid)
    assert correlation.notna().all().all()  # no NaN pair, although no timestamp is shared
    assert "sampled at the same points" in grid.description
    assert grid.per_year == 252 * 7


def test_the_daily_grid_is_the_stocks_trading_days() -> None:
    hourly = mixed_closes().assign(trading_date=lambda f: f["bar_time"].dt.tz_localize(None))
    hourly["trading_date"] = hourly["trading_date"].dt.normalize()
    # What the daily query returns: each symbol's last bar of each trading day, and a Sunday coin.
    days = hourly.sort_values("bar_time").groupby(["symbol", "trading_date"]).tail(1)
    sunday = (
        days[days["symbol"] == "BTC/USD"]
        .tail(1)
        .assign(trading_date=pd.Timestamp("2026-03-15"), close=1.0)
    )
    grid = metrics.common_grid(pd.concat([days, sunday]), "1h", daily=True)
    assert list(grid.closes.index) == list(pd.date_range("2026-03-09", periods=3))
    coin = days[days["symbol"] == "BTC/USD"].set_index("trading_date")["close"]
    assert grid.closes["BTC/USD"].tolist() == coin.tolist()  # its own day closes
    assert grid.per_year == 252
    returns = metrics.grid_returns(grid)
    assert set(returns["symbol"]) == {"AAPL", "BTC/USD"} and len(returns) == 4
    assert metrics.return_correlation(grid).shape == (2, 2)


def test_summary_takes_the_period_return_and_grid_statistics() -> None:
    grid = metrics.common_grid(mixed_closes(), "1h", daily=False)
    period = pd.DataFrame(
        {
            "symbol": ["AAPL", "BTC/USD"],
            "start_close": [1.0, 2.0],
            "end_close": [3.0, 4.0],
            "return_pct": [200.0, 100.0],
        }
    )
    summary = metrics.performance_summary(grid, period).set_index("symbol")
    assert summary.loc["AAPL", "return_pct"] == 200.0
    steps = grid.closes["AAPL"].pct_change().dropna().tolist()
    mean = sum(steps) / len(steps)
    std = math.sqrt(sum((r - mean) ** 2 for r in steps) / (len(steps) - 1))
    assert summary.loc["AAPL", "volatility_pct"] == pytest.approx(100 * std * math.sqrt(252 * 7))
    assert summary.loc["AAPL", "max_drawdown_pct"] == pytest.approx(
        loop_drawdown(grid.closes["AAPL"].tolist())
    )


def test_best_and_worst() -> None:
    changes = pd.DataFrame({"symbol": ["A", "B", "C", "D"], "change_window": [10.0, 0, -50, None]})
    best, worst = metrics.best_and_worst(changes, 2)
    assert best["symbol"].tolist() == ["A", "B"]
    assert worst["symbol"].tolist() == ["C"]


@pytest.mark.parametrize("count", [1, 3, 5, 8, 9, 14])
def test_best_and_worst_never_list_a_symbol_twice(count: int) -> None:
    symbols = [f"S{i:02d}" for i in range(count)]
    changes = pd.DataFrame(
        {"symbol": symbols, "change_window": [(i * 7) % 11 for i in range(count)]}
    )
    best, worst = metrics.best_and_worst(changes, 5)
    assert not set(best["symbol"]) & set(worst["symbol"])
    assert len(best) == min(5, (count + 1) // 2) and len(worst) == min(5, count // 2)
    # each list is in its own order: best falling, worst rising
    assert best["change_window"].is_monotonic_decreasing
    assert worst["change_window"].is_monotonic_increasing
    if len(worst):
        assert best["change_window"].min() >= worst["change_window"].max()


def test_short_histories_name_symbols_whose_history_starts_inside_the_window() -> None:
    catalog = pd.DataFrame(
        {
            "symbol": ["AAPL", "BTC/USD"],
            "first_bar": [T0 - timedelta(days=400), T0 + timedelta(days=17.5)],
            "last_bar": [T0 + timedelta(days=30)] * 2,
        }
    )
    short = metrics.short_histories(catalog, T0, ["AAPL", "BTC/USD"])
    assert short["symbol"].tolist() == ["BTC/USD"]
    assert short["history_days"].iloc[0] == pytest.approx(12.5)
    assert metrics.short_histories(catalog, T0, ["AAPL"]).empty


def test_relative_performance_against_a_symbol_and_the_peer_average() -> None:
    closes = pd.DataFrame(
        {"A": [10.0, 11.0, 12.0], "B": [20.0, 20.0, 30.0], "C": [5.0, 6.0, 4.0]},
        index=pd.DatetimeIndex([T0 + timedelta(hours=h) for h in range(3)]),
    )
    grid = metrics.Grid(closes, "test", 8760.0)
    starts = pd.Series({"A": 10.0, "B": 20.0, "C": 5.0})
    versus_b = metrics.relative_performance(grid, starts, "B", "peers")
    assert set(versus_b["symbol"]) == {"A", "C"}  # the benchmark itself is not drawn
    last_a = versus_b[versus_b["symbol"] == "A"]["rebased"].iloc[-1]
    assert last_a == pytest.approx(100 * (12 / 10) / (30 / 20))
    peers = metrics.relative_performance(grid, starts, "peers", "peers")
    last = peers.groupby("symbol")["rebased"].last()
    index = {"A": 120.0, "B": 150.0, "C": 80.0}
    for symbol, value in index.items():
        others = [v for s, v in index.items() if s != symbol]
        assert last[symbol] == pytest.approx(100 * value / (sum(others) / len(others)))


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
    assert metrics.classify_freshness(last_fetch, due, AFTER_A_TICK) == expected


AFTER_A_TICK = metrics.FetcherState(
    last_tick=datetime(2026, 3, 11, 18, 5, tzinfo=UTC), running_tick=None
)


@pytest.mark.parametrize(
    ("fetcher", "expected"),
    [
        (metrics.FetcherState(None, None), "awaiting first fetch"),
        (
            metrics.FetcherState(None, datetime(2026, 3, 11, 18, 5, tzinfo=UTC)),
            "first fetch in progress",
        ),
        (AFTER_A_TICK, "no data"),
    ],
)
def test_no_alarm_for_a_symbol_before_its_first_fetch_is_done(
    fetcher: metrics.FetcherState, expected: str
) -> None:
    due = metrics.due_fetches(HOURLY, NOW, GRACE)
    assert metrics.classify_freshness(None, due, fetcher) == expected
    assert (expected in metrics.BEHIND) == (fetcher is AFTER_A_TICK)


def test_freshness_table_lists_configured_symbols_without_data() -> None:
    stored = pd.DataFrame(
        {"symbol": ["AAPL"], "last_fetch": [pd.Timestamp("2026-03-11 18:05:20", tz="UTC")]}
    )
    table = metrics.freshness_table(stored, ["AAPL", "MSFT"], NOW, HOURLY, GRACE, AFTER_A_TICK)
    assert table[["symbol", "status"]].values.tolist() == [["AAPL", "fresh"], ["MSFT", "no data"]]
    # "Age, min" in whole minutes (24 min 40 s -> 24; 3 decimals were seen), none for no fetch
    assert table["fetch_age_minutes"].tolist() == [24, pd.NA]
    assert str(table["fetch_age_minutes"].dtype) == "Int64"


def test_sparkline_points_are_ordered_per_symbol() -> None:
    points = metrics.sparkline_points(closes_frame(SERIES))
    assert points == SERIES
