"""Backfill: history since a date, in windows of up to 5000 bars, within the credit budget.

Each symbol's span is cut into calendar windows that hold at most 5000 bars with their warm-up
(sized per asset class: a stock's hour has fewer bars per day than a coin's), fetched newest
first. Symbols of one asset class share window dates, so a window is one batch request sized to
the credits left this minute. Progress (windows done per symbol, and the span's end) lives in a
Redis hash; an interrupted backfill started again with the same ``--since`` resumes there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final, TextIO

from marketpipe.intervals import MAX_BATCH_SYMBOLS, MAX_OUTPUTSIZE
from services.fetcher.client import ApiError, SeriesAnswer
from services.fetcher.cycle import Fetcher, land, record_error
from services.fetcher.series import (
    asset_class_of,
    backfill_windows,
    warmup_bars,
    warmup_days,
)

log = logging.getLogger("marketpipe.fetcher.backfill")

PROGRESS_PREFIX: Final = "marketpipe:backfill"
PROGRESS_TTL_SECONDS: Final = 30 * 86_400


class BackfillInterrupted(RuntimeError):
    """The API kept failing; progress is saved and the same command resumes."""


@dataclass
class BackfillReport:
    windows_total: int = 0
    windows_done: int = 0
    enqueued: int = 0
    credits: int = 0
    finished_early: dict[str, str] = field(default_factory=dict)  # symbol -> why
    errors: dict[str, str] = field(default_factory=dict)


class ProgressBar:
    """A one-line progress bar with an ETA on stderr (redrawn in place on a terminal)."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO = sys.stderr,
        monotonic: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.monotonic = monotonic
        self.width = width
        self.started = monotonic()
        self.first_done: int | None = None
        self.tty = stream.isatty()

    def eta_seconds(self, done: int) -> float | None:
        """Remaining time at the pace of this run (resumed windows do not count as pace)."""
        if self.first_done is None:
            self.first_done = done
            self.started = self.monotonic()
        progressed = done - self.first_done
        if progressed <= 0:
            return None
        elapsed = self.monotonic() - self.started
        return elapsed / progressed * (self.total - done)

    def render(self, done: int, note: str = "") -> str:
        filled = int(self.width * min(done, self.total) / self.total)
        eta = self.eta_seconds(done)
        eta_text = "--:--" if eta is None else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        bar = "#" * filled + "." * (self.width - filled)
        percent = 100 * done // self.total
        return f"backfill [{bar}] {done}/{self.total} windows {percent:3d}% ETA {eta_text} {note}"

    def update(self, done: int, note: str = "") -> None:
        line = self.render(done, note)
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def progress_key(interval: str, since: date) -> str:
    return f"{PROGRESS_PREFIX}:{interval}:{since.isoformat()}"


def _is_empty_window(answer: SeriesAnswer) -> bool:
    """ "No data is available on the specified dates" for this window."""
    return answer.error_code == 400 and "no data" in str(answer.body.get("message", "")).lower()


