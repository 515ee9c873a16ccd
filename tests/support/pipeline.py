"""Run the queued transform and load jobs in this process, with the jobs' own code."""

from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.loader.jobs import load
from services.transformer.jobs import transform


def drain(settings: Settings, redis: Redis) -> int:
    """Every queued transform, then every load (each queue in its order); loads run."""
    loads = 0
    for name, run in ((TRANSFORM_QUEUE, transform), (LOAD_QUEUE, load)):
        queue = broker.queue(name, redis, settings)
        while ids := queue.get_job_ids():
            for job_id in ids:
                job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
                run(settings, job.args[0])
                queue.remove(job_id)
                loads += name == LOAD_QUEUE
    return loads
