"""Warm-up bars make the newer bars exact and are never emitted themselves."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from services.transformer.transform import transform_payloads
from tests.unit.transformer.payloads import CRYPTO_META, FAR_FUTURE, bar, hourly_times, payload

START = datetime(2026, 3, 1, tzinfo=UTC)
TIMES = hourly_times(START, 300)
CLOSES = [100.0 + 10 * math.sin(i / 7) for i in range(300)]
VALUES = [bar(t, c) for t, c in zip(TIMES, CLOSES, strict=True)]


def with_request(request: dict[str, object]) -> object:
    built = payload("BTC/USD", CRYPTO_META, VALUES, fetched_at=FAR_FUTURE)
    return built.model_copy(update={"request": request})


def test_bars_before_since_are_dropped_and_the_rest_are_exact() -> None:
    since = datetime(2026, 3, 10, 12, tzinfo=UTC)
    full = transform_payloads([with_request({})], now=FAR_FUTURE)
    warmed = transform_payloads([with_request({"since": since.isoformat()})], now=FAR_FUTURE)

    assert warmed.bars["bar_time"].min() == pd.Timestamp(since)
    expected = full.bars[full.bars["bar_time"] >= pd.Timestamp(since)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        warmed.bars.drop(columns="transformed_at"), expected.drop(columns="transformed_at")
    )
    assert warmed.bars["sma_200"].notna().all()  # only exact values leave the transformer
    assert pd.to_datetime(warmed.daily["trading_date"]).min() == pd.Timestamp("2026-03-09")


def test_a_payload_cut_by_its_outputsize_gives_no_daily_row_for_its_first_day() -> None:
    cut = transform_payloads([with_request({"outputsize": 300})], now=FAR_FUTURE)
    whole = transform_payloads([with_request({"outputsize": 5000})], now=FAR_FUTURE)
    whole_days = sorted(pd.to_datetime(whole.daily["trading_date"]))
    assert sorted(pd.to_datetime(cut.daily["trading_date"])) == whole_days[1:]
    assert len(cut.bars) == len(whole.bars) == 300