def run_backfill(
    fx: Fetcher,
    since: date,
    *,
    symbols: Sequence[str] | None = None,
    until: date | None = None,
    progress: Callable[[int], ProgressBar] | None = None,
) -> BackfillReport:
    """Fetch and enqueue every window not done yet; ``progress`` builds a bar for a total."""
    interval = fx.settings.interval
    wanted = list(symbols or fx.settings.symbols)
    key = progress_key(interval, since)
    stored_until = fx.redis.hget(key, "until")
    if stored_until:
        # Resuming: the windows must be the ones the first run cut.
        until = date.fromisoformat(_text(stored_until))
    else:
        until = until or fx.clock.now().date() + timedelta(days=1)
        fx.redis.hset(key, "until", until.isoformat())
    fx.redis.expire(key, PROGRESS_TTL_SECONDS)

    attrs = fx.instruments(wanted)
    classes = {s: asset_class_of(s, attrs.get(s)) for s in wanted}
    plans = {s: backfill_windows(since, until, interval, classes[s]) for s in wanted}
    saved = fx.redis.hgetall(key)
    done = {s: int(saved.get(f"windows:{s}".encode(), 0)) for s in wanted}
    finished = {
        s: _text(saved[f"finished:{s}".encode()])
        for s in wanted
        if f"finished:{s}".encode() in saved
    }
    # Symbols a window has returned bars for: only after bars, an empty window means history
    # ends there. Before, it is a window past the API's newest bar (`until` comes from our
    # clock, which may run ahead of the API's: a frozen or lagging sandbox, a future --until).
    has_bars = {s for s in wanted if f"bars:{s}".encode() in saved}

    report = BackfillReport(windows_total=sum(len(p) for p in plans.values()))

    def windows_done() -> int:
        return sum(len(plans[s]) if s in finished else min(done[s], len(plans[s])) for s in wanted)

    bar = progress(report.windows_total) if progress else None
    if bar:
        bar.update(windows_done(), "resuming" if any(done.values()) else "")
    failures: dict[str, int] = {}
    while True:
        groups: dict[tuple[str | None, date, date], list[str]] = {}
        for s in wanted:
            if s not in finished and done[s] < len(plans[s]):
                start, end = plans[s][done[s]]
                groups.setdefault((classes[s], start, end), []).append(s)
        if not groups:
            break
        (asset_class, start, end), members = max(groups.items(), key=lambda item: len(item[1]))
        grant = fx.limiter.acquire(min(len(members), MAX_BATCH_SYMBOLS), at_least=1)
        batch = members[: grant.credits]
        report.credits += grant.credits
        warm_start = start - timedelta(days=warmup_days(interval, asset_class))
        try:
            answers = fx.client.time_series(
                batch,
                interval,
                outputsize=MAX_OUTPUTSIZE,
                start_date=warm_start.isoformat(),
                end_date=end.isoformat(),
                paid=grant.credits,
            )
        except ApiError as exc:
            if exc.transient:
                raise BackfillInterrupted(f"{exc}; run the same command again to resume") from exc
            answers = [SeriesAnswer(s, exc.as_body(), fx.clock.now()) for s in batch]
        for answer in answers:
            s = answer.symbol
            request = {
                "symbol": s,
                "interval": interval,
                "outputsize": MAX_OUTPUTSIZE,
                "start_date": warm_start.isoformat(),
                "end_date": end.isoformat(),
                # Bars before `since` are the warm-up of the window's first bars.
                "since": start.isoformat(),
                "warmup_bars": warmup_bars(interval, classes[s]),
            }
            if not answer.is_error:
                enqueued, _ = land(fx, answer, request, attrs.get(s, {}))
                report.enqueued += enqueued
                has_bars.add(s)
                done[s] += 1
                fx.redis.hset(key, mapping={f"windows:{s}": done[s], f"bars:{s}": 1})
            elif _is_empty_window(answer) and s in has_bars:
                finished[s] = "no older data"
                fx.redis.hset(key, f"finished:{s}", finished[s])
            elif _is_empty_window(answer):
                done[s] += 1
                fx.redis.hset(key, f"windows:{s}", done[s])
            elif answer.error_code in (None, 429) or (answer.error_code or 0) >= 500:
                failures[s] = failures.get(s, 0) + 1
                if failures[s] >= fx.settings.fetch_max_attempts:
                    raise BackfillInterrupted(
                        f"{s}: {answer.body.get('message')}; run the same command again to resume"
                    )
            else:
                report.errors[s] = record_error(fx, answer, request)
                finished[s] = "error"
                fx.redis.hset(key, f"finished:{s}", "error")
        if bar:
            bar.update(windows_done(), f"{start}..{end} {len(batch)} symbols")
    if bar:
        bar.finish()
    report.windows_done = windows_done()
    report.finished_early = {s: why for s, why in finished.items()}
    log.info(
        "backfill since %s done: %d/%d windows, %d payloads enqueued, %d credits",
        since,
        report.windows_done,
        report.windows_total,
        report.enqueued,
        report.credits,
    )
    return report
