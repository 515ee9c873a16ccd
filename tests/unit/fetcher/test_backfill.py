"""The backfill's progress bar."""

from __future__ import annotations

import io

from services.fetcher.backfill import ProgressBar


def test_progress_bar_shows_an_eta() -> None:
    ticks = iter([0.0, 0.0, 10.0])
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, monotonic=lambda: next(ticks))
    bar.update(0)
    bar.update(2)  # 2 windows in 10 s: 8 left take 40 s
    assert "2/10 windows" in stream.getvalue() and "ETA 00:40" in stream.getvalue()


def test_the_eta_counts_the_credit_waits_ahead_and_the_line_shows_those_behind() -> None:
    ticks = iter([0.0, 0.0, 1.0])
    stream = io.StringIO()
    bar = ProgressBar(50, stream=stream, monotonic=lambda: next(ticks))
    bar.update(0, credits_per_minute=8)
    # 2 windows in 1 s would say 24 s for the 48 left; their 48 credits take 6 API minutes.
    bar.update(2, waited=125.0, credits_per_minute=8)
    last = stream.getvalue().splitlines()[-1]
    assert "ETA 06:00" in last and "waited 2 min 5 s for credits" in last
