"""Pure fetcher logic: budget math, warm-up and outputsize, bar views, job ids, windows, ticks."""

from __future__ import annotations

import io
import itertools
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from marketpipe.intervals import MAX_OUTPUTSIZE
from services.fetcher.backfill import ProgressBar
from services.fetcher.client import ApiError, CreditsRefused, classify
from services.fetcher.limiter import grantable, seconds_to_next_minute, wait_seconds
from services.fetcher.schedule import due_tick, latest_tick
from services.fetcher.series import (
    INDICATOR_WARMUP,
    backfill_windows,
    bars_per_day,
    ema_settle_bars,
    has_new_data,
    outputsize_for,
    transform_job_id,
    view_series,
    warmup_bars,
    warmup_days,
    window_days,
)

NOW = datetime(2026, 3, 11, 18, 45, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("want", "at_least", "used_m", "used_d", "expected"),
    [
        (20, 1, 0, 0, 8),  # a batch sized to the minute's budget
        (20, 1, 5, 0, 3),
        (3, 1, 0, 0, 3),
        (20, 1, 8, 8, 0),  # minute spent
        (8, 8, 1, 1, 0),  # a retry needs its whole batch
        (20, 1, 0, 798, 2),  # the day's end bounds it too
    ],
)
def test_grantable(want: int, at_least: int, used_m: int, used_d: int, expected: int) -> None:
    assert grantable(want, at_least, used_m, used_d, 8, 800) == expected


def test_waits_for_the_next_minute_or_the_next_day() -> None:
    assert seconds_to_next_minute(NOW) == pytest.approx(30.0)
    assert wait_seconds(NOW, 10, 800, 1, slack=1.0) == pytest.approx(31.0)
    day_left = (datetime(2026, 3, 12, tzinfo=UTC) - NOW).total_seconds()
    assert wait_seconds(NOW, 800, 800, 1, slack=1.0) == pytest.approx(day_left + 1)


def test_warmup_covers_the_longest_indicator_and_52_weeks_when_it_fits() -> None:
    assert ema_settle_bars(26) == 180 and ema_settle_bars(9) == 62
    assert INDICATOR_WARMUP >= 200
    assert warmup_bars("1h", "crypto") == INDICATOR_WARMUP  # 8760 bars a year do not fit
    assert warmup_bars("1h", "stock") == 252 * 7  # a stock year of hours does
    assert warmup_bars("1day", "crypto") == 365


def test_outputsize_is_the_gap_plus_warmup_capped() -> None:
    assert outputsize_for(None, NOW, "1h", "crypto", 300) == 300
    three_bars_ago = NOW - timedelta(hours=2, minutes=45)
    assert outputsize_for(three_bars_ago, NOW, "1h", "crypto", 300) == 3 + INDICATOR_WARMUP
    assert outputsize_for(NOW - timedelta(days=900), NOW, "1h", "crypto", 300) == MAX_OUTPUTSIZE


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


def test_ticks_catch_up_once() -> None:
    assert latest_tick("5 * * * *", NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", None, NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    five_missed = datetime(2026, 3, 11, 13, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", five_missed, NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", datetime(2026, 3, 11, 18, 5, tzinfo=UTC), NOW) is None


def test_errors_in_both_transports() -> None:
    body = {"code": 404, "message": "**symbol** not found", "status": "error"}
    for status in (404, 200):
        error = classify(status, body)
        assert isinstance(error, ApiError) and error.code == 404 and not error.transient
    minute = classify(
        429,
        {
            "code": 429,
            "message": "run out of API credits for the current minute",
            "status": "error",
        },
    )
    day = classify(
        200, {"code": 429, "message": "run out of API credits for the day", "status": "error"}
    )
    assert isinstance(minute, CreditsRefused) and minute.scope == "minute"
    assert isinstance(day, CreditsRefused) and day.scope == "day"
    gateway = classify(502, None)
    assert gateway is not None and gateway.transient
    assert classify(200, {"values": [], "status": "ok"}) is None


def test_progress_bar_shows_an_eta() -> None:
    ticks = iter([0.0, 0.0, 10.0])
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, monotonic=lambda: next(ticks))
    bar.update(0)
    bar.update(2)  # 2 windows in 10 s: 8 left take 40 s
    assert "2/10 windows" in stream.getvalue() and "ETA 00:40" in stream.getvalue()
