"""The one request loop of the fetcher: credits first, transient errors retried, refusals waited.

Every request (time series of the hourly cycle and of the backfill, reference look-ups) takes its
credits from the shared limiter before it is sent. A transient error (``client.is_transient``) is
asked again after a bounded exponential backoff with full jitter, up to FETCH_MAX_ATTEMPTS; a
refusal for lack of credits closes the minute (or day) for every replica and waits for it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Final, TypeVar

from marketpipe.market import MAX_BATCH_SYMBOLS
from services.fetcher.client import (
    ApiError,
    CreditsRefused,
    SeriesAnswer,
    SeriesQuery,
    TransientError,
)
from services.fetcher.context import FetchContext

log = logging.getLogger("marketpipe.fetcher.request")

# How often one request may be refused for credits before giving up (each refusal waits a minute).
MAX_REFUSALS: Final = 5
BACKOFF_CAP_SECONDS: Final = 60.0

T = TypeVar("T")


def backoff_seconds(base: float, attempt: int, rng: random.Random) -> float:
    """Full jitter over an exponential ceiling: replicas that failed together spread out."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, base * 2 ** (attempt - 1)))


def send(ctx: FetchContext, cost: int, request: Callable[[], T], *, paid: int = 0) -> T:
    """``request()`` once its ``cost`` in credits is taken (``paid`` of them already were).

    Raises the last error when the attempts or the refusals are used up, or at once when the
    error is not transient.
    """
    attempt = refusals = 0
    while True:
        if paid < cost:
            ctx.limiter.acquire(cost - paid)
        paid = 0
        try:
            return request()
        except CreditsRefused as exc:
            refusals += 1
            ctx.limiter.spent(exc.scope, ctx.clock.now())
            if refusals > MAX_REFUSALS:
                raise
            log.warning("refused for credits (%s); waiting for the budget", exc.scope)
        except TransientError as exc:
            attempt += 1
            if attempt >= ctx.settings.fetch_max_attempts:
                raise
            delay = backoff_seconds(ctx.settings.fetch_backoff_seconds, attempt, ctx.rng)
            log.warning(
                "attempt %d/%d failed (%s); retrying in %.1fs",
                attempt,
                ctx.settings.fetch_max_attempts,
                exc,
                delay,
            )
            ctx.clock.sleep(delay)


def fetch_series(
    ctx: FetchContext,
    symbols: Sequence[str],
    query: SeriesQuery,
    *,
    outputsizes: Mapping[str, int] | None = None,
) -> Iterator[tuple[SeriesAnswer, SeriesQuery]]:
    """Each symbol's answer with the query that got it, batch by batch as credits allow.

    A batch holds as many symbols as there are credits this minute: one costing more than what
    is left would be refused whole. With ``outputsizes`` (bars wanted per symbol) a batch holds
    only symbols that want the same number of bars, so none is over-fetched for another (a
    series with no history would otherwise store a longer one's depth); credits are per symbol,
    so this costs requests, not credits. An error of a whole request that outlived the retries
    (or is not transient) becomes every one of its symbols' answer.
    """
    pending = list(symbols)
    if outputsizes:
        pending.sort(key=lambda s: outputsizes[s])  # stable: equal depths keep their order
    while pending:
        asked, group = query, pending
        if outputsizes:
            asked = replace(query, outputsize=outputsizes[pending[0]])
            group = [s for s in pending if outputsizes[s] == asked.outputsize]
        grant = ctx.limiter.acquire(min(len(group), MAX_BATCH_SYMBOLS), at_least=1)
        batch = group[: grant.credits]
        pending = [s for s in pending if s not in batch]
        try:
            answers = send(
                ctx, len(batch), partial(ctx.client.time_series, batch, asked), paid=grant.credits
            )
        except ApiError as exc:
            log.warning("time_series for %s failed: %s", batch, exc)
            answers = [SeriesAnswer(s, exc.as_body(), ctx.clock.now(), exc) for s in batch]
        for answer in answers:
            yield answer, asked
