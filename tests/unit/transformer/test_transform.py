"""transform.py: the entry point's contract: columns, order, dtypes and stamps, in every case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from marketpipe.contract import (
    BATCH_ARROW_TYPES,
    OBSERVED_COLUMNS,
    OLAP_COLUMNS,
    QUARANTINE_COLUMNS,
    RawPayload,
    column_names,
)
from services.transformer.transform import TransformResult, transform_series
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)

NOW = datetime(2026, 9, 1, tzinfo=UTC)
SQL_DTYPES = {
    "text": "object",
    "jsonb": "object",
    "double precision": "float64",
    "timestamptz": "datetime64[us, UTC]",
    "timestamp": "datetime64[us]",
    "date": "datetime64[us]",
    "boolean": "bool",
    "integer": "int64",
}


def stock_payload() -> RawPayload:
    times = stock_session_times(datetime(2026, 8, 3), 5)
    values = [bar(t, 100 + i, volume=1000 + i) for i, t in enumerate(times)]
    values.append({**values[0], "close": "oops"})
    return payload("AAPL", STOCK_META, values, fetched_at=datetime(2026, 8, 10, tzinfo=UTC))


def crypto_payload() -> RawPayload:
    values = [bar(t, 70000 + i) for i, t in enumerate(hourly_times(datetime(2026, 8, 1), 60))]
    return payload("BTC/USD", CRYPTO_META, values, fetched_at=datetime(2026, 8, 3, 12, tzinfo=UTC))


def results() -> dict[str, TransformResult]:
    error = RawPayload.build(
        source="demo", symbol="AAPL", interval="1h", body={"code": 404, "status": "error"}
    )
    all_bad = payload("AAPL", STOCK_META, [{"datetime": "?"}], fetched_at=NOW)
    return {
        "stock": transform_series(stock_payload(), now=NOW),
        "crypto": transform_series(crypto_payload(), now=NOW),
        "no values": transform_series(payload("AAPL", STOCK_META, [], fetched_at=NOW), now=NOW),
        "every bar bad": transform_series(all_bad, now=NOW),
        "error body": transform_series(error, now=NOW),
    }


@pytest.mark.parametrize("case", list(results()))
def test_columns_order_and_dtypes_are_the_contract(case: str) -> None:
    result = results()[case]
    for frame, columns in (
        (result.bars, OLAP_COLUMNS),
        (result.quarantine, QUARANTINE_COLUMNS),
    ):
        assert list(frame.columns) == column_names(columns)
        assert {name: str(frame[name].dtype) for name, _ in columns} == {
            name: SQL_DTYPES[sql] for name, sql in columns
        }
        assert frame.index.equals(pd.RangeIndex(len(frame)))


@pytest.mark.parametrize("case", list(results()))
def test_the_batch_tables_hold_the_frames_values(case: str) -> None:
    """What the job sends (Arrow, built without pandas) is the frames as ``from_pandas`` sends
    them: the same values, NaN and NaT as NULL, each column in its contract Arrow type."""
    result = results()[case]
    tables = result.tables()
    for name, frame, columns in (
        ("bars", result.bars, OLAP_COLUMNS),
        ("quarantine", result.quarantine, QUARANTINE_COLUMNS),
        ("observed", result.observed, OBSERVED_COLUMNS),
    ):
        table = tables[name]
        assert table.schema == pa.schema([(c, BATCH_ARROW_TYPES[sql]) for c, sql in columns])
        via_pandas = pa.Table.from_pandas(frame, preserve_index=False)
        assert table.to_pylist() == via_pandas.to_pylist(), name


def test_what_each_case_yields() -> None:
    counts = {case: (len(r.bars), r.quarantine["reason"].tolist()) for case, r in results().items()}
    assert counts == {
        "stock": (35, ["non_numeric: close"]),
        "crypto": (60, []),
        "no values": (0, []),
        "every bar bad": (0, ["bad_datetime"]),
        "error body": (0, ["error_body: code 404: "]),
    }


def test_text_nulls_are_none_and_numbers_nan() -> None:
    bars = results()["crypto"].bars
    assert bars["exchange_timezone"].tolist() == [None] * 60
    assert bars["volume"].isna().all()
    assert bars["currency_base"].iloc[0] == "Bitcoin"


def test_now_stamps_the_output_in_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    result = transform_series(stock_payload(), now=datetime(2026, 9, 1, 2, 0, tzinfo=paris_summer))
    stamp = pd.Timestamp("2026-09-01 00:00", tz="UTC")
    assert (result.bars["transformed_at"] == stamp).all()
    assert (result.quarantine["quarantined_at"] == stamp).all()


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        transform_series(stock_payload(), now=datetime(2026, 9, 1))


def test_the_same_payload_gives_the_same_rows() -> None:
    """Replays and re-runs: apart from the transform stamps, the output depends on the payload."""
    first = transform_series(stock_payload(), now=NOW)
    again = transform_series(stock_payload(), now=NOW + timedelta(days=30))
    pd.testing.assert_frame_equal(
        first.bars.drop(columns="transformed_at"), again.bars.drop(columns="transformed_at")
    )
    pd.testing.assert_frame_equal(
        first.quarantine.drop(columns="quarantined_at"),
        again.quarantine.drop(columns="quarantined_at"),
    )


def test_bars_are_in_time_order_with_unique_times() -> None:
    bars = results()["stock"].bars
    assert bars["bar_time"].is_monotonic_increasing and bars["bar_time"].is_unique
    assert np.isnan(bars["previous_close"].iloc[0])
