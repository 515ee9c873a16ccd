"""Backfill: history since a date, in windows of up to 5000 bars, within the credit budget.

Each symbol's span is cut into calendar windows that hold at most 5000 bars with their warm-up
(sized per asset class: a stock's hour has fewer bars per day than a coin's), fetched newest
first. Symbols of one asset class share window dates, so a window is asked in batches sized to
the credits left this minute. Progress (windows done per symbol, and the span's end) lives in a
Redis hash; an interrupted backfill started again with the same ``--since`` resumes there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final, Protocol, TextIO

from marketpipe.db import transaction
from marketpipe.market import MAX_OUTPUTSIZE, asset_class_of
from services.fetcher.client import BadRequest, SeriesAnswer, SeriesQuery, is_transient
from services.fetcher.context import FetchContext
from services.fetcher.handoff import land, payload_of, record_error
from services.fetcher.limiter import duration_text
from services.fetcher.reference import instruments
from services.fetcher.request import fetch_series
from services.fetcher.runlog import FetchRun, errors_text, outcome, record
from services.fetcher.series import (
    backfill_windows,
    warmup_bars,
    warmup_days,
)

log = logging.getLogger("marketpipe.fetcher.backfill")

PROGRESS_PREFIX: Final = "marketpipe:backfill"
PROGRESS_TTL_SECONDS: Final = 30 * 86_400
# --wait gives up when no window was loaded for this long (the workers are down or stuck).
LOAD_STALL_SECONDS: Final = 600.0
LOAD_POLL_SECONDS: Final = 2.0
_LOADED: Final = (
    "SELECT count(*), coalesce(sum(rows_in - rows_quarantined), 0), coalesce(sum(rows_loaded), 0)"
    " FROM marketpipe.pipeline_runs WHERE component = 'loader' AND run_id = ANY(%s)"
)


class BackfillInterrupted(RuntimeError):
    """The API kept failing; progress is saved and the same command resumes."""


class LoadStalled(RuntimeError):
    """``--wait``: windows stayed unloaded for LOAD_STALL_SECONDS (check the workers)."""


@dataclass(frozen=True)
class Loaded:
    windows: int  # payloads the loader has a run row for
    bars: int  # bars those payloads held
    changed: int  # rows they wrote or changed


def loaded(ctx: FetchContext, payload_ids: Sequence[str]) -> Loaded:
    with transaction(ctx.settings.role_url("fetcher")) as cur:
        cur.execute(_LOADED, ([f"load:{p}" for p in payload_ids],))
        windows, bars, changed = cur.fetchone() or (0, 0, 0)
    return Loaded(int(windows), int(bars), int(changed))


def wait_until_loaded(
    ctx: FetchContext,
    payload_ids: Sequence[str],
    *,
    stream: TextIO = sys.stderr,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    stall_seconds: float = LOAD_STALL_SECONDS,
) -> Loaded:
    """Poll the loader's run rows until every window's payload is loaded (queryable)."""
    wanted = list(dict.fromkeys(payload_ids))
    last = Loaded(-1, 0, 0)
    progressed_at = monotonic()
    while True:
        now = loaded(ctx, wanted)
        if now.windows != last.windows:
            stream.write(f"loading: {now.windows}/{len(wanted)} windows loaded, {now.bars} bars\n")
            stream.flush()
            last, progressed_at = now, monotonic()
        if now.windows >= len(wanted):
            return now
        if monotonic() - progressed_at > stall_seconds:
            raise LoadStalled(
                f"{len(wanted) - now.windows} of {len(wanted)} windows not loaded after"
                f" {duration_text(stall_seconds)} without progress; are the transformer and"
                " loader workers running? (python -m services.ops status)"
            )
        sleep(LOAD_POLL_SECONDS)


@dataclass
class BackfillReport:
    windows_total: int = 0
    windows_done: int = 0
    enqueued: int = 0
    credits: int = 0  # of the windows' first requests
    waited_seconds: float = 0.0  # API seconds spent waiting for credits
    payload_ids: list[str] = field(default_factory=list)  # of the windows with bars
    finished_early: dict[str, str] = field(default_factory=dict)  # symbol -> why
    errors: dict[str, str] = field(default_factory=dict)


class ProgressSink(Protocol):
    """Where a backfill reports its windows done: a terminal's bar, the health page's row."""

    def update(
        self,
        done: int,
        note: str = "",
        *,
        waited: float = 0.0,
        credits_per_minute: int | None = None,
    ) -> None: ...

    def finish(self) -> None: ...


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

    def eta_seconds(self, done: int, credits_per_minute: int | None = None) -> float | None:
        """Remaining time: the pace of this run (resumed windows do not count as pace), and
        never less than the credits the remaining windows need take (a window costs one)."""
        if self.first_done is None:
            self.first_done = done
            self.started = self.monotonic()
        progressed = done - self.first_done
        pace = None
        if progressed > 0:
            pace = (self.monotonic() - self.started) / progressed * (self.total - done)
        if not credits_per_minute:
            return pace
        by_credits = max(0, self.total - done) / credits_per_minute * 60.0
        return max(pace or 0.0, by_credits)

    def render(
        self,
        done: int,
        note: str = "",
        *,
        waited: float = 0.0,
        credits_per_minute: int | None = None,
    ) -> str:
        filled = int(self.width * min(done, self.total) / self.total)
        eta = self.eta_seconds(done, credits_per_minute)
        bar = "#" * filled + "." * (self.width - filled)
        percent = 100 * done // self.total
        return (
            f"backfill [{bar}] {done}/{self.total} windows {percent:3d}% ETA {_clock_text(eta)},"
            f" waited {duration_text(waited)} for credits {note}"
        ).rstrip()

    def update(
        self,
        done: int,
        note: str = "",
        *,
        waited: float = 0.0,
        credits_per_minute: int | None = None,
    ) -> None:
        line = self.render(done, note, waited=waited, credits_per_minute=credits_per_minute)
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def progress_key(interval: str, since: date) -> str:
    return f"{PROGRESS_PREFIX}:{interval}:{since.isoformat()}"


def _is_empty_window(answer: SeriesAnswer) -> bool:
    """ "No data is available on the specified dates" for this window."""
    return isinstance(answer.error, BadRequest) and "no data" in answer.error.message.lower()


Window = tuple[str | None, date, date]  # (asset class, start, end)


@dataclass
class Progress:
    """Windows done per symbol, and why a symbol finished early; kept in a Redis hash."""

    ctx: FetchContext
    key: str
    plans: dict[str, list[tuple[date, date]]]
    classes: dict[str, str | None]
    done: dict[str, int]
    finished: dict[str, str]
    # Symbols a window has returned bars for: only after bars, an empty window means history
    # ends there. Before, it is a window past the API's newest bar (`until` comes from our
    # clock, which may run ahead of the API's: a frozen or lagging sandbox, a future --until).
    has_bars: set[str]

    @classmethod
    def load(
        cls,
        ctx: FetchContext,
        key: str,
        plans: dict[str, list[tuple[date, date]]],
        classes: dict[str, str | None],
    ) -> Progress:
        saved = {_text(k): _text(v) for k, v in ctx.redis.hgetall(key).items()}
        return cls(
            ctx,
            key,
            plans,
            classes,
            done={s: int(saved.get(f"windows:{s}", 0)) for s in plans},
            finished={s: saved[f"finished:{s}"] for s in plans if f"finished:{s}" in saved},
            has_bars={s for s in plans if f"bars:{s}" in saved},
        )

    @property
    def windows_total(self) -> int:
        return sum(len(p) for p in self.plans.values())

    def windows_done(self) -> int:
        return sum(
            len(plan) if s in self.finished else min(self.done[s], len(plan))
            for s, plan in self.plans.items()
        )

    def next_window(self) -> tuple[Window, list[str]] | None:
        """The window most symbols wait for next, and those symbols; None when all are done."""
        groups: dict[Window, list[str]] = {}
        for s, plan in self.plans.items():
            if s not in self.finished and self.done[s] < len(plan):
                start, end = plan[self.done[s]]
                groups.setdefault((self.classes[s], start, end), []).append(s)
        return max(groups.items(), key=lambda item: len(item[1])) if groups else None

    def window_done(self, symbol: str, *, bars: bool) -> None:
        self.done[symbol] += 1
        if bars:
            self.has_bars.add(symbol)
            self.ctx.redis.hset(
                self.key, mapping={f"windows:{symbol}": self.done[symbol], f"bars:{symbol}": 1}
            )
        else:
            self.ctx.redis.hset(self.key, f"windows:{symbol}", self.done[symbol])

    def finish(self, symbol: str, why: str) -> None:
        self.finished[symbol] = why
        self.ctx.redis.hset(self.key, f"finished:{symbol}", why)


def _span_end(ctx: FetchContext, key: str, until: date | None) -> date:
    """The span's end: the first run's when resuming (the windows must be the ones it cut)."""
    stored = ctx.redis.hget(key, "until")
    if stored:
        end = date.fromisoformat(_text(stored))
    else:
        end = until or ctx.clock.now().date() + timedelta(days=1)
        ctx.redis.hset(key, "until", end.isoformat())
    ctx.redis.expire(key, PROGRESS_TTL_SECONDS)
    return end


# Where a window's answer goes: ``land`` (payload landed, transform enqueued), or a restatement's
# collector (services/fetcher/restate.py). True if it was handed on.
HandOn = Callable[[FetchContext, SeriesAnswer, dict[str, Any], dict[str, Any]], bool]


def _take(
    ctx: FetchContext,
    progress: Progress,
    report: BackfillReport,
    answer: SeriesAnswer,
    request: dict[str, Any],
    instrument: dict[str, Any],
    hand_on: HandOn = land,
) -> None:
    """Record one window's answer for its symbol."""
    s = answer.symbol
    report.credits += 1  # its first request; retries come on top
    if answer.error is None:
        report.enqueued += hand_on(ctx, answer, request, instrument)
        report.payload_ids.append(payload_of(ctx, answer, request, instrument).payload_id)
        progress.window_done(s, bars=True)
    elif _is_empty_window(answer):
        if s in progress.has_bars:
            progress.finish(s, "no older data")
        else:
            progress.window_done(s, bars=False)
    elif is_transient(answer.error):
        raise BackfillInterrupted(
            f"{s}: {answer.error.message}; run the same command again to resume"
        )
    else:
        report.errors[s] = record_error(ctx, answer, request)
        progress.finish(s, "error")


