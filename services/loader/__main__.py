"""Loader worker: transformed batches -> PostgreSQL, the only writer of the marketpipe schema."""

import adbc_driver_postgresql.dbapi  # noqa: F401  (imported before the fork, see marketpipe.worker)
import pyarrow  # noqa: F401

import services.loader.jobs
from marketpipe.queues import LOAD_QUEUE
from marketpipe.worker import run_worker

if __name__ == "__main__":
    # Parsed once here, not in every forked job (~11 ms a job, profiled in its work horse).
    services.loader.jobs._settings()
    run_worker(LOAD_QUEUE, __doc__ or "", service="loader", database_role="loader")
