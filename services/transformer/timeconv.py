"""Time parsing of the transformer: API text -> wall time -> UTC (market rules: marketpipe.market).

Twelve Data stamps intraday bars with their *open* time as naive wall-clock text: stocks in the
exchange's time zone (whose UTC offset moves at DST), crypto and forex in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIME_UNIT = "us"  # PostgreSQL timestamps have microsecond resolution; so do our columns.
NAIVE_DTYPE = f"datetime64[{TIME_UNIT}]"


def parse_api_datetimes(text: Sequence[str]) -> np.ndarray:
    """Parse 'YYYY-MM-DD[ HH:MM:SS]' text to naive datetime64[s]; unparseable text gives NaT.

    A list of str is parsed directly by numpy's C parser; only a list holding something it
    refuses is parsed value by value.
    """
    try:
        return np.array(text, dtype="datetime64[s]")
    except (ValueError, TypeError):
        return np.array([_parse_one(value) for value in text], dtype="datetime64[s]")


def _parse_one(value: str) -> np.datetime64:
    try:
        return np.datetime64(value.strip(), "s") if value.strip() else np.datetime64("NaT", "s")
    except ValueError:
        return np.datetime64("NaT", "s")


@dataclass(frozen=True)
class UtcTimes:
    utc: np.ndarray  # datetime64[us] (UTC, naive representation), NaT where nonexistent
    nonexistent: np.ndarray  # bool: the wall time does not exist in the zone (spring forward)


def wall_to_utc(wall: np.ndarray, timezone: str) -> UtcTimes:
    """UTC times of one zone's wall times, which must be listed in time order.

    A wall time repeated when clocks fall back (01:00-02:00 twice in New York) is read as DST at
    its first occurrence and as standard time at the repeat, because bars come in time order; a
    third occurrence reads as DST again. Wall times skipped when clocks spring forward do not
    exist: NaT, flagged ``nonexistent``.
    """
    index = pd.DatetimeIndex(wall.astype(NAIVE_DTYPE))
    size = len(index)
    as_dst = index.tz_localize(timezone, ambiguous=np.ones(size, bool), nonexistent="NaT")
    as_std = index.tz_localize(timezone, ambiguous=np.zeros(size, bool), nonexistent="NaT")
    ambiguous = np.asarray(as_dst != as_std) & np.asarray(as_dst.notna())
    is_dst = np.ones(size, bool)
    if ambiguous.any():
        repeated = pd.Series(index[ambiguous])
        is_dst[ambiguous] = repeated.groupby(repeated).cumcount().to_numpy() % 2 == 0
    utc_dst = np.asarray(as_dst.tz_convert("UTC").tz_localize(None))
    utc_std = np.asarray(as_std.tz_convert("UTC").tz_localize(None))
    nonexistent = np.asarray(as_dst.isna()) & ~np.asarray(index.isna())
    return UtcTimes(utc=np.where(is_dst, utc_dst, utc_std), nonexistent=nonexistent)
