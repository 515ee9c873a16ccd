"""Row validation: every bar either flows on or lands in quarantine with its reason.

Rules, checked in this order (a bar is recorded once, under the first rule it breaks):

1. flatten's findings: ``malformed_row``, ``bad_datetime``, ``missing_value: <field>``,
   ``non_numeric: <field>`` (also NaN / inf);
2. ``nonexistent_local_time``: a stock wall time inside the spring-forward gap;
3. ``non_positive_price``: any of open, high, low, close <= 0;
4. ``high_below_open_close`` / ``low_above_open_close``;
5. ``negative_volume``;
6. ``future_bar``: the bar opens after the transform time;
7. ``out_of_order``: read in the payload's own direction (the request's ``order`` if recorded,
   else the direction most steps between neighbours take; the API's default is newest first),
   the bar is earlier than a bar listed before it;
8. ``duplicate_datetime``: another bar of the same symbol and interval has the same UTC time; the
   newest version is kept: the one from the most recently fetched payload, and within a payload
   the one listed last in time order (it overwrote the earlier one, as an upsert would).

Ambiguous wall times (the hour repeated when clocks fall back) are resolved by order: bars come
in time order, so the first occurrence of a wall time is the DST reading, the repeat is standard
time. A third occurrence reads as DST again and is then caught as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from services.transformer.flatten import FlatBatch, PayloadRejection, to_json
from services.transformer.timeconv import (
    NAIVE_DTYPE,
    ambiguous_mask,
    local_to_utc,
)

QUARANTINE_ORDER = ["payload_id", "symbol", "interval", "row_key", "reason", "raw"]


@dataclass(frozen=True)
class ValidatedBatch:
    """``bars``: valid bars sorted by (series, bar_time), one row per series and time.

    Columns: series (int, one per symbol+interval), payload (index into ``payloads``),
    bar_time (UTC, naive datetime64[us]), local (exchange wall time, naive), open..volume.
    ``quarantine``: QUARANTINE_ORDER columns (quarantined_at is added by the caller).
    """

    payloads: pd.DataFrame
    bars: pd.DataFrame
    quarantine: pd.DataFrame


def validate(flat: FlatBatch, *, now: datetime) -> ValidatedBatch:
    rows = flat.rows
    payloads = flat.payloads
    issue = rows["issue"].to_numpy(dtype=object, copy=True)
    payload_index = rows["payload"].to_numpy()
    position = rows["position"].to_numpy()
    local = rows["local"].to_numpy().astype(NAIVE_DTYPE)

    descending = _descending_payloads(payloads, payload_index, local)
    # Position in time order: the API lists newest first unless asked otherwise.
    oriented = np.where(descending[payload_index], -position, position)
    utc = _to_utc(payloads, payload_index, local, oriented, issue)

    open_, high, low, close = (rows[name].to_numpy() for name in ("open", "high", "low", "close"))
    _flag(issue, (open_ <= 0) | (high <= 0) | (low <= 0) | (close <= 0), "non_positive_price")
    _flag(issue, high < np.maximum(open_, close), "high_below_open_close")
    _flag(issue, low > np.minimum(open_, close), "low_above_open_close")
    _flag(issue, rows["volume"].to_numpy() < 0, "negative_volume")
    now_utc = np.datetime64(pd.Timestamp(now).tz_convert("UTC").tz_localize(None), "us")
    _flag(issue, utc > now_utc, "future_bar")

    series_of_payload = _series_codes(payloads)
    series = series_of_payload[payload_index] if len(payloads) else np.zeros(0, np.int64)
    fetched_rank = _fetched_rank(payloads)[payload_index] if len(payloads) else series

    # Out of order: earlier than a bar listed before it in the payload's time direction.
    valid = pd.isna(issue)
    order = _payload_time_order(payload_index, position, descending)
    ordered_valid = order[valid[order]]
    utc_int = utc.view(np.int64)
    running_max = (
        pd.Series(utc_int[ordered_valid])
        .groupby(payload_index[ordered_valid], sort=False)
        .cummax()
        .to_numpy()
    )
    late = utc_int[ordered_valid] < running_max
    _flag(issue, _scatter(late, ordered_valid, len(issue)), "out_of_order")

    # Duplicates: sort by series, time, then by "newness"; all but the last of a run lose.
    valid = pd.isna(issue)
    by_time = _series_time_order(
        order[valid[order]],
        payload_index,
        series_of_payload,
        series,
        utc_int,
        fetched_rank,
        oriented,
    )
    same_as_next = np.zeros(len(by_time), bool)
    if len(by_time) > 1:
        same_as_next[:-1] = (series[by_time[1:]] == series[by_time[:-1]]) & (
            utc_int[by_time[1:]] == utc_int[by_time[:-1]]
        )
    _flag(issue, _scatter(same_as_next, by_time, len(issue)), "duplicate_datetime")
    kept = by_time[~same_as_next]

    bars = pd.DataFrame(
        {
            "series": series[kept],
            "payload": payload_index[kept],
            "bar_time": utc[kept],
            "local": local[kept],
            "open": open_[kept],
            "high": high[kept],
            "low": low[kept],
            "close": close[kept],
            "volume": rows["volume"].to_numpy()[kept],
        },
        copy=False,  # fresh arrays already: no consolidation copy
    )
    quarantine = _quarantine_frame(flat, issue)
    return ValidatedBatch(payloads=payloads, bars=bars, quarantine=quarantine)


def _payload_time_order(
    payload_index: np.ndarray, position: np.ndarray, descending: np.ndarray
) -> np.ndarray:
    """Rows sorted by (payload, position in time order), i.e. lexsort((oriented, payload)).

    flatten lists rows payload by payload in API order, so this is the identity except that a
    newest-first payload's rows are reversed in place: linear, no sort. Anything else sorts.
    """
    size = payload_index.size
    rows = np.arange(size)
    lengths = np.bincount(payload_index, minlength=descending.size)
    starts = np.cumsum(lengths) - lengths
    start_of_row = starts[payload_index] if size else rows
    laid_out = bool(
        np.all(payload_index[1:] >= payload_index[:-1]) and np.all(position == rows - start_of_row)
    )
    if not laid_out:
        oriented = np.where(descending[payload_index], -position, position)
        return np.lexsort((oriented, payload_index))
    reversed_rows = start_of_row + lengths[payload_index] - 1 - position
    return np.where(descending[payload_index], reversed_rows, rows)


def _series_time_order(
    valid_in_payload_order: np.ndarray,
    payload_index: np.ndarray,
    series_of_payload: np.ndarray,
    series: np.ndarray,
    utc_int: np.ndarray,
    fetched_rank: np.ndarray,
    oriented: np.ndarray,
) -> np.ndarray:
    """Valid rows sorted by (series, utc, fetched_rank, oriented).

    ``valid_in_payload_order`` lists them payload by payload in time order, and after the
    out-of-order rule their times never decrease within a payload. So when every series has one
    payload (the usual batch) the sort is only a reordering of whole payloads by series: linear.
    Several payloads of one series (overlapping fetches) interleave: then a real sort.
    """
    rows = valid_in_payload_order
    payload_of = payload_index[rows]
    counts = np.bincount(payload_of, minlength=series_of_payload.size)
    present = np.flatnonzero(counts)
    if np.unique(series_of_payload[present]).size != present.size:
        return rows[np.lexsort((oriented[rows], fetched_rank[rows], utc_int[rows], series[rows]))]
    by_series = present[np.argsort(series_of_payload[present], kind="stable")]
    new_start = np.zeros(series_of_payload.size, np.int64)
    new_start[by_series] = np.cumsum(counts[by_series]) - counts[by_series]
    old_start = np.cumsum(counts) - counts
    destination = new_start[payload_of] + (np.arange(rows.size) - old_start[payload_of])
    ordered = np.empty_like(rows)
    ordered[destination] = rows
    return ordered


def _scatter(mask_in_order: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[order[mask_in_order]] = True
    return mask


def _flag(issue: np.ndarray, mask: np.ndarray, reason: str) -> None:
    if not mask.any():  # the usual case: skip the missing-value scan of the object array
        return
    fresh = mask & pd.isna(issue)
    issue[fresh] = reason


def _descending_payloads(
    payloads: pd.DataFrame, payload_index: np.ndarray, local: np.ndarray
) -> np.ndarray:
    """Which payloads list their bars newest first.

    The request's ``order`` decides when the fetcher recorded it; otherwise the majority of
    steps between consecutive bars (so one misplaced bar cannot flip a whole payload), then
    first against last. A payload that says nothing either way gets the API's default, desc.
    """
    count = len(payloads)
    descending = np.ones(count, bool)
    known = ~np.isnat(local)
    rows = np.flatnonzero(known)
    if rows.size:
        t = local[rows].view(np.int64)
        p = payload_index[rows]
        same = p[1:] == p[:-1]
        step = np.sign(np.diff(t))[same]
        votes = np.bincount(p[1:][same], weights=step, minlength=count)
        first = np.full(count, np.iinfo(np.int64).min)
        last = np.full(count, np.iinfo(np.int64).min)
        last[p] = t  # the last write wins
        first[p[::-1]] = t[::-1]
        descending = np.where(votes != 0, votes < 0, np.where(first != last, first > last, True))
    requested = payloads["requested_order"].to_numpy(dtype=object)
    descending[requested == "asc"] = False
    descending[requested == "desc"] = True
    return descending


def _to_utc(
    payloads: pd.DataFrame,
    payload_index: np.ndarray,
    local: np.ndarray,
    oriented: np.ndarray,
    issue: np.ndarray,
) -> np.ndarray:
    """UTC open time of every bar; stock wall times go through their exchange's zone."""
    utc = local.copy()
    zones = payloads["exchange_timezone"].to_numpy(dtype=object)
    if len(payloads) == 0:
        return utc
    zone_of_row = zones[payload_index]
    for zone in pd.unique(zones[pd.notna(zones)]):
        rows = np.flatnonzero(zone_of_row == zone)
        if rows.size == 0:
            continue
        wall = local[rows]
        is_dst = np.ones(rows.size, bool)
        ambiguous = ambiguous_mask(wall, zone)
        if ambiguous.any():
            # First occurrence of a repeated wall time (in time order) is DST, the repeat is not.
            amb_rows = np.flatnonzero(ambiguous)
            frame = pd.DataFrame(
                {
                    "payload": payload_index[rows[amb_rows]],
                    "wall": wall[amb_rows].view(np.int64),
                    "oriented": oriented[rows[amb_rows]],
                }
            ).sort_values(["payload", "oriented"], kind="stable")
            occurrence = frame.groupby(["payload", "wall"], sort=False).cumcount().to_numpy()
            is_dst[amb_rows[frame.index.to_numpy()]] = occurrence % 2 == 0
        converted = local_to_utc(wall, zone, is_dst)
        utc[rows] = converted.utc
        gap = np.zeros(len(local), bool)
        gap[rows[converted.nonexistent]] = True
        _flag(issue, gap, "nonexistent_local_time")
    return utc


