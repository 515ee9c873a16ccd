"""Where a fetched answer leaves the fetcher: as a payload, with its transform enqueued once.

The hourly cycle and the backfill hand on through :func:`hand_on` only. Permanent API errors
travel the same way as the API's own error object, so the loader writes them to
``marketpipe.pipeline_runs`` with the API's message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from marketpipe import broker, raw
from marketpipe.contract import RawPayload
from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from services.fetcher.client import SeriesAnswer, SymbolRefused
from services.fetcher.context import FetchContext
from services.fetcher.reference import is_pair, remember_pair
from services.fetcher.series import SeriesView, transform_job_id, view_series

log = logging.getLogger("marketpipe.fetcher")

ENQUEUED_PREFIX: Final = "marketpipe:fetch:enqueued"
BAD_SYMBOL_PREFIX: Final = "marketpipe:fetch:bad-symbol"
# A symbol the API served before and refused at its last ask: one more refusal, the day off.
REFUSED_ONCE_PREFIX: Final = "marketpipe:fetch:refused-once"


def hand_on(ctx: FetchContext, payload: RawPayload, view: SeriesView | None = None) -> bool:
    """Land the raw payload, then enqueue its transform job once; False if it was enqueued.

    ``view``: the payload's :func:`view_series`, when the caller has it already (it parses
    every bar's time; parsed once, bench_tick's 50-symbol first tick landed its last payload
    after 2.19 s instead of 3.25 s).

    One job per (symbol, interval, window) and content (:func:`transform_job_id`). A marker set
    with NX decides, atomically across replicas and restarts, who enqueues; it lives
    BLOB_TTL_SECONDS, so the same work is never queued twice meanwhile.
    """
    redis, settings = ctx.redis, ctx.settings
    view = view or view_series(payload.body, payload.interval, payload.fetched_at)
    job_id = transform_job_id(
        payload.symbol, payload.interval, (view.oldest, view.newest), payload.payload_id
    )
    # Raw first: landed in Postgres, immutable, before anything may transform it.
    raw.land_payload(settings.role_url("fetcher"), payload)
    marker = f"{ENQUEUED_PREFIX}:{job_id}"
    if not redis.set(marker, payload.payload_id, nx=True, ex=settings.blob_ttl_seconds):
        return False
    try:
        broker.queue(TRANSFORM_QUEUE, redis, settings).enqueue(
            TRANSFORM_JOB,
            args=(payload.payload_id,),
            job_id=job_id,
            retry=broker.default_retry(),
            description=f"transform {payload.symbol} {payload.interval}",
        )
    except BaseException:
        redis.delete(marker)
        raise
    return True


def land(
    ctx: FetchContext,
    answer: SeriesAnswer,
    request: dict[str, Any],
    instrument: dict[str, Any],
    view: SeriesView | None = None,
) -> bool:
    """Hand on the payload of an answer; False if its transform was enqueued already."""
    return hand_on(ctx, payload_of(ctx, answer, request, instrument), view)


def payload_of(
    ctx: FetchContext, answer: SeriesAnswer, request: dict[str, Any], instrument: dict[str, Any]
) -> RawPayload:
    """The raw payload an answer becomes (its id is what the loader's run row names).

    A pair's attributes come from its answer's meta (no reference call costs a credit for them).
    """
    if answer.error is None and is_pair(answer.symbol):
        instrument = remember_pair(ctx, answer.symbol, answer.body) or instrument
    return RawPayload.build(
        source=ctx.settings.data_source,  # type: ignore[arg-type]
        symbol=answer.symbol,
        interval=ctx.settings.interval,
        body=answer.body,
        request=request,
        instrument=instrument,
        fetched_at=answer.served_at,
    )


def record_error(
    ctx: FetchContext, answer: SeriesAnswer, request: dict[str, Any], *, served_before: bool = False
) -> str:
    """A permanent error goes to the run log via the pipeline; never retried. Its message.

    A refused symbol takes the day off (REFERENCE_REFRESH_HOURS), except at its first refusal
    after being served (``served_before``: the series has bars): see :func:`_refuse`.
    """
    message = str(answer.body.get("message", answer.body))
    log.warning("API error for %s: %s", answer.symbol, message)
    land(ctx, answer, request, {})
    if isinstance(answer.error, SymbolRefused):
        _refuse(ctx, answer.symbol, message, served_before)
    return message


def _refuse(ctx: FetchContext, symbol: str, message: str, served_before: bool) -> None:
    """Skip a refused symbol for the day, unless the API served it before and this refusal is
    the first since: then the next tick asks again. A lone "not found" for a series we hold is
    more likely the API's hiccup than a delisting, and a day off would hold its bars back a day
    (the soak's March phase lost a Monday of MSFT to one); refused twice in a row, it is off."""
    day = int(ctx.settings.reference_refresh_hours * 3600)
    once = f"{REFUSED_ONCE_PREFIX}:{symbol}"
    if served_before and ctx.redis.set(once, message[:500], nx=True, ex=2 * day):
        log.warning("%s was served before: asking again at the next tick", symbol)
        return
    ctx.redis.set(f"{BAD_SYMBOL_PREFIX}:{symbol}", message[:500], ex=day)


def served_again(ctx: FetchContext, symbols: Sequence[str]) -> None:
    """These symbols were answered: a refusal before them no longer counts towards a day off."""
    if symbols:
        ctx.redis.delete(*[f"{REFUSED_ONCE_PREFIX}:{s}" for s in symbols])
