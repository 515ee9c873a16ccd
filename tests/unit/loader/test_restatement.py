"""Telling a split from a correction from nothing, on stored vs re-served bar values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.loader.restatement import classify

TIMES = [datetime(2026, 3, 2, 14, 30, tzinfo=UTC) + timedelta(hours=i) for i in range(6)]
STORED = {
    "open": np.array([235.029999, 236.5, 237.119995, 238.0, 236.75, 235.5]),
    "high": np.array([236.5, 237.25, 238.0, 238.5, 237.0, 236.0]),
    "low": np.array([234.5, 236.0, 236.75, 237.5, 235.5, 235.0]),
    "close": np.array([236.5, 237.119995, 238.0, 236.75, 235.5, 235.75]),
    "volume": np.array([4095920.0, 3100000.0, 2900000.0, 2800000.0, 3300000.0, 5100000.0]),
}


def served_after_split(ratio: float) -> dict[str, np.ndarray]:
    """The stored bars as the API re-serves them after a split: prices printed to 6 decimals."""
    prices = {c: np.round(STORED[c] / ratio, 6) for c in ("open", "high", "low", "close")}
    return {**prices, "volume": np.round(STORED["volume"] * ratio)}


def test_the_same_bars_are_no_finding() -> None:
    again = {c: v.copy() for c, v in STORED.items()}
    again["close"][2] *= 1 + 1e-14  # a last-bit difference is not a change
    assert classify(TIMES, STORED, again) is None


@pytest.mark.parametrize("ratio", [4.0, 1.5, 10.0, 0.5])
def test_all_prices_in_one_ratio_and_volume_inverse_is_a_split(ratio: float) -> None:
    finding = classify(TIMES, STORED, served_after_split(ratio))
    assert finding is not None and finding.kind == "split"
    assert finding.ratio == pytest.approx(ratio, rel=1e-8)
    assert (finding.first_bar, finding.last_bar, finding.bars_affected) == (TIMES[0], TIMES[-1], 6)


def test_a_split_of_older_bars_only_names_those_bars() -> None:
    served = served_after_split(4.0)
    for column in served:
        served[column][4:] = STORED[column][4:]  # the bars after the ex-date were already new
    finding = classify(TIMES, STORED, served)
    assert finding is not None and finding.kind == "split"
    assert (finding.first_bar, finding.last_bar, finding.bars_affected) == (TIMES[0], TIMES[3], 4)


def test_one_corrected_bar_is_a_correction_with_its_difference() -> None:
    served = {c: v.copy() for c, v in STORED.items()}
    served["close"][3] = STORED["close"][3] * 1.01
    served["high"][3] = max(STORED["high"][3], served["close"][3])
    finding = classify(TIMES, STORED, served)
    assert finding is not None and finding.kind == "correction" and finding.ratio is None
    assert finding.max_difference == pytest.approx(0.01 / 1.01, rel=1e-9)
    assert (finding.first_bar, finding.last_bar, finding.bars_affected) == (TIMES[3], TIMES[3], 1)


def test_prices_split_without_the_volume_is_a_correction() -> None:
    served = served_after_split(4.0)
    served["volume"] = STORED["volume"].copy()
    finding = classify(TIMES, STORED, served)
    assert finding is not None and finding.kind == "correction"


def test_a_volume_appearing_or_vanishing_is_a_change() -> None:
    no_volume = {**STORED, "volume": np.full(6, np.nan)}
    finding = classify(TIMES, STORED, no_volume)
    assert finding is not None and finding.kind == "correction"
    assert classify(TIMES, no_volume, {**no_volume}) is None  # crypto: no volume on both sides
