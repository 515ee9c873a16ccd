"""Transformer worker: raw payloads -> denormalized OLAP batches (RQ, JSON serializer)."""

# Imported before the worker forks, so each job starts with pandas and the transforms loaded.
import pandas  # noqa: F401
import pyarrow  # noqa: F401

import services.transformer.jobs
from marketpipe.market import preload
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.worker import run_worker

if __name__ == "__main__":
    # The exchange calendar takes seconds to build: once here, not in every forked job.
    preload()
    # Parsed once here, not in every forked job (~11 ms a job, profiled in its work horse).
    services.transformer.jobs._settings()
    run_worker(TRANSFORM_QUEUE, __doc__ or "", service="transformer", database_role="transformer")
