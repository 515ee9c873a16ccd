"""warmup.py: warm-up bars are never emitted and seed nothing (the stored series does)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from marketpipe.contract import RawPayload
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
