"""warmup.py: warm-up bars are never emitted and seed nothing (the stored series does), and a
tick never extends the stored series backwards."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from marketpipe.contract import RawPayload
from marketpipe.indicators import StoredHistory
from services.transformer.transform import transform_series
from tests.unit.transformer.payloads import CRYPTO_META, FAR_FUTURE, bar, hourly_times, payload

START = datetime(2026, 3, 1, tzinfo=UTC)
TIMES = hourly_times(START, 300)
CLOSES = [100.0 + 10 * math.sin(i / 7) for i in range(300)]
VALUES = [bar(t, c) for t, c in zip(TIMES, CLOSES, strict=True)]


def with_request(request: dict[str, object]) -> RawPayload:
    built = payload("BTC/USD", CRYPTO_META, VALUES, fetched_at=FAR_FUTURE)
    return built.model_copy(update={"request": request})


def test_bars_before_since_are_dropped_before_the_indicators() -> None:
    since = datetime(2026, 3, 10, 12, tzinfo=UTC)
    kept = [v for t, v in zip(TIMES, VALUES, strict=True) if t >= "2026-03-10 12:00:00"]
    alone = payload("BTC/USD", CRYPTO_META, kept, fetched_at=FAR_FUTURE)
    warmed = transform_series(with_request({"since": since.isoformat()}), now=FAR_FUTURE)

    assert warmed.bars["bar_time"].min() == pd.Timestamp(since)
    expected = transform_series(alone, now=FAR_FUTURE).bars
    pd.testing.assert_frame_equal(
        warmed.bars.drop(columns="payload_id"), expected.drop(columns="payload_id")
    )
    assert warmed.bars["sma_20"].isna().sum() == 19  # windows start with the kept bars


def test_a_naive_since_is_utc() -> None:
    warmed = transform_series(with_request({"since": "2026-03-10T12:00:00"}), now=FAR_FUTURE)
    assert warmed.bars["bar_time"].min() == pd.Timestamp("2026-03-10 12:00", tz="UTC")


def test_since_after_every_bar_emits_nothing() -> None:
    warmed = transform_series(with_request({"since": "2027-01-01T00:00:00Z"}), now=FAR_FUTURE)
    assert warmed.bars.empty
    assert list(warmed.bars.columns) == list(
        transform_series(with_request({}), now=FAR_FUTURE).bars.columns
    )


class StoredFrom:
    """A history reader for a series stored from ``series_start``, with nothing stored before
    the bars asked for (a tick re-serves every stored bar); records what it was asked."""

    def __init__(self, series_start: datetime) -> None:
        self.series_start = np.datetime64(series_start.replace(tzinfo=None), "us")
        self.asked: list[datetime] = []

    def __call__(self, before: datetime) -> tuple[StoredHistory, int]:
        self.asked.append(before)
        empty = StoredHistory.empty()
        return StoredHistory(empty.bars, empty.trading_date, series_start=self.series_start), 3


def test_a_tick_drops_the_bars_before_the_stored_series_first() -> None:
    series_start = datetime(2026, 3, 10, 12, tzinfo=UTC)
    history = StoredFrom(series_start)
    tick = with_request({"watermark": "2026-03-13T11:00:00+00:00", "overlap_bars": 24})
    continued = transform_series(tick, now=FAR_FUTURE, history=history)

    assert continued.bars["bar_time"].min() == pd.Timestamp(series_start)
    # The history is read again for the bars kept: nothing stored before the series' first.
    assert history.asked == [START, series_start]
    assert continued.series_version == 3
    kept = [v for t, v in zip(TIMES, VALUES, strict=True) if t >= "2026-03-10 12:00:00"]
    alone = payload("BTC/USD", CRYPTO_META, kept, fetched_at=FAR_FUTURE)
    expected = transform_series(alone, now=FAR_FUTURE).bars
    pd.testing.assert_frame_equal(
        continued.bars.drop(columns="payload_id"), expected.drop(columns="payload_id")
    )
    assert len(continued.observed) == len(VALUES)  # the restatement check still sees them all


def test_answers_that_continued_no_watermark_keep_their_older_bars() -> None:
    # A first tick (no watermark) or a backfill of older history extends the series on purpose.
    history = StoredFrom(datetime(2026, 3, 10, 12, tzinfo=UTC))
    for request in ({"watermark": None, "overlap_bars": 0}, {}):
        result = transform_series(with_request(request), now=FAR_FUTURE, history=history)
        assert result.bars["bar_time"].min() == pd.Timestamp(START)
        assert len(result.bars) == len(VALUES)
