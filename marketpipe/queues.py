"""Queue names, job names and retry policy shared by producers and workers."""

from __future__ import annotations

from typing import Final

TRANSFORM_QUEUE: Final = "marketpipe-transform"
LOAD_QUEUE: Final = "marketpipe-load"

# Jobs are enqueued by dotted name so a producer never imports a consumer's code.
TRANSFORM_JOB: Final = "services.transformer.jobs.transform_payload"
LOAD_JOB: Final = "services.loader.jobs.load_batch"
# On the load queue: recompute a stored series' derived columns from a changed bar on
# (args: symbol, interval, changed_from ISO[, changed_through ISO]).
RECOMPUTE_JOB: Final = "services.loader.jobs.recompute_series"
# A restatement: the transformer turns all re-fetched windows of a series into one batch, the
# loader swaps it in (services/loader/restatement.py).
RESTATE_TRANSFORM_JOB: Final = "services.transformer.jobs.transform_restatement"
RESTATE_LOAD_JOB: Final = "services.loader.jobs.load_restatement"
# Set (to a restatement id) when a restatement is recorded: the fetcher's loop, which checks it
# between ticks, then reads marketpipe.restatements (every tick reads it anyway).
RESTATEMENT_PENDING_KEY: Final = "marketpipe:restatements:pending"


def restatement_batch_id(restatement_id: int) -> str:
    """The batch (and job id suffix) of a restatement's whole re-fetched series."""
    return f"restatement-{restatement_id}"


# Seconds between retries of a failed job (RQ's scheduler re-enqueues it).
RETRY_INTERVALS: Final = (5, 15, 60, 120, 300)
