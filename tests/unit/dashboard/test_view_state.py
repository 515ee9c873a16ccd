"""URL state: parsing never trusts the URL, and to_params round-trips."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.dashboard import view_state
from services.dashboard.view_state import DAILY, ViewState

KNOWN = ["AAPL", "BTC/USD", "MSFT"]
INTERVALS = ["1h", DAILY]


def test_defaults_for_an_empty_url() -> None:
    state = view_state.parse({}, KNOWN, INTERVALS)
    assert state == ViewState(
        view="overview", window="30d", symbol="AAPL", symbols=tuple(KNOWN), interval="1h"
    )


def test_bad_values_fall_back_and_symbols_are_validated_and_known() -> None:
    params = {
        "view": "admin",
        "window": "10y",
        "symbol": "'; DROP TABLE bars;--",
        "symbols": "msft, btc/usd,NOPE,AAPL;DELETE,MSFT",
        "interval": "1s",
    }
    state = view_state.parse(params, KNOWN, INTERVALS)
    assert state.view == "overview" and state.window == "30d" and state.interval == "1h"
    assert state.symbol == "AAPL"
    assert state.symbols == ("MSFT", "BTC/USD")


def test_custom_window_round_trips_and_bounds_cover_whole_days() -> None:
    params = {"view": "compare", "window": "custom", "start": "2026-03-01", "end": "2026-03-03"}
    state = view_state.parse(params, KNOWN, INTERVALS)
    assert (state.start, state.end) == (date(2026, 3, 1), date(2026, 3, 3))
    assert view_state.parse(view_state.to_params(state), KNOWN, INTERVALS) == state
    since, until = view_state.window_bounds(state, datetime(2030, 1, 1, tzinfo=UTC))
    assert since == datetime(2026, 3, 1, tzinfo=UTC)
    assert datetime(2026, 3, 3, 23, 59, tzinfo=UTC) < until < datetime(2026, 3, 4, tzinfo=UTC)


def test_a_reversed_custom_range_falls_back_to_the_default() -> None:
    params = {"window": "custom", "start": "2026-03-05", "end": "2026-03-01"}
    assert view_state.parse(params, KNOWN, INTERVALS).window == "30d"


def test_preset_windows_end_at_the_newest_bar() -> None:
    newest = datetime(2026, 3, 11, 18, tzinfo=UTC)
    since, until = view_state.window_bounds(ViewState(window="7d"), newest)
    assert (since, until) == (newest - timedelta(days=7), newest)


def test_hourly_bars_only_for_windows_up_to_a_month() -> None:
    assert view_state.intervals_for(ViewState(window="30d"), "1h") == ["1h", DAILY]
    assert view_state.intervals_for(ViewState(window="90d"), "1h") == [DAILY]
    day = datetime(2026, 1, 1, tzinfo=UTC)
    assert view_state.compare_daily(day, day + timedelta(days=7)) is False
    assert view_state.compare_daily(day, day + timedelta(days=30)) is True