def run_backfill(
    ctx: FetchContext,
    since: date,
    *,
    symbols: Sequence[str] | None = None,
    until: date | None = None,
    progress: Callable[[int], ProgressSink] | None = None,
    key: str | None = None,
    hand_on: HandOn = land,
    stop: Callable[[], bool] = lambda: False,
) -> BackfillReport:
    """Fetch and enqueue every window not done yet; ``progress`` builds a bar for a total.

    ``key`` names the Redis hash of the progress (default: per interval and ``since``);
    ``hand_on`` is what happens to each window's answer (default: landed and enqueued);
    ``stop()`` true before a window ends the run there (progress kept: the next run resumes).
    """
    interval = ctx.settings.interval
    wanted = list(symbols or ctx.settings.symbols)
    key = key or progress_key(interval, since)
    until = _span_end(ctx, key, until)
    attrs = instruments(ctx, wanted)
    classes: dict[str, str | None] = {s: asset_class_of(s, instrument=attrs.get(s)) for s in wanted}
    plans = {s: backfill_windows(since, until, interval, classes[s]) for s in wanted}
    state = Progress.load(ctx, key, plans, classes)
    report = BackfillReport(windows_total=state.windows_total)
    bar = progress(report.windows_total) if progress else None
    if bar:
        bar.update(state.windows_done(), "resuming" if any(state.done.values()) else "")
    taken_at_start, waited_at_start = ctx.limiter.taken, ctx.limiter.waited
    while not stop() and (window := state.next_window()) is not None:
        (asset_class, start, end), members = window
        warm_start = start - timedelta(days=warmup_days(interval, asset_class))
        query = SeriesQuery(interval, MAX_OUTPUTSIZE, warm_start.isoformat(), end.isoformat())
        with _window_run(ctx, report, since, window):
            _fetch_window(ctx, state, report, query, members, start, classes, attrs, hand_on)
        report.waited_seconds = ctx.limiter.waited - waited_at_start
        note = f"{start}..{end} {len(members)} symbols"
        if bar:
            bar.update(
                state.windows_done(),
                note,
                waited=report.waited_seconds,
                credits_per_minute=ctx.limiter.per_minute,
            )
        else:
            done, total = state.windows_done(), state.windows_total
            log.info("backfill window %s done (%d/%d)", note, done, total)
    if bar:
        bar.finish()
    report.windows_done = state.windows_done()
    report.finished_early = dict(state.finished)
    log.info(
        "backfill since %s done: %d/%d windows, %d payloads enqueued, %d credits,"
        " %s waiting for credits",
        since,
        report.windows_done,
        report.windows_total,
        report.enqueued,
        ctx.limiter.taken - taken_at_start,
        duration_text(report.waited_seconds),
    )
    return report


