"""URL state: parsing never trusts the URL, and to_params round-trips."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.dashboard import charts, view_state
from services.dashboard.view_state import DAILY, WINDOWS, ViewState

KNOWN = ["AAPL", "BTC/USD", "MSFT"]
INTERVALS = ["1h", DAILY]
OVERLAYS = list(charts.OVERLAYS)


def test_defaults_for_an_empty_url() -> None:
    state = view_state.parse({}, KNOWN, INTERVALS, OVERLAYS)
    assert state == ViewState(
        view="overview", window="1m", symbol="AAPL", symbols=tuple(KNOWN), interval="1h"
    )


def test_bad_values_fall_back_and_symbols_are_validated_and_known() -> None:
    params = {
        "view": "admin",
        "window": "10y",
        "symbol": "'; DROP TABLE bars;--",
        "symbols": "msft, btc/usd,NOPE,AAPL;DELETE,MSFT",
        "interval": "1s",
        "overlays": "SMA 20,<script>",
        "relative": "NOPE",
    }
    state = view_state.parse(params, KNOWN, INTERVALS, OVERLAYS)
    assert state.view == "overview" and state.window == "1m" and state.interval == "1h"
    assert state.symbol == "AAPL"
    assert state.symbols == ("MSFT", "BTC/USD")
    assert state.overlays == ("SMA 20",)
    assert state.relative == ""
    # what the link asked for and is not here is reported, not silently replaced
    assert "NOPE" in state.unknown and "'; DROP TABLE bars;--"[:24] in state.unknown


def test_an_unknown_but_well_formed_symbol_is_reported() -> None:
    state = view_state.parse({"view": "instrument", "symbol": "TSLA"}, KNOWN, INTERVALS)
    assert state.symbol == "AAPL" and state.unknown == ("TSLA",)
    assert view_state.parse({"symbol": "MSFT"}, KNOWN, INTERVALS).unknown == ()


def test_every_choice_round_trips_through_the_url() -> None:
    state = ViewState(
        view="compare",
        window="6m",
        symbol="MSFT",
        symbols=("AAPL", "BTC/USD"),
        interval=DAILY,
        utc=True,
        overlays=("EMA 12", "Bollinger bands"),
        log_scale=True,
        relative="peers",
    )
    assert view_state.parse(view_state.to_params(state), KNOWN, INTERVALS, OVERLAYS) == state
    benchmark = ViewState(symbols=("AAPL",), relative="BTC/USD", symbol="AAPL", interval="1h")
    assert view_state.parse(view_state.to_params(benchmark), KNOWN, INTERVALS) == benchmark


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
    assert view_state.parse(params, KNOWN, INTERVALS).window == "1m"


@pytest.mark.parametrize(("old", "new"), [("7d", "5d"), ("30d", "1m"), ("90d", "3m")])
def test_links_shared_before_the_horizon_buttons_keep_their_window(old: str, new: str) -> None:
    assert view_state.parse({"window": old}, KNOWN, INTERVALS).window == new


def test_horizons_end_at_the_newest_bar() -> None:
    newest = datetime(2026, 3, 11, 18, tzinfo=UTC)
    oldest = datetime(2025, 2, 1, tzinfo=UTC)
    bounds = {w: view_state.window_bounds(ViewState(window=w), newest, oldest) for w in WINDOWS}
    assert all(until == newest for _, until in bounds.values())
    assert bounds["5d"][0] == newest - timedelta(days=7)
    assert bounds["1m"][0] == newest - timedelta(days=30)
    assert bounds["ytd"][0] == datetime(2026, 1, 1, tzinfo=UTC)
    assert bounds["max"][0] == oldest
    starts = [bounds[w][0] for w in ("1d", "5d", "1m", "3m", "6m", "1y", "5y")]
    assert starts == sorted(starts, reverse=True)


def test_hourly_bars_only_for_windows_up_to_a_month() -> None:
    day = datetime(2026, 1, 1, tzinfo=UTC)
    assert view_state.intervals_for(day, day + timedelta(days=30), ["1h"]) == ["1h", DAILY]
    assert view_state.intervals_for(day, day + timedelta(days=91), ["1h"]) == [DAILY]
    # Every stored interval is offered: intraday shortest first, the API's 1day once.
    stored = ["1h", "1day", "15min", "1week"]
    month = day + timedelta(days=30)
    assert view_state.intervals_for(day, month, stored) == ["15min", "1h", DAILY, "1week"]
    assert view_state.intervals_for(day, day + timedelta(days=91), stored) == [DAILY, "1week"]
    assert view_state.compare_daily(day, day + timedelta(days=7)) is False
    assert view_state.compare_daily(day, day + timedelta(days=30)) is True
