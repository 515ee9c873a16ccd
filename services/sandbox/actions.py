"""Corporate actions and vendor corrections: how served history changes after the fact.

The market model (market.py) gives one continuous price path per symbol. A **split** with ex-date
D and ratio R (a 4-for-1 split: R = 4) makes that path a traded price of path / R from D on:

* raw prices (``adjust=none``): bars dated before D are the path, bars dated D or later the path
  divided by R, rounded as the API stores prices; raw volumes are multiplied by R from D on;
* split-adjusted prices (``adjust=splits``, the API's default): every bar, old or new, divided by
  the ratio of the splits after its date that have happened by the day of the request (so after
  the split every earlier bar is divided by R and its volume multiplied by R, as the real API
  does), not rounded again: the API prints adjusted prices with more decimals.

Before its ex-date a split is not known to the API: nothing is adjusted. A **correction** is a
vendor fixing one bar after the fact: from the moment it is made, every answer that holds the bar
serves its close multiplied by a factor (high and low widened to keep the bar consistent).

Assumed (not documented): ``adjust=all`` and ``adjust=dividends`` behave as ``splits`` and
``none`` (the sandbox pays no dividends); a week or month bar is adjusted by its first session's
date; corrections are per interval (a corrected hourly bar leaves the daily bar as it was).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from services.sandbox.market import BarSeries, get_instrument, round_prices

ADJUST_MODES: Final = ("all", "splits", "dividends", "none")
# A correction the `correct_bar` fault makes: this many complete bars before the newest
# complete one (inside any overlap a client re-fetches), close moved by this factor.
FAULT_CORRECTION_BARS_BACK: Final = 5
FAULT_CORRECTION_FACTOR: Final = 1.01
_EPOCH: Final = date(1970, 1, 1)


@dataclass(frozen=True)
class Split:
    """``to_factor``-for-``from_factor`` (a 4-for-1 split: to 4, from 1) on ``ex_date``."""

    symbol: str
    ex_date: date
    to_factor: float
    from_factor: float = 1.0

    @property
    def ratio(self) -> float:
        """What a price is divided by (and a volume multiplied by) across the split."""
        return self.to_factor / self.from_factor

    def description(self) -> str:
        return f"{_number(self.to_factor)}-for-{_number(self.from_factor)} split"


@dataclass(frozen=True)
class Correction:
    """The vendor's fix of one bar: served from ``made_at`` (sandbox time) on."""

    symbol: str
    interval: str
    open_time: int  # UTC epoch seconds of the bar's open
    factor: float
    made_at: datetime


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def parse_splits(spec: str) -> list[Split]:
    """``SYMBOL@YYYY-MM-DD=TO:FROM`` items, comma-separated (``AAPL@2026-03-12=4:1``)."""
    splits = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            symbol, _, rest = item.partition("@")
            day, _, factors = rest.partition("=")
            to_text, _, from_text = factors.partition(":")
            splits.append(
                make_split(symbol, day, float(to_text), float(from_text) if from_text else 1.0)
            )
        except ValueError as exc:
            raise ValueError(
                f"bad split {item!r} (expected SYMBOL@YYYY-MM-DD=TO:FROM): {exc}"
            ) from None
    return splits


def make_split(
    symbol: str, ex_date: str | date, to_factor: float, from_factor: float = 1.0
) -> Split:
    """A validated split of a symbol the sandbox knows."""
    canonical = symbol.strip().upper()
    if get_instrument(canonical) is None:
        raise ValueError(f"unknown symbol {symbol!r}")
    day = ex_date if isinstance(ex_date, date) else date.fromisoformat(str(ex_date).strip())
    if not (to_factor > 0 and from_factor > 0) or to_factor == from_factor:
        raise ValueError("factors must be positive and differ")
    return Split(canonical, day, float(to_factor), float(from_factor))


def _local_day(moment: datetime, zone: str) -> int:
    return (moment.astimezone(ZoneInfo(zone)).date() - _EPOCH).days


