"""warmup.py: warm-up bars make the newer bars exact and are never emitted themselves."""

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


def test_bars_before_since_are_dropped_and_the_rest_are_exact() -> None:
    since = datetime(2026, 3, 10, 12, tzinfo=UTC)
    full = transform_series(with_request({}), now=FAR_FUTURE)
    warmed = transform_series(with_request({"since": since.isoformat()}), now=FAR_FUTURE)

    assert warmed.bars["bar_time"].min() == pd.Timestamp(since)
    expected = full.bars[full.bars["bar_time"] >= pd.Timestamp(since)].reset_index(drop=True)
    pd.testing.assert_frame_equal(warmed.bars, expected)
    assert warmed.bars["sma_200"].notna().all()  # only exact values leave the transformer


def test_a_naive_since_is_utc() -> None:
    warmed = transform_series(with_request({"since": "2026-03-10T12:00:00"}), now=FAR_FUTURE)
    assert warmed.bars["bar_time"].min() == pd.Timestamp("2026-03-10 12:00", tz="UTC")


def test_since_after_every_bar_emits_nothing() -> None:
    warmed = transform_series(with_request({"since": "2027-01-01T00:00:00Z"}), now=FAR_FUTURE)
    assert warmed.bars.empty
    assert list(warmed.bars.columns) == list(
        transform_series(with_request({}), now=FAR_FUTURE).bars.columns
    )
