"""validate.py: every bar flows on or is quarantined once, with its reason; nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpipe.contract import RawPayload
from services.transformer.flatten import FlatSeries, flatten
from services.transformer.transform import transform_series
from services.transformer.validate import lists_newest_first, validate
from tests.unit.transformer.payloads import STOCK_META, bar, payload

NOW = datetime(2027, 1, 1, tzinfo=UTC)
GOOD = bar("2026-08-20 10:30:00", 100, volume=10)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def stock(
    values: list[Any], *, newest_first: bool = True, fetched_at: datetime = NOW
) -> RawPayload:
    return payload("AAPL", STOCK_META, values, fetched_at=fetched_at, newest_first=newest_first)


def quarantine_of(values: list[Any], **kwargs: Any) -> pd.DataFrame:
    result = transform_series(stock([GOOD, *values], newest_first=False, **kwargs), now=NOW)
    # The good bar always flows on: a bad row never takes the payload down with it.
    assert result.bars["bar_time_local"].tolist()[0] == pd.Timestamp("2026-08-20 10:30")
    assert len(result.bars) + len(result.quarantine) == 1 + len(values)
    return result.quarantine


LATER = "2026-08-20 11:30:00"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**GOOD, "datetime": LATER, "close": "abc"}, "non_numeric: close"),
        ({**GOOD, "datetime": LATER, "open": "NaN"}, "non_numeric: open"),
        ({**GOOD, "datetime": LATER, "volume": "lots"}, "non_numeric: volume"),
        (
            {k: v for k, v in GOOD.items() if k != "high"} | {"datetime": LATER},
            "missing_value: high",
        ),
        ({**GOOD, "datetime": "yesterday"}, "bad_datetime"),
        ({**GOOD, "datetime": None}, "bad_datetime"),
        (["not", "an", "object"], "malformed_row: not an object"),
        ({**GOOD, "datetime": LATER, "low": "0", "open": "0"}, "non_positive_price"),
        ({**GOOD, "datetime": LATER, "high": "99"}, "high_below_open_close"),
        ({**GOOD, "datetime": LATER, "low": "100.5"}, "low_above_open_close"),
        ({**GOOD, "datetime": LATER, "volume": "-1"}, "negative_volume"),
        ({**GOOD, "datetime": "2027-01-05 09:30:00"}, "future_bar"),
        ({**GOOD, "close": "100.5", "high": "101.5"}, "duplicate_datetime"),
        # The first rule broken wins: a bad price in the future is a bad price.
        ({**GOOD, "datetime": "2027-01-05 09:30:00", "low": "-1"}, "non_positive_price"),
    ],
)
def test_each_row_reason(row: object, reason: str) -> None:
    quarantine = quarantine_of([row])
    assert quarantine["reason"].tolist() == [reason]
    assert json.loads(quarantine["raw"].iloc[0]) == row
    assert quarantine["symbol"].iloc[0] == "AAPL"
    assert quarantine["interval"].iloc[0] == "1h"
    assert len(quarantine["payload_id"].iloc[0]) == 32
    assert quarantine["row_key"].iloc[0].endswith("#1")  # its position in the API's list


def test_future_is_judged_by_the_api_clock_not_by_now() -> None:
    """The API answered at fetched_at: a bar opening later cannot be real, whatever our clock."""
    fetched = datetime(2026, 8, 20, 16, 0, tzinfo=UTC)  # 12:00 EDT
    values = [bar("2026-08-20 11:30:00", 100), bar("2026-08-20 12:30:00", 100)]
    for now in (fetched - timedelta(days=7), fetched + timedelta(days=7)):
        result = transform_series(stock(values, fetched_at=fetched), now=now)
        assert result.bars["bar_time"].tolist() == [utc("2026-08-20 15:30")]
        assert result.quarantine["reason"].tolist() == ["future_bar"]


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
    result = transform_series(stock(values, newest_first=newest_first), now=NOW)
    assert result.quarantine["reason"].tolist() == ["out_of_order"]
    assert result.quarantine["row_key"].iloc[0].startswith("2026-08-20 09:00:00#")
    assert result.bars["bar_time_local"].dt.hour.tolist() == [9, 10, 11, 12]


def test_requested_order_decides_direction() -> None:
    values = [bar("2026-08-20 10:30:00", 100), bar("2026-08-20 09:30:00", 100)]
    body = {"meta": STOCK_META, "values": values, "status": "ok"}
    asc = RawPayload.build(
        source="demo", symbol="AAPL", interval="1h", body=body, request={"order": "asc"}
    )
    desc = asc.model_copy(update={"request": {"order": "DESC"}})
    assert transform_series(asc, now=NOW).quarantine["reason"].tolist() == ["out_of_order"]
    assert transform_series(desc, now=NOW).quarantine.empty


def flat_listing(*times: str) -> FlatSeries:
    flat = flatten(stock([bar(t, 100) for t in times], newest_first=False))
    assert isinstance(flat, FlatSeries)
    return flat


def test_direction_without_a_recorded_order() -> None:
    # Most steps go up: oldest first, and one misplaced bar cannot flip the payload.
    rising = [f"2026-08-20 {h:02d}:30:00" for h in (9, 10, 15, 11, 12)]
    assert not lists_newest_first(flat_listing(*rising))
    assert lists_newest_first(flat_listing(*rising[::-1]))
    # As many steps up as down: first against last decides.
    assert not lists_newest_first(
        flat_listing("2026-08-20 09:30:00", "2026-08-20 11:30:00", "2026-08-20 10:30:00")
    )
    # Nothing to go by (one bar, or one time repeated): the API's default, newest first.
    assert lists_newest_first(flat_listing("2026-08-20 09:30:00"))
    assert lists_newest_first(flat_listing("2026-08-20 09:30:00", "2026-08-20 09:30:00"))


def test_duplicate_keeps_the_version_listed_last_in_time_order() -> None:
    later = {**GOOD, "close": "100.5", "high": "101.5"}
    earlier_bar = bar("2026-08-20 09:30:00", 90)
    for newest_first in (False, True):
        # Listed oldest first, GOOD then `later`; newest first reverses the whole list, so
        # `later` is still the one listed last in time order.
        result = transform_series(
            stock([earlier_bar, GOOD, later], newest_first=newest_first), now=NOW
        )
        assert result.bars["close"].tolist() == [90.0, 100.5]
        assert json.loads(result.quarantine["raw"].iloc[0]) == GOOD
        assert result.quarantine["reason"].tolist() == ["duplicate_datetime"]


def test_fall_back_hour_read_in_the_payload_time_order() -> None:
    times = [
        "2026-11-01 00:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 02:00:00",
    ]
    for newest_first in (True, False):
        values = [bar(t, 100 + i) for i, t in enumerate(times)]
        result = transform_series(stock(values, newest_first=newest_first), now=NOW)
        assert result.quarantine.empty
        assert result.bars["bar_time"].tolist() == [
            utc("2026-11-01 04:00"),
            utc("2026-11-01 05:00"),  # 01:00 EDT (first occurrence)
            utc("2026-11-01 06:00"),  # 01:00 EST (the repeat)
            utc("2026-11-01 07:00"),
        ]
        assert result.bars["close"].tolist() == [100.0, 101.0, 102.0, 103.0]


def test_spring_forward_missing_hour_is_quarantined() -> None:
    times = ["2026-03-08 01:00:00", "2026-03-08 02:00:00", "2026-03-08 03:00:00"]
    result = transform_series(stock([bar(t, 100) for t in times]), now=NOW)
    assert result.bars["bar_time"].tolist() == [utc("2026-03-08 06:00"), utc("2026-03-08 07:00")]
    assert result.quarantine["reason"].tolist() == ["nonexistent_local_time"]
    assert result.quarantine["row_key"].iloc[0].startswith("2026-03-08 02:00:00")


def test_quarantine_is_deterministic_and_in_the_api_order() -> None:
    values = [
        bar("2026-08-20 09:30:00", 100),
        GOOD,
        {**GOOD, "datetime": "2026-08-20 11:30:00", "close": "x"},
        bar("2026-08-20 12:30:00", 100),
        bar("2026-08-20 08:30:00", 100),
    ]
    first = transform_series(stock(values), now=NOW).quarantine
    second = transform_series(stock(values), now=datetime(2027, 6, 1, tzinfo=UTC)).quarantine
    # Newest first: the API's list is the reverse of `values`, 08:30 comes first in it.
    assert first["reason"].tolist() == ["out_of_order", "non_numeric: close"]
    assert first["row_key"].tolist() == ["2026-08-20 08:30:00#0", "2026-08-20 11:30:00#2"]
    key = ["payload_id", "row_key", "reason", "raw"]
    assert first[key].equals(second[key])
    assert first["quarantined_at"].tolist() == [utc("2027-01-01")] * 2


@st.composite
def messy_listings(draw: st.DrawFn) -> list[Any]:
    """Hourly bars, shuffled a little, some repeated, some broken."""
    count = draw(st.integers(0, 40))
    hours = draw(st.lists(st.integers(0, 30), min_size=count, max_size=count))
    values: list[Any] = []
    for hour in hours:
        when = (datetime(2026, 8, 3, 13) + timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M:%S")
        row: Any = bar(when, draw(st.sampled_from([100.0, 101.0, 99.5])))
        breakage = draw(st.sampled_from([None] * 6 + ["close", "datetime", "list", "low"]))
        if breakage == "list":
            row = [row]
        elif breakage == "low":
            row["low"] = "1000"
        elif breakage is not None:
            row[breakage] = "?"
        values.append(row)
    return values


@settings(max_examples=80, deadline=None)
@given(values=messy_listings(), order=st.sampled_from([None, "asc", "desc"]))
def test_nothing_is_lost_or_doubled(values: list[Any], order: str | None) -> None:
    """Every API entry is either one emitted bar or one quarantine row; bars strictly rise."""
    body = {"meta": {**STOCK_META, "symbol": "AAPL"}, "values": values, "status": "ok"}
    raw = RawPayload.build(
        source="demo",
        symbol="AAPL",
        interval="1h",
        body=body,
        request={"order": order} if order else {},
        fetched_at=NOW,
    )
    flat = flatten(raw)
    assert isinstance(flat, FlatSeries)
    checked = validate(flat)
    assert len(checked.bars) + len(checked.quarantine) == len(values)
    times = checked.bars["bar_time"]
    assert times.is_monotonic_increasing and times.is_unique
    positions = [int(record["row_key"].rsplit("#", 1)[1]) for record in checked.quarantine]
    assert positions == sorted(set(positions))
    emitted = {(t, c) for t, c in zip(checked.bars["local"], checked.bars["close"], strict=True)}
    listed = {
        (pd.Timestamp(v["datetime"]), float(v["close"]))
        for i, v in enumerate(values)
        if i not in positions
    }
    assert emitted == listed