class CorporateActions:
    """The sandbox's splits and corrections; thread-safe, changed through settings and admin."""

    def __init__(self, splits: list[Split] | None = None) -> None:
        self._lock = threading.Lock()
        self._splits: list[Split] = list(splits or [])
        self._corrections: list[Correction] = []

    def add_split(self, split: Split) -> None:
        with self._lock:
            self._splits.append(split)

    def add_correction(self, correction: Correction) -> None:
        with self._lock:
            self._corrections.append(correction)

    def clear(self) -> None:
        with self._lock:
            self._splits.clear()
            self._corrections.clear()

    def splits(self, symbol: str | None = None) -> list[Split]:
        with self._lock:
            return [s for s in self._splits if symbol is None or s.symbol == symbol]

    def corrections(self) -> list[Correction]:
        with self._lock:
            return list(self._corrections)

    def effective_splits(self, symbol: str, now: datetime) -> list[Split]:
        """Splits of ``symbol`` whose ex-date has come on the exchange's calendar at ``now``."""
        instrument = get_instrument(symbol)
        if instrument is None:
            return []
        today = _local_day(now, instrument.exchange_timezone)
        return sorted(
            (s for s in self.splits(symbol) if (s.ex_date - _EPOCH).days <= today),
            key=lambda s: s.ex_date,
        )

    def ratio_at(self, symbol: str, moment: datetime) -> float:
        """What the model's price is divided by at ``moment``: the splits made by then (a live
        price after a 4-for-1 split is a quarter of the unsplit model's, as the raw bars are)."""
        if not self.splits(symbol):
            return 1.0
        return float(np.prod([s.ratio for s in self.effective_splits(symbol, moment)]))

    def apply(self, bars: BarSeries, now: datetime, adjust: str = "splits") -> BarSeries:
        """``bars`` of the model as the API serves them at ``now`` (see the module docstring)."""
        splits = self.effective_splits(bars.instrument.symbol, now)
        fixes = [
            c
            for c in self.corrections()
            if c.symbol == bars.instrument.symbol
            and c.interval == bars.interval
            and c.made_at <= now
        ]
        if (not splits and not fixes) or len(bars) == 0:
            return bars
        open_, high, low, close = (a.copy() for a in (bars.open, bars.high, bars.low, bars.close))
        volume = None if bars.volume is None else bars.volume.astype(np.float64)
        for fix in fixes:
            at = np.flatnonzero(bars.open_time == fix.open_time)
            close[at] = close[at] * fix.factor
            high[at] = np.maximum(high[at], close[at])
            low[at] = np.minimum(low[at], close[at])
        # Ratio of the splits that had happened by each bar's date (raw prices), and by now.
        before = np.ones(len(bars))
        for split in splits:
            before[bars.label_day >= (split.ex_date - _EPOCH).days] *= split.ratio
        split_bars = np.flatnonzero(before != 1.0)
        for prices in (open_, high, low, close):
            prices[split_bars] = round_prices(
                bars.instrument, prices[split_bars] / before[split_bars]
            )
        if volume is not None:
            volume = volume * before
        if adjust in ("splits", "all"):
            after = np.prod([s.ratio for s in splits]) / before
            open_, high, low, close = (p / after for p in (open_, high, low, close))
            if volume is not None:
                volume = volume * after
        return replace(
            bars,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=None if volume is None else np.round(volume).astype(np.int64),
        )

    def correct_for_fault(self, bars: BarSeries, now: datetime) -> Correction | None:
        """The `correct_bar` fault: fix a complete bar a few bars before the newest complete one."""
        complete = np.flatnonzero(bars.is_complete)
        if len(complete) <= FAULT_CORRECTION_BARS_BACK:
            return None
        position = int(complete[-1 - FAULT_CORRECTION_BARS_BACK])
        correction = Correction(
            bars.instrument.symbol,
            bars.interval,
            int(bars.open_time[position]),
            FAULT_CORRECTION_FACTOR,
            now.astimezone(UTC),
        )
        self.add_correction(correction)
        return correction