def _series_codes(payloads: pd.DataFrame) -> np.ndarray:
    keys = payloads["symbol"].astype(object) + "\x00" + payloads["interval"].astype(object)
    codes, _ = pd.factorize(keys.to_numpy(dtype=object), sort=True)
    return codes.astype(np.int64)


def _fetched_rank(payloads: pd.DataFrame) -> np.ndarray:
    """Rank of each payload by (fetched_at, payload_id): larger is newer."""
    order = np.lexsort(
        (
            payloads["payload_id"].to_numpy(dtype=object).astype(str),
            payloads["fetched_at"].to_numpy(dtype="datetime64[us]").view(np.int64),
        )
    )
    rank = np.empty(len(payloads), np.int64)
    rank[order] = np.arange(len(payloads))
    return rank


def _quarantine_frame(flat: FlatBatch, issue: np.ndarray) -> pd.DataFrame:
    bad = np.flatnonzero(pd.notna(issue))
    payloads = flat.payloads
    rows = flat.rows
    records: list[dict[str, str]] = [_rejection_record(r) for r in flat.rejections]
    payload_index = rows["payload"].to_numpy()
    texts = rows["datetime_text"].to_numpy(dtype=object)
    positions = rows["position"].to_numpy()
    owner = payload_index[bad]
    columns = {
        name: payloads[name].to_numpy(dtype=object)[owner]
        for name in ("payload_id", "symbol", "interval")
    }
    for k, i in enumerate(bad):
        records.append(
            {
                "payload_id": columns["payload_id"][k],
                "symbol": columns["symbol"][k],
                "interval": columns["interval"][k],
                # The bar's place in the API's list makes the key unique within the payload.
                "row_key": f"{texts[i] or '?'}#{int(positions[i])}",
                "reason": str(issue[i]),
                "raw": to_json(flat.raw_values[i]),
            }
        )
    frame = pd.DataFrame(records, columns=QUARANTINE_ORDER)
    return frame.astype(object)


def _rejection_record(rejection: PayloadRejection) -> dict[str, str]:
    return {
        "payload_id": rejection.payload_id,
        "symbol": rejection.symbol,
        "interval": rejection.interval,
        "row_key": "",
        "reason": rejection.reason,
        "raw": rejection.raw,
    }
