"""timeconv.py: exchange wall time -> UTC across DST, and API text parsing."""

from __future__ import annotations

import numpy as np

from services.transformer.timeconv import (
    parse_api_datetimes,
    wall_to_utc,
)

NEW_YORK = "America/New_York"


def walls(*texts: str) -> np.ndarray:
    return np.array(texts, dtype="datetime64[s]")


def utc(*texts: str) -> list[np.datetime64]:
    return [np.datetime64(t, "us") for t in texts]


def test_repeated_fall_back_hour_reads_dst_then_standard() -> None:
    # 2026-11-01 America/New_York: 02:00 EDT -> 01:00 EST, so 01:00 happens twice.
    converted = wall_to_utc(
        walls("2026-11-01T00:00", "2026-11-01T01:00", "2026-11-01T01:00", "2026-11-01T02:00"),
        NEW_YORK,
    )
    expected = ("2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00")
    assert converted.utc.tolist() == [t.item() for t in utc(*expected)]
    assert not converted.nonexistent.any()


def test_half_hour_bars_in_the_repeated_hour_keep_time_order() -> None:
    times = ("00:30", "01:00", "01:30", "01:00", "01:30", "02:00")
    converted = wall_to_utc(walls(*(f"2026-11-01T{t}" for t in times)), NEW_YORK)
    expected = ("04:30", "05:00", "05:30", "06:00", "06:30", "07:00")
    assert converted.utc.tolist() == [t.item() for t in utc(*(f"2026-11-01T{t}" for t in expected))]


def test_a_third_occurrence_reads_as_dst_again() -> None:
    converted = wall_to_utc(walls(*["2026-11-01T01:00"] * 3), NEW_YORK)
    first, second, third = converted.utc.tolist()
    assert first == third != second


def test_spring_forward_gap_does_not_exist() -> None:
    # 2026-03-08 America/New_York: 02:00 EST jumps to 03:00 EDT.
    converted = wall_to_utc(
        walls("2026-03-08T01:00", "2026-03-08T02:00", "2026-03-08T03:00", "NaT"), NEW_YORK
    )
    assert converted.nonexistent.tolist() == [False, True, False, False]  # NaT is not a gap
    assert converted.utc[0] == np.datetime64("2026-03-08T06:00", "us")
    assert converted.utc[2] == np.datetime64("2026-03-08T07:00", "us")
    assert np.isnat(converted.utc[1]) and np.isnat(converted.utc[3])


def test_session_moves_in_utc_across_dst() -> None:
    converted = wall_to_utc(
        walls("2026-03-06T09:30", "2026-03-09T09:30", "2026-10-30T15:30", "2026-11-02T15:30"),
        NEW_YORK,
    )
    expected = ("2026-03-06T14:30", "2026-03-09T13:30", "2026-10-30T19:30", "2026-11-02T20:30")
    assert converted.utc.tolist() == [t.item() for t in utc(*expected)]


def test_parse_api_datetimes() -> None:
    parsed = parse_api_datetimes(
        ["2026-08-20 09:30:00", "2026-08-20", "yesterday", "", " 2026-01-02 "]
    )
    assert parsed[0] == np.datetime64("2026-08-20T09:30:00")
    assert parsed[1] == np.datetime64("2026-08-20T00:00:00")
    assert np.isnat(parsed[2]) and np.isnat(parsed[3])
    assert parsed[4] == np.datetime64("2026-01-02T00:00:00")
    assert parsed.dtype == np.dtype("datetime64[s]")
