"""``kaneda worker rq://...``: RQ's own worker, running jobs in its process (no fork per job).

Jobs then deliver through the handler ``kaneda worker`` installed: one ``Metrics``,
one connection to the store, and the disk buffer if asked for, for the life of the
worker. RQ's worker stops on SIGTERM or SIGINT after the job at hand.
"""

from __future__ import annotations

import logging
import time

import redis

from kaneda_core.redact import redact_url
from kaneda_core.worker import MessageHandler

log = logging.getLogger("kaneda.rq")

#: Seconds between RQ's maintenance runs, which give jobs of killed workers back.
MAINTENANCE_INTERVAL = 60


def run_simple_worker(redis_url: str, queue_name: str, handler: MessageHandler) -> None:
    """Run an RQ ``SimpleWorker`` on ``queue_name``; wait for Redis if it is down at start."""
    from rq import Queue, SimpleWorker

    delay = 0.5
    while True:
        # No socket timeout: the worker blocks in Redis while it waits for jobs.
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
        try:
            worker = SimpleWorker(
                [Queue(queue_name, connection=connection)],
                connection=connection,
                maintenance_interval=MAINTENANCE_INTERVAL,
            )
            worker.work(with_scheduler=False, logging_level="WARNING")
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            if isinstance(error, redis.exceptions.AuthenticationError):
                raise
            log.warning(
                "Kaneda RQ worker: Redis at %s is not reachable (%s); trying again in %.1fs",
                redact_url(redis_url),
                error,
                delay,
            )
            time.sleep(delay)
            delay = min(10.0, delay * 2)
        finally:
            connection.close()
