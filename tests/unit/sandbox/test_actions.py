"""Splits and corrections on the model's bars: raw and split-adjusted history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from services.sandbox.actions import (
    FAULT_CORRECTION_BARS_BACK,
    CorporateActions,
    Correction,
    make_split,
    parse_splits,
)
from services.sandbox.market import model_bars

SPLIT_DAY = date(2026, 3, 12)  # a Thursday
BEFORE = datetime(2026, 3, 11, 20, 30, tzinfo=UTC)  # Wednesday, after the close
AFTER = datetime(2026, 3, 13, 18, 45, tzinfo=UTC)  # Friday, mid-session


def _actions() -> CorporateActions:
    return CorporateActions(parse_splits("AAPL@2026-03-12=4:1"))


def test_parse_splits_reads_items_and_refuses_nonsense() -> None:
    assert parse_splits("AAPL@2026-03-12=4:1, NVDA@2024-06-10=10") == [
        make_split("AAPL", "2026-03-12", 4, 1),
        make_split("NVDA", "2024-06-10", 10, 1),
    ]
    assert parse_splits("AAPL@2026-03-12=3:2")[0].ratio == 1.5
    for bad in ("NOPE@2026-03-12=4:1", "AAPL@2026-13-01=4:1", "AAPL@2026-03-12=1:1", "AAPL=4"):
        with pytest.raises(ValueError, match="bad split"):
            parse_splits(bad)


def test_nothing_changes_before_the_ex_date() -> None:
    bars = model_bars("AAPL", "1h", BEFORE, outputsize=50)
    served = _actions().apply(bars, BEFORE)
    assert served is bars


def test_after_the_split_all_history_is_divided_and_raw_keeps_old_prices() -> None:
    actions = _actions()
    model = model_bars("AAPL", "1h", AFTER, outputsize=60)
    pre = model.label_day < (SPLIT_DAY - date(1970, 1, 1)).days
    assert pre.any() and (~pre).any()
    adjusted = actions.apply(model, AFTER, "splits")
    raw = actions.apply(model, AFTER, "none")
    assert model.volume is not None and adjusted.volume is not None and raw.volume is not None
    # Raw: before the ex-date the model's prices, from it on a quarter, rounded to cents.
    np.testing.assert_array_equal(raw.close[pre], model.close[pre])
    np.testing.assert_allclose(raw.close[~pre], model.close[~pre] / 4, atol=0.006)
    np.testing.assert_array_equal(raw.volume[pre], model.volume[pre])
    np.testing.assert_array_equal(raw.volume[~pre], model.volume[~pre] * 4)
    # Adjusted: every earlier bar divided by 4 (volume times 4); later bars are the raw ones.
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(
            getattr(adjusted, column)[pre], getattr(model, column)[pre] / 4
        )
        np.testing.assert_array_equal(getattr(adjusted, column)[~pre], getattr(raw, column)[~pre])
    np.testing.assert_array_equal(adjusted.volume, raw.volume * np.where(pre, 4, 1))
    # The adjusted series has no jump at the split; the raw one falls to about a quarter.
    first_after = int(np.flatnonzero(~pre)[0])
    assert 0.8 < adjusted.open[first_after] / adjusted.close[first_after - 1] < 1.25
    assert 0.2 < raw.open[first_after] / raw.close[first_after - 1] < 0.3


def test_daily_bars_split_on_their_date_too() -> None:
    daily = model_bars("AAPL", "1day", AFTER, outputsize=5)
    adjusted = _actions().apply(daily, AFTER)
    days = [date(1970, 1, 1) + timedelta(days=int(d)) for d in daily.label_day]
    for i, day in enumerate(days):
        expected = daily.close[i] / 4 if day < SPLIT_DAY else adjusted.close[i]
        assert adjusted.close[i] == expected
    assert days[-1] >= SPLIT_DAY


def test_a_correction_is_served_from_when_it_was_made() -> None:
    actions = CorporateActions()
    bars = model_bars("MSFT", "1h", AFTER, outputsize=20)
    made = actions.correct_for_fault(bars, AFTER)
    assert isinstance(made, Correction)
    position = int(np.flatnonzero(bars.open_time == made.open_time)[0])
    assert position == int(np.flatnonzero(bars.is_complete)[-1]) - FAULT_CORRECTION_BARS_BACK
    served = actions.apply(bars, AFTER)
    changed = np.flatnonzero(served.close != bars.close)
    assert changed.tolist() == [position]
    assert served.close[position] == pytest.approx(bars.close[position] * made.factor)
    assert served.low[position] <= served.close[position] <= served.high[position]
    # An answer from before the correction was made still has the old bar.
    assert actions.apply(bars, AFTER - timedelta(seconds=1)) is bars
    # Another interval or symbol is untouched.
    other = model_bars("AAPL", "1h", AFTER, outputsize=20)
    assert actions.apply(other, AFTER) is other
