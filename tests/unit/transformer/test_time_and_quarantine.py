"""DST handling, completeness, and one quarantine test per reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpipe.contract import OLAP_COLUMNS, RawPayload, column_names
from services.transformer.transform import transform_payloads
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    FOREX_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
)

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def stock(
    values: list[dict], *, newest_first: bool = True, fetched_at: datetime = NOW
) -> RawPayload:
    return payload("AAPL", STOCK_META, values, fetched_at=fetched_at, newest_first=newest_first)


# --- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("newest_first", [True, False])
def test_fall_back_repeated_hour_is_dst_then_standard(newest_first: bool) -> None:
    # 2026-11-01 America/New_York: 02:00 EDT -> 01:00 EST, so 01:00 happens twice.
    times = [
        "2026-11-01 00:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 02:00:00",
    ]
    result = transform_payloads(
        [stock([bar(t, 100 + i) for i, t in enumerate(times)], newest_first=newest_first)], now=NOW
    )
    assert result.quarantine.empty
    assert result.bars["bar_time"].tolist() == [
        utc("2026-11-01 04:00"),
        utc("2026-11-01 05:00"),  # 01:00 EDT (first occurrence)
        utc("2026-11-01 06:00"),  # 01:00 EST (the repeat)
        utc("2026-11-01 07:00"),
    ]
    assert result.bars["close"].tolist() == [100.0, 101.0, 102.0, 103.0]
    assert result.bars["bar_time_local"].dt.hour.tolist() == [0, 1, 1, 2]


def test_fall_back_half_hour_bars_keep_time_order() -> None:
    times = [
        f"2026-11-01 {h}"
        for h in ("00:30:00", "01:00:00", "01:30:00", "01:00:00", "01:30:00", "02:00:00")
    ]
    values = [bar(t, 100 + i) for i, t in enumerate(times)]
    series = payload("AAPL", STOCK_META, values, fetched_at=NOW, interval="30min")
    result = transform_payloads([series], now=NOW)
    assert result.quarantine.empty
    expected = ["04:30", "05:00", "05:30", "06:00", "06:30", "07:00"]
    assert result.bars["bar_time"].tolist() == [utc(f"2026-11-01 {t}") for t in expected]


def test_spring_forward_missing_hour_is_quarantined() -> None:
    # 2026-03-08 America/New_York: 02:00 EST jumps to 03:00 EDT; 02:00 does not exist.
    times = ["2026-03-08 01:00:00", "2026-03-08 02:00:00", "2026-03-08 03:00:00"]
    result = transform_payloads([stock([bar(t, 100) for t in times])], now=NOW)
    assert result.bars["bar_time"].tolist() == [utc("2026-03-08 06:00"), utc("2026-03-08 07:00")]
    assert result.quarantine["reason"].tolist() == ["nonexistent_local_time"]
    assert result.quarantine["row_key"].iloc[0].startswith("2026-03-08 02:00:00")


def test_session_moves_in_utc_across_dst() -> None:
    times = [
        "2026-03-06 09:30:00",
        "2026-03-09 09:30:00",
        "2026-10-30 15:30:00",
        "2026-11-02 15:30:00",
    ]
    result = transform_payloads([stock([bar(t, 100) for t in times])], now=NOW)
    assert result.bars["bar_time"].tolist() == [
        utc("2026-03-06 14:30"),  # EST
        utc("2026-03-09 13:30"),  # EDT
        utc("2026-10-30 19:30"),  # EDT
        utc("2026-11-02 20:30"),  # EST
    ]
    assert result.bars["trading_date"].dt.day.tolist() == [6, 9, 30, 2]


def test_crypto_and_forex_times_are_utc() -> None:
    times = hourly_times(datetime(2026, 3, 8, 0), 5)
    crypto = payload("BTC/USD", CRYPTO_META, [bar(t, 10) for t in times], fetched_at=NOW)
    forex = payload(
        "EUR/USD", FOREX_META, [bar(t, 1.1, spread=0.01) for t in times], fetched_at=NOW
    )
    result = transform_payloads([crypto, forex], now=NOW)
    for symbol, asset_class in (("BTC/USD", "crypto"), ("EUR/USD", "forex")):
        rows = result.bars[result.bars["symbol"] == symbol]
        assert rows["asset_class"].unique().tolist() == [asset_class]
        assert rows["bar_time"].tolist() == [utc(t) for t in times]


def test_last_stock_bar_of_the_day_ends_at_the_close() -> None:
    values = [bar("2026-08-20 14:30:00", 100, volume=5), bar("2026-08-20 15:30:00", 101, volume=5)]
    # 15:30 bar ends at 16:00 EDT = 20:00Z, not 16:30.
    before = transform_payloads(
        [stock(values, fetched_at=datetime(2026, 8, 20, 19, 59, tzinfo=UTC))], now=NOW
    )
    after = transform_payloads(
        [stock(values, fetched_at=datetime(2026, 8, 20, 20, 0, tzinfo=UTC))], now=NOW
    )
    assert before.bars["is_complete"].tolist() == [True, False]
    assert after.bars["is_complete"].tolist() == [True, True]
    assert not before.daily["is_complete"].iloc[0]


# --- daily -----------------------------------------------------------------------------------


def test_daily_aggregates_per_session_and_utc_day() -> None:
    values = [
        bar("2026-08-20 09:30:00", 10, volume=100, spread=1),
        bar("2026-08-20 10:30:00", 12, volume=300, spread=2),
        bar("2026-08-21 09:30:00", 11, volume=200, spread=1),
    ]
    result = transform_payloads([stock(values)], now=NOW)
    daily = result.daily
    assert daily["trading_date"].tolist() == [
        pd.Timestamp("2026-08-20"),
        pd.Timestamp("2026-08-21"),
    ]
    first = daily.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 14.0, 9.0, 12.0)
    assert first["volume"] == 400.0
    assert first["vwap"] == pytest.approx((10 * 100 + 12 * 300) / 400)
    assert first["range"] == 5.0
    assert first["bar_count"] == 2
    assert pd.isna(first["change"])
    assert daily.iloc[1]["change"] == -1.0
    assert daily.iloc[1]["pct_change"] == pytest.approx(-100 / 12)
    crypto_times = ["2026-08-20 22:00:00", "2026-08-20 23:00:00", "2026-08-21 00:00:00"]
    crypto = payload("BTC/USD", CRYPTO_META, [bar(t, 5) for t in crypto_times], fetched_at=NOW)
    crypto_daily = transform_payloads([crypto], now=NOW).daily
    assert crypto_daily["bar_count"].tolist() == [2, 1]
    assert crypto_daily["volume"].isna().all()
    assert crypto_daily["vwap"].isna().all()


# --- quarantine ------------------------------------------------------------------------------

GOOD = bar("2026-08-20 10:30:00", 100, volume=10)


def quarantine_of(values: list, **kwargs: object) -> pd.DataFrame:
    result = transform_payloads([stock([GOOD, *values], newest_first=False, **kwargs)], now=NOW)
    # The good bar always flows on: a bad row never takes the payload down with it.
    assert result.bars["bar_time_local"].tolist()[0] == pd.Timestamp("2026-08-20 10:30")
    assert len(result.bars) + len(result.quarantine) == 1 + len(values)
    return result.quarantine


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "close": "abc"}, "non_numeric: close"),
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "open": "NaN"}, "non_numeric: open"),
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "volume": "lots"}, "non_numeric: volume"),
        (
            {k: v for k, v in GOOD.items() if k != "high"} | {"datetime": "2026-08-20 11:30:00"},
            "missing_value: high",
        ),
        ({**GOOD, "datetime": "yesterday"}, "bad_datetime"),
        ({**GOOD, "datetime": None}, "bad_datetime"),
        (["not", "an", "object"], "malformed_row: not an object"),
        (
            {**GOOD, "datetime": "2026-08-20 11:30:00", "low": "0", "open": "0"},
            "non_positive_price",
        ),
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "high": "99"}, "high_below_open_close"),
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "low": "100.5"}, "low_above_open_close"),
        ({**GOOD, "datetime": "2026-08-20 11:30:00", "volume": "-1"}, "negative_volume"),
        ({**GOOD, "datetime": "2027-01-05 09:30:00"}, "future_bar"),
        ({**GOOD, "close": "100.5", "high": "101.5"}, "duplicate_datetime"),
    ],
)
def test_each_row_reason(row: object, reason: str) -> None:
    quarantine = quarantine_of([row])
    assert quarantine["reason"].tolist() == [reason]
    assert json.loads(quarantine["raw"].iloc[0]) == row
    assert quarantine["symbol"].iloc[0] == "AAPL"
    assert len(quarantine["payload_id"].iloc[0]) == 32


@pytest.mark.parametrize("newest_first", [True, False])
def test_out_of_order_bar(newest_first: bool) -> None:
    times = [
        "2026-08-20 09:30:00",
        "2026-08-20 10:30:00",
        "2026-08-20 11:30:00",
        "2026-08-20 12:30:00",
    ]
    values = [bar(t, 100) for t in times]
    values.insert(2, bar("2026-08-20 09:00:00", 100))  # listed after 10:30 in time order
    result = transform_payloads([stock(values, newest_first=newest_first)], now=NOW)
    assert result.quarantine["reason"].tolist() == ["out_of_order"]
    assert result.quarantine["row_key"].iloc[0].startswith("2026-08-20 09:00:00#")
    assert result.bars["bar_time_local"].dt.hour.tolist() == [9, 10, 11, 12]


def test_requested_order_decides_direction() -> None:
    values = [bar("2026-08-20 10:30:00", 100), bar("2026-08-20 09:30:00", 100)]
    body = {"meta": STOCK_META, "values": values, "status": "ok"}
    asc = RawPayload.build(
        source="demo", symbol="AAPL", interval="1h", body=body, request={"order": "asc"}
    )
    desc = RawPayload.build(
        source="demo", symbol="AAPL", interval="1h", body=body, request={"order": "DESC"}
    )
    assert transform_payloads([asc], now=NOW).quarantine["reason"].tolist() == ["out_of_order"]
    assert transform_payloads([desc], now=NOW).quarantine.empty


def test_duplicate_keeps_the_newest_version() -> None:
    later = {**GOOD, "close": "100.5", "high": "101.5"}
    earlier_bar = bar("2026-08-20 09:30:00", 90)
    # Listed oldest first; of two versions of 10:30 the one listed later is the newer one.
    result = transform_payloads([stock([earlier_bar, GOOD, later], newest_first=False)], now=NOW)
    assert result.bars["close"].tolist() == [90.0, 100.5]
    assert json.loads(result.quarantine["raw"].iloc[0]) == GOOD
    # Across payloads: the most recently fetched payload wins.
    old = stock([GOOD], fetched_at=datetime(2026, 8, 20, 18, tzinfo=UTC))
    new = stock([later], fetched_at=datetime(2026, 8, 20, 19, tzinfo=UTC))
    for batch in ([old, new], [new, old]):
        result = transform_payloads(batch, now=NOW)
        assert result.bars["close"].tolist() == [100.5]
        assert result.bars["payload_id"].tolist() == [new.payload_id]
        assert result.quarantine["payload_id"].tolist() == [old.payload_id]
        assert result.quarantine["reason"].tolist() == ["duplicate_datetime"]


def _whole(body: object, **kwargs: object) -> pd.DataFrame:
    raw = RawPayload.build(source="demo", symbol="AAPL", interval="1h", body=body, **kwargs)
    result = transform_payloads([raw], now=NOW)
    assert result.bars.empty
    assert len(result.quarantine) == 1
    row = result.quarantine.iloc[0]
    assert row["row_key"] == ""
    assert row["payload_id"] == raw.payload_id
    assert json.loads(row["raw"]) == body
    return result.quarantine


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        ({"code": 429, "message": "out of credits", "status": "error"}, "error_body"),
        (
            {"code": 400, "message": "bad", "status": "error", "meta": {"symbol": "AAPL"}},
            "error_body",
        ),
        ([1, 2, 3], "unknown_shape"),
        ("<html>502</html>", "unknown_shape"),
        ({"values": [], "status": "ok"}, "unknown_shape"),
        ({"meta": STOCK_META, "values": {"a": 1}, "status": "ok"}, "unknown_shape"),
        (
            {"meta": {**STOCK_META, "interval": "1day"}, "values": [], "status": "ok"},
            "unknown_shape",
        ),
        ({"meta": {**STOCK_META, "symbol": "MSFT"}, "values": [], "status": "ok"}, "unknown_shape"),
        (
            {"meta": {"symbol": "AAPL", "interval": "1h"}, "values": [GOOD], "status": "ok"},
            "unknown_meta_shape",
        ),
        (
            {
                "meta": {**STOCK_META, "exchange_timezone": "Mars/Olympus"},
                "values": [GOOD],
                "status": "ok",
            },
            "unknown_meta_shape",
        ),
    ],
)
def test_whole_payload_reasons(body: object, reason_start: str) -> None:
    quarantine = _whole(body)
    assert quarantine["reason"].iloc[0].startswith(reason_start)


def test_empty_values_yield_nothing_and_no_error() -> None:
    result = transform_payloads([stock([])], now=NOW)
    assert result.bars.empty and result.quarantine.empty and result.daily.empty
    assert list(result.bars.columns) == column_names(OLAP_COLUMNS)


def test_batch_wrapped_body_is_unwrapped() -> None:
    inner = {"meta": {**STOCK_META}, "values": [GOOD], "status": "ok"}
    raw = RawPayload.build(source="demo", symbol="AAPL", interval="1h", body={"AAPL": inner})
    assert len(transform_payloads([raw], now=NOW).bars) == 1


def test_quarantine_is_deterministic() -> None:
    values = [
        bar("2026-08-20 09:30:00", 100),
        GOOD,
        {**GOOD, "datetime": "2026-08-20 11:30:00", "close": "x"},
        bar("2026-08-20 12:30:00", 100),
        bar("2026-08-20 08:30:00", 100),
    ]
    first = transform_payloads([stock(values)], now=NOW).quarantine
    second = transform_payloads([stock(values)], now=datetime(2027, 6, 1, tzinfo=UTC)).quarantine
    assert sorted(first["reason"]) == ["non_numeric: close", "out_of_order"]
    key = ["payload_id", "row_key", "reason", "raw"]
    assert len(first) == 2
    assert first[key].equals(second[key])
    assert not first[["payload_id", "row_key", "reason"]].duplicated().any()
    assert str(first["quarantined_at"].dtype) == "datetime64[us, UTC]"
    assert first["quarantined_at"].iloc[0] == utc("2027-01-01")


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_series_time_order_equals_the_sort(counts: list[int], seed: int) -> None:
    """One payload per series: reordering whole payloads gives lexsort's order, ties included."""
    from services.transformer.validate import _series_time_order

    rng = np.random.default_rng(seed)
    payload_index = np.repeat(np.arange(len(counts)), counts)
    # Times never decrease within a payload (the out-of-order rule ran); equal times happen.
    utc = np.concatenate([np.sort(rng.integers(0, 20, c)) for c in counts]).astype(np.int64)
    oriented = np.concatenate([np.arange(c) for c in counts]).astype(np.int64)
    series_of_payload = rng.permutation(len(counts)).astype(np.int64)
    series = series_of_payload[payload_index]
    fetched_rank = rng.permutation(len(counts))[payload_index]
    rows = np.arange(payload_index.size)
    got = _series_time_order(
        rows, payload_index, series_of_payload, series, utc, fetched_rank, oriented
    )
    want = rows[np.lexsort((oriented, fetched_rank, utc, series))]
    assert np.array_equal(got, want)
