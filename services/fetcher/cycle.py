"""One fetch cycle: ask the API what is new for every symbol, land it, enqueue its transform.

A cycle asks each series for the bars since its watermark plus FETCH_OVERLAP_BARS stored ones
(the indicators continue the stored series, so no warm-up is fetched), in batches of equal
depth sized to the credits left this minute, and enqueues a payload only when the answer holds
bars newer than the watermark or a still-open bar that changed. Permanent API errors (unknown or
plan-gated symbol, bad key) travel the pipeline as the API's own error object, so the loader
writes them to ``marketpipe.pipeline_runs`` with the API's message; transient ones were already
retried by the request loop and are left for the next tick (no watermark moved, nothing is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from secrets import token_hex
from typing import Any

from marketpipe.market import asset_class_of, latest_bar_end, venue
from services.fetcher.client import SeriesAnswer, SeriesQuery, is_transient
from services.fetcher.context import FetchContext
from services.fetcher.handoff import BAD_SYMBOL_PREFIX, land, record_error, served_again
from services.fetcher.limiter import duration_text
from services.fetcher.reference import instruments
from services.fetcher.request import fetch_series
from services.fetcher.runlog import FetchRun, errors_text, outcome, record
from services.fetcher.series import has_new_data, outputsize_for, view_series
from services.fetcher.state import SeriesState, load_states, save_asked, save_state

log = logging.getLogger("marketpipe.fetcher")


@dataclass
class CycleReport:
    enqueued: list[str] = field(default_factory=list)
    already_queued: list[str] = field(default_factory=list)
    no_new_data: list[str] = field(default_factory=list)
    api_errors: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)  # transient; next tick tries again
    skipped: list[str] = field(default_factory=list)  # known-bad symbols
    not_due: list[str] = field(default_factory=list)  # calendar series: no bar ended since
    asked: int = 0  # symbols the cycle asked the API for
    credits: int = 0  # taken from the budget: reference look-ups, series, retries
    waited_seconds: float = 0.0  # API seconds spent waiting for credits

    def summary(self) -> str:
        return (
            f"{self.asked} symbols asked, {len(self.enqueued)} new, {len(self.no_new_data)} no"
            f" new data, {len(self.already_queued)} already queued, {len(self.api_errors)} API"
            f" errors, {len(self.deferred)} deferred, {len(self.skipped)} skipped;"
            f" {self.credits} credits, {duration_text(self.waited_seconds)} waiting for credits"
        )


def _not_refused_today(ctx: FetchContext, wanted: list[str], report: CycleReport) -> list[str]:
    """``wanted`` without the symbols the API refused today (they would cost a credit each)."""
    bad = ctx.redis.mget([f"{BAD_SYMBOL_PREFIX}:{s}" for s in wanted])
    report.skipped = [s for s, flag in zip(wanted, bad, strict=True) if flag]
    if report.skipped:
        log.info("skipping symbols the API refused today: %s", ", ".join(report.skipped))
    return [s for s in wanted if s not in report.skipped]


def bar_ends(
    interval: str, symbols: Sequence[str], attrs: dict[str, dict[str, Any]], now: datetime
) -> dict[str, datetime]:
    """For a calendar interval, when each series' newest bar ended (its session's close, a
    coin's UTC midnight); empty for an intraday interval, which every tick fetches."""
    ends = {}
    for s in symbols:
        instrument = attrs.get(s) or {}
        asset_class = asset_class_of(s, instrument=instrument) or "crypto"
        end = latest_bar_end(interval, venue(asset_class, None, instrument.get("mic_code")), now)
        if end is not None:
            ends[s] = end.to_pydatetime()
    return ends


def _take(
    ctx: FetchContext,
    report: CycleReport,
    answer: SeriesAnswer,
    request: dict[str, Any],
    state: SeriesState,
    instrument: dict[str, Any],
    ended: datetime | None = None,
) -> None:
    """Sort one answer into the report; hand it on when it holds something new.

    ``ended``: a calendar series' newest bar end, remembered once answered, so the next ticks
    skip it until another bar ends (a transient failure is asked again at the next tick).
    """
    symbol, interval = answer.symbol, ctx.settings.interval
    if ended is not None and not (answer.error is not None and is_transient(answer.error)):
        save_asked(ctx.redis, symbol, interval, ended)
    if answer.error is not None:
        if is_transient(answer.error):
            report.deferred[symbol] = answer.error.message
            log.error("time_series for %s failed, next tick retries: %s", symbol, answer.error)
        else:
            served_before = state.fetch_from is not None
            report.api_errors[symbol] = record_error(
                ctx, answer, request, served_before=served_before
            )
        return
    view = view_series(answer.body, interval, answer.served_at)
    if not has_new_data(view, state.seen, state.open_signature):
        report.no_new_data.append(symbol)
        log.debug("no new data for %s %s", symbol, interval)
        return
    enqueued = land(ctx, answer, request, instrument, view)
    (report.enqueued if enqueued else report.already_queued).append(symbol)
    save_state(ctx.redis, symbol, interval, view.newest_complete, view.open_signature)