@contextmanager
def _window_run(
    ctx: FetchContext, report: BackfillReport, since: date, window: tuple[Window, list[str]]
) -> Iterator[None]:
    """One ``pipeline_runs`` row for the window: its symbols, bars, credits, waits, errors."""
    (asset_class, start, end), members = window
    interval = ctx.settings.interval
    started_at = ctx.clock.now()
    taken, waited = ctx.limiter.taken, ctx.limiter.waited
    payloads, errors = len(report.payload_ids), dict(report.errors)
    failure: dict[str, str] = {}
    try:
        yield
    except BackfillInterrupted as exc:
        failure = {"(window)": str(exc)}
        raise
    finally:
        new_errors = {s: m for s, m in report.errors.items() if s not in errors} | failure
        with_bars = len(report.payload_ids) - payloads
        failed = len(members) if failure else len(new_errors)
        record(
            ctx.settings,
            FetchRun(
                run_id=f"backfill:{interval}:{since}:{asset_class}:{start}..{end}",
                component="backfill",
                status=outcome(len(members), with_bars, failed),
                interval=interval,
                started_at=started_at,
                symbols_asked=len(members),
                symbols_new=with_bars,
                credits=ctx.limiter.taken - taken,
                waited_seconds=ctx.limiter.waited - waited,
                api_errors=len(new_errors),
                message=errors_text(new_errors),
            ),
        )


def _fetch_window(
    ctx: FetchContext,
    state: Progress,
    report: BackfillReport,
    query: SeriesQuery,
    members: list[str],
    start: date,
    classes: dict[str, str | None],
    attrs: dict[str, dict[str, Any]],
    hand_on: HandOn,
) -> None:
    interval = ctx.settings.interval
    for answer, _ in fetch_series(ctx, members, query):
        request = {
            "symbol": answer.symbol,
            "interval": interval,
            "outputsize": MAX_OUTPUTSIZE,
            "start_date": query.start_date,
            "end_date": query.end_date,
            # Bars before `since` are the warm-up of the window's first bars.
            "since": start.isoformat(),
            "warmup_bars": warmup_bars(interval, classes[answer.symbol]),
        }
        _take(ctx, state, report, answer, request, attrs.get(answer.symbol, {}), hand_on)
