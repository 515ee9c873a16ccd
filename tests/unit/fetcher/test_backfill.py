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
