"""Pure extraction logic: warm-up and outputsize, bar views, job ids, backfill windows."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from marketpipe.market import MAX_OUTPUTSIZE, settle_bars
from services.fetcher.series import (
    INDICATOR_WARMUP,
    backfill_windows,
    bars_per_day,
    has_new_data,
    outputsize_for,
    transform_job_id,
    view_series,
    warmup_bars,
    warmup_days,
    window_days,
)

NOW = datetime(2026, 3, 11, 18, 45, 30, tzinfo=UTC)


def test_warmup_covers_the_longest_indicator_and_52_weeks_when_it_fits() -> None:
    assert settle_bars(2 / 27) == 180 and settle_bars(2 / 10) == 62
    assert INDICATOR_WARMUP >= 200
    assert warmup_bars("1h", "crypto") == INDICATOR_WARMUP  # 8760 bars a year do not fit
    assert warmup_bars("1h", "stock") == 252 * 7  # a stock year of hours does
    assert warmup_bars("1day", "crypto") == 365


def test_outputsize_is_the_gap_plus_the_overlap_capped() -> None:
    assert outputsize_for(None, NOW, "1h", 300, 24) == 300
    three_bars_ago = NOW - timedelta(hours=2, minutes=45)
    assert outputsize_for(three_bars_ago, NOW, "1h", 300, 24) == 3 + 24
    assert outputsize_for(three_bars_ago, NOW, "1day", 300, 5) == 1 + 5
    assert outputsize_for(NOW - timedelta(days=900), NOW, "1h", 300, 24) == MAX_OUTPUTSIZE


def _body(times: list[str], zone: str | None = None, close: str = "1") -> dict[str, object]:
    meta = {"symbol": "X", "interval": "1h"} | ({"exchange_timezone": zone} if zone else {})
    values = [{"datetime": t, "open": "1", "high": "1", "low": "1", "close": close} for t in times]
    return {"meta": meta, "values": values, "status": "ok"}


def test_view_finds_the_newest_complete_and_the_open_bar_in_exchange_time() -> None:
    # 14:30 in New York on 11 March 2026 (EDT, UTC-4) = 18:30 UTC: still open at 18:45.
    body = _body(["2026-03-11 14:30:00", "2026-03-11 13:30:00"], "America/New_York")
    view = view_series(body, "1h", NOW)
    assert view.newest_complete == datetime(2026, 3, 11, 17, 30, tzinfo=UTC)
    assert view.open_bar == datetime(2026, 3, 11, 18, 30, tzinfo=UTC)
    assert view.open_signature and view.bars == 2


def test_new_data_means_newer_bars_or_a_changed_open_bar() -> None:
    view = view_series(_body(["2026-03-11 17:00:00", "2026-03-11 18:00:00"]), "1h", NOW)
    mark = datetime(2026, 3, 11, 17, tzinfo=UTC)
    assert has_new_data(view, None, None)
    assert has_new_data(view, mark - timedelta(hours=1), view.open_signature)
    assert not has_new_data(view, mark, view.open_signature)
    assert has_new_data(view, mark, "something else")
    closed = view_series(_body(["2026-03-11 17:00:00"]), "1h", NOW)
    assert not has_new_data(closed, mark, None)  # market closed, nothing new


def test_job_ids_are_deterministic_valid_and_distinct() -> None:
    window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    one = transform_job_id("BTC/USD", "1h", window, "ab" * 16)
    assert one == transform_job_id("BTC/USD", "1h", window, "ab" * 16)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", one)  # RQ's job id alphabet
    others = {
        transform_job_id(s, "1h", window, "ab" * 16) for s in ("BTC/USD", "BTC.USD", "BTC-USD")
    }
    assert len(others) == 3
    assert one != transform_job_id("BTC/USD", "1h", window, "cd" * 16)  # open bar changed


@pytest.mark.parametrize("asset_class", ["stock", "crypto", "forex"])
@pytest.mark.parametrize("interval", ["15min", "1h", "1day"])
def test_backfill_windows_tile_the_span_and_fit_5000_bars(asset_class: str, interval: str) -> None:
    since, until = date(2024, 1, 1), date(2026, 3, 12)
    windows = backfill_windows(since, until, interval, asset_class)
    assert windows[0][1] == until and windows[-1][0] == since
    assert all(a[0] == b[1] for a, b in itertools.pairwise(windows))  # no gap
    days = window_days(interval, asset_class)
    weekdays = days * 5 // 7 + 2 if asset_class != "crypto" else days
    assert weekdays * bars_per_day(interval, asset_class) + warmup_bars(
        interval, asset_class
    ) <= MAX_OUTPUTSIZE + bars_per_day(interval, asset_class)
    assert warmup_days(interval, asset_class) >= 1