def run_cycle(
    ctx: FetchContext, symbols: Sequence[str] | None = None, *, run_id: str | None = None
) -> CycleReport:
    """Fetch what is new of the first interval of ``ctx`` (narrowed by the caller); one log
    line and one ``pipeline_runs`` row (``run_id``) say what.

    A calendar interval (1day, ...) asks only the series whose newest bar ended since they
    were last asked (after a session close, a UTC midnight): a daily bar costs its credit once.
    """
    settings, report = ctx.settings, CycleReport()
    interval = settings.interval
    started_at = ctx.clock.now()
    taken_before, waited_before = ctx.limiter.taken, ctx.limiter.waited
    wanted = _not_refused_today(ctx, list(symbols or settings.symbols), report)
    attrs = instruments(ctx, wanted)
    states = load_states(settings, ctx.redis, wanted, interval)
    now = ctx.clock.now()
    ends = bar_ends(interval, wanted, attrs, now)
    if ends:
        report.not_due = [
            s for s in wanted if (seen := states[s].asked_after) is not None and ends[s] <= seen
        ]
        wanted = [s for s in wanted if s not in report.not_due]
        if not wanted:
            return report  # no bar ended since the last ask: nothing to fetch, nothing to log
    report.asked = len(wanted)
    sizes = {
        s: outputsize_for(
            states[s].fetch_from,
            now,
            interval,
            settings.fetch_outputsize,
            settings.fetch_overlap_bars,
        )
        for s in wanted
    }

    query = SeriesQuery(interval, outputsize=settings.fetch_outputsize)
    answered: list[str] = []
    for answer, asked in fetch_series(ctx, wanted, query, outputsizes=sizes):
        if answer.error is None:
            answered.append(answer.symbol)
        state = states[answer.symbol]
        request = {
            "symbol": answer.symbol,
            "interval": interval,
            "outputsize": asked.outputsize,
            # What the request continued from; every bar of the answer from the stored series'
            # first on is stored (services/transformer/warmup.py).
            "watermark": state.fetch_from.isoformat() if state.fetch_from else None,
            "overlap_bars": settings.fetch_overlap_bars if state.fetch_from else 0,
        }
        instrument = attrs.get(answer.symbol, {})
        _take(ctx, report, answer, request, state, instrument, ends.get(answer.symbol))
    served_again(ctx, answered)
    report.credits = ctx.limiter.taken - taken_before
    report.waited_seconds = ctx.limiter.waited - waited_before
    # A scheduled tick names its run (a retried tick rewrites its row); any other gets its own.
    run_id = run_id or f"fetch:{interval}:once:{started_at:%Y-%m-%dT%H:%M:%SZ}:{token_hex(3)}"
    log.info("cycle %s: %s", run_id, report.summary())
    failures = {**report.api_errors, **report.deferred}
    symbols_new = len(report.enqueued) + len(report.already_queued)
    record(
        settings,
        FetchRun(
            run_id=run_id,
            component="fetcher",
            status=outcome(report.asked, symbols_new, len(failures)),
            interval=interval,
            started_at=started_at,
            symbols_asked=report.asked,
            symbols_new=symbols_new,
            credits=report.credits,
            waited_seconds=report.waited_seconds,
            api_errors=len(failures),
            message=errors_text(failures),
        ),
    )
    return report


def run_intervals(
    ctx: FetchContext, *, run_id: Callable[[str], str | None] = lambda interval: None
) -> dict[str, CycleReport]:
    """One cycle per configured interval, sharing the one credit budget; reports by interval."""
    reports: dict[str, CycleReport] = {}
    for interval in ctx.settings.intervals:
        narrowed = replace(ctx, settings=ctx.settings.for_interval(interval))
        reports[interval] = run_cycle(narrowed, run_id=run_id(interval))
    return reports
