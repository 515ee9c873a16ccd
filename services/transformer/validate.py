"""Row validation: every bar either flows on or lands in quarantine with its reason.

Rules, checked in this order (a bar is recorded once, under the first rule it breaks):

1. flatten's findings: ``malformed_row``, ``bad_datetime``, ``missing_value: <field>``,
   ``non_numeric: <field>`` (also NaN / inf);
2. ``nonexistent_local_time``: a stock wall time inside the spring-forward gap;
3. ``non_positive_price``: any of open, high, low, close <= 0;
4. ``high_below_open_close`` / ``low_above_open_close``;
5. ``negative_volume``;
6. ``future_bar``: the bar opens after the API's clock when it answered (``fetched_at``, from
   its Date header): the API cannot have a bar that has not opened yet;
7. ``out_of_order``: read in the payload's own direction (the request's ``order`` if recorded,
   else the direction most steps between neighbours take; the API's default is newest first),
   the bar is earlier than a bar listed before it;
8. ``duplicate_datetime``: another bar has the same UTC time; the one listed last in time order
   is kept (it overwrote the earlier one, as an upsert would).

Ambiguous wall times (the hour repeated when clocks fall back): see ``timeconv.wall_to_utc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marketpipe.contract import RawPayload
from services.transformer.flatten import FlatSeries, PayloadRejection, to_json
from services.transformer.timeconv import NAIVE_DTYPE, wall_to_utc

# One quarantine row: payload_id, symbol, interval, row_key, reason, raw (quarantined_at is
# added by the caller).
QuarantineRecord = dict[str, str]
BAR_VALUES = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ValidatedSeries:
    """``bars``: the valid bars in time order, one per UTC time: bar_time (UTC, naive
    datetime64[us]), local (exchange wall time, naive), open..volume.
    ``quarantine``: one record per rejected bar, in the API's order."""

    bars: pd.DataFrame
    quarantine: list[QuarantineRecord]


def validate(flat: FlatSeries) -> ValidatedSeries:
    # Everything below reads the bars in time order; the rows keep their index, the position
    # in the API's list.
    newest_first = lists_newest_first(flat)
    rows = flat.rows.iloc[::-1] if newest_first else flat.rows
    issue = rows["issue"].to_numpy(dtype=object, copy=True)
    local = rows["local"].to_numpy().astype(NAIVE_DTYPE)
    utc = local.copy()
    if flat.exchange_timezone is not None:  # stocks; crypto and forex are stamped in UTC
        converted = wall_to_utc(local, flat.exchange_timezone)
        utc = converted.utc
        _flag(issue, converted.nonexistent, "nonexistent_local_time")

    open_, high, low, close, volume = (rows[name].to_numpy() for name in BAR_VALUES)
    _flag(issue, (open_ <= 0) | (high <= 0) | (low <= 0) | (close <= 0), "non_positive_price")
    _flag(issue, high < np.maximum(open_, close), "high_below_open_close")
    _flag(issue, low > np.minimum(open_, close), "low_above_open_close")
    _flag(issue, volume < 0, "negative_volume")
    api_now = np.datetime64(flat.fetched_at.tz_localize(None), "us")
    _flag(issue, utc > api_now, "future_bar")

    # Out of order: earlier than a valid bar before it. Afterwards valid times never decrease,
    # so equal neighbours are the duplicates, and the last of each run is the newest version.
    valid = np.flatnonzero(pd.isna(issue))
    times = utc[valid]
    _flag(issue, _at(valid[times < np.maximum.accumulate(times)], len(issue)), "out_of_order")
    valid = np.flatnonzero(pd.isna(issue))
    times = utc[valid]
    listed_again_later = np.zeros(len(times), bool)
    listed_again_later[:-1] = times[1:] == times[:-1]
    _flag(issue, _at(valid[listed_again_later], len(issue)), "duplicate_datetime")
    kept = valid[~listed_again_later]

    bars = pd.DataFrame(
        {
            "bar_time": utc[kept],
            "local": local[kept],
            **{name: rows[name].to_numpy()[kept] for name in BAR_VALUES},
        }
    )
    api_order_issue = issue[::-1] if newest_first else issue
    return ValidatedSeries(bars=bars, quarantine=_quarantine_rows(flat, api_order_issue))


def lists_newest_first(flat: FlatSeries) -> bool:
    """Whether the payload lists its bars newest first.

    The request's ``order`` decides when the fetcher recorded it; otherwise the majority of
    steps between consecutive bars (so one misplaced bar cannot flip the payload), then first
    against last. A payload that says nothing either way gets the API's default, desc.
    """
    if flat.requested_order is not None:
        return flat.requested_order == "desc"
    local = flat.rows["local"].to_numpy()
    times = local[~np.isnat(local)].view(np.int64)
    votes = np.sign(np.diff(times)).sum()
    if votes != 0:
        return bool(votes < 0)
    if times.size and times[0] != times[-1]:
        return bool(times[0] > times[-1])
    return True


def _at(positions: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[positions] = True
    return mask


def _flag(issue: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Record ``reason`` for rows in ``mask`` that have no earlier (higher-priority) issue."""
    if mask.any():
        issue[mask & pd.isna(issue)] = reason


def _quarantine_rows(flat: FlatSeries, issue: np.ndarray) -> list[QuarantineRecord]:
    texts = flat.rows["datetime_text"].to_numpy(dtype=object)
    return [
        {
            "payload_id": str(flat.attributes["payload_id"]),
            "symbol": str(flat.attributes["symbol"]),
            "interval": str(flat.attributes["interval"]),
            # The bar's place in the API's list makes the key unique within the payload.
            "row_key": f"{texts[i] or '?'}#{i}",
            "reason": str(issue[i]),
            "raw": to_json(flat.raw_values[i]),
        }
        for i in np.flatnonzero(pd.notna(issue))
    ]


def rejection_record(payload: RawPayload, rejection: PayloadRejection) -> QuarantineRecord:
    """The one quarantine row of a payload that yields no bars (``row_key`` is empty)."""
    return {
        "payload_id": payload.payload_id,
        "symbol": payload.symbol,
        "interval": payload.interval,
        "row_key": "",
        "reason": rejection.reason,
        "raw": rejection.raw,
    }
