"""``RQBackend``: each batch enqueued as one RQ job, for ``kaneda worker`` or ``rq worker``."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    OutOfMemoryError,
    TimeoutError,
)

from kaneda_core import DeliveryError, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import is_transient_os_error, url_options
from kaneda_core.deadline import deadline, request_seconds
from kaneda_core.errors import ConfigurationError
from kaneda_core.message import encode_batch
from kaneda_core.redact import redact_text, redact_url
from kaneda_core.urls import check_credentials_escaped, check_host
from kaneda_core.worker import MessageHandler, QueueBackend

from .bounded import RedisRequest, bounded_client

if TYPE_CHECKING:
    from rq import Queue

#: The job every batch runs as (``kaneda_rq.jobs.deliver``).
JOB = "kaneda_rq.jobs.deliver"

#: rq:// scheme variants -> the redis-py URL scheme they stand for.
_SCHEMES = {"rq": "redis", "rq+tls": "rediss", "rq+ssl": "rediss", "rq+unix": "unix"}


class RQBackend(QueueBackend):
    """Enqueues each batch as one RQ job, ``kaneda_rq.jobs.deliver(message)``.

    :param redis_url: the Redis server (``redis://:password@host:6379/0``).
    :param queue_name: the RQ queue (default ``kaneda``).
    :param timeout: seconds one batch's enqueue may take in all, every round trip to
        Redis included (plus a second per MB of the batch); then it is retried.
    :param job_timeout: seconds a worker may spend on one batch before RQ stops it.
    :param retries: how many times RQ runs a job again whose worker died with it.
    :param assign_ids: give metrics reported without an id one (see
        :class:`~kaneda_core.worker.QueueBackend`); ``?assign_ids=false`` for InfluxDB.

    ``kaneda worker rq://...`` or ``rq worker kaneda`` runs the jobs; a job ends well
    only once the backend has its metrics. ``rq://host:6379/0?queue_name=kaneda``
    selects it by URL (``rq+tls://`` for TLS).
    """

    example_url = "rq://localhost:6379/0?queue_name=kaneda"

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        queue_name: str = "kaneda",
        timeout: float = 5.0,
        job_timeout: int = 600,
        retries: int = 3,
        assign_ids: bool = True,
    ) -> None:
        check_arguments(RQBackend, locals())
        super().__init__(assign_ids)
        if not queue_name:
            raise argument_error(RQBackend, "queue_name", "a non-empty string", queue_name)
        if job_timeout <= 0:
            raise argument_error(RQBackend, "job_timeout", "a number of seconds > 0", job_timeout)
        if retries < 0:
            raise argument_error(RQBackend, "retries", "an integer >= 0", retries)
        if urlsplit(redis_url).scheme not in _SCHEMES.values():
            raise argument_error(
                RQBackend, "redis_url", "a redis://, rediss:// or unix:// URL", redis_url
            )
        try:
            self._password = urlsplit(redis_url).password
        except ValueError:
            raise argument_error(RQBackend, "redis_url", "a URL", redis_url) from None
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.timeout = float(timeout)
        self.job_timeout = int(job_timeout)
        self.retries = retries
        self._queue: Queue | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: The last batch whose enqueue failed, as sent: its metrics, message and job id.
        self._unconfirmed: tuple[list[Metric], str, str] | None = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RQBackend:
        """``rq://[:password@]host:6379/0?queue_name=kaneda`` (``rq+tls://`` for TLS)."""
        options = url_options(cls, url, redis_url=redis_url_of(url))
        options.update(overrides)
        return cls(**options)

    def send(self, batch: Sequence[Metric]) -> None:
        """Enqueue ``batch`` as one job; raises if Redis does not take it.

        The whole enqueue takes ``timeout`` seconds at most (plus a second per MB of the
        message). A batch sent again after a failure goes as the same job, message and
        ids: when Redis had enqueued it and only its answer was lost, it is not enqueued
        twice.
        """
        from rq import Retry
        from rq.exceptions import DuplicateJobError

        unconfirmed = self._unconfirmed
        same = unconfirmed is not None and len(unconfirmed[0]) == len(batch)
        if unconfirmed is not None and same and unconfirmed[0] == list(batch):
            metrics, message, job_id = unconfirmed
        else:
            metrics, message, job_id = list(batch), encode_batch(batch, self.new_id), None
            unconfirmed = None
        job_id = job_id or str(uuid.uuid4())
        queue = self.queue()
        request = RedisRequest(request_seconds(self.timeout, len(message)))
        with deadline(request.limit, request.abort) as watch, request:
            try:
                queue.enqueue(
                    JOB,
                    message,
                    job_id=job_id,
                    unique=True,  # one atomic script: the job saved and pushed, or not at all
                    job_timeout=self.job_timeout,
                    result_ttl=0,
                    retry=Retry(max=self.retries) if self.retries else None,
                    description=f"kaneda batch of {len(metrics)} metrics",
                )
            except DuplicateJobError:
                pass  # an earlier send of this batch was enqueued; its answer was lost
            except Exception as error:
                self._unconfirmed = (metrics, message, job_id)
                if watch.expired:
                    raise self.timed_out(request.limit) from None
                if isinstance(error, (ConnectionError, TimeoutError, OSError)):
                    raise self.unreachable(error) from None
                if _over_maxmemory(error):
                    raise self.full(error) from None
                raise
        if unconfirmed is not None and self._unconfirmed is unconfirmed:
            self._unconfirmed = None

    def timed_out(self, limit: float) -> DeliveryError:
        """One line for an enqueue cut off at its deadline (``limit`` seconds)."""
        extra = limit - self.timeout
        allowance = f", plus {extra:.2f} s for its size" if extra >= 0.01 else ""
        return DeliveryError(
            f"Redis at {redis_address(self.redis_url)} (queue {self.queue_name!r}) did not "
            f"take the batch within {self.timeout} s (timeout bounds the whole enqueue, "
            f"every round trip{allowance}); it is sent again. Check that Redis is not "
            "overloaded and that the network to it is sound, or raise ?timeout=",
            retryable=True,
        )

    def full(self, error: BaseException) -> DeliveryError:
        """One line for a Redis over its ``maxmemory``: up, and refusing writes for now."""
        reason = self.redact(str(error) or type(error).__name__).rstrip(".")
        return DeliveryError(
            f"Redis at {redis_address(self.redis_url)} (queue {self.queue_name!r}) is out of "
            f"memory and refuses new jobs: {reason}. Are workers taking the queue "
            "(kaneda worker rq://...)? Free memory on it or raise its maxmemory; the batch "
            "is sent again",
            retryable=True,
        )

    def unreachable(self, error: BaseException) -> DeliveryError:
        """One line for a Redis that cannot take the batch: where, why, what to check."""
        where = f"Redis at {redis_address(self.redis_url)} (queue {self.queue_name!r})"
        reason = self.redact(str(error) or type(error).__name__).rstrip(".")
        if isinstance(error, AuthenticationError):
            return DeliveryError(
                f"{where} refused the credentials: {reason}. Check the password in the URL "
                "(rq://:password@host:6379/0)",
                retryable=False,
            )
        if _CERTIFICATE_FAILED in reason:
            return DeliveryError(
                f"{where}: the server's TLS certificate did not verify: {reason}. Give the "
                "server a certificate this machine trusts",
                retryable=False,
            )
        return DeliveryError(
            f"{where} unreachable: {reason}. Check that redis-server runs there, that host, "
            "port and database in the URL are right (rq://host:6379/0, rq+tls:// for TLS), "
            "and that this machine can reach it",
            retryable=self.is_retryable(error),
        )

    def queue(self) -> Queue:
        """The RQ queue, connected on first use (again in a forked child)."""
        if self._pid != os.getpid():
            self.after_fork()
        if self._queue is None:
            with self._lock:
                if self._queue is None:
                    self._queue = connect_queue(self.redis_url, self.queue_name, self.timeout)
        return self._queue

    def is_retryable(self, error: BaseException) -> bool:
        """Retry when Redis is down, loading or slow; not for a wrong password, a
        certificate that does not verify, or a missing or forbidden socket file."""
        return is_retryable_redis_error(error)

    def redact(self, text: str) -> str:
        """``text`` with the Redis password masked."""
        return redact_text(text, self._password)

    def close(self) -> None:
        """Close the Redis connections; the next batch opens new ones."""
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.connection.close()

    def after_fork(self) -> None:
        """Forget the parent's Redis connections (a child opens its own)."""
        super().after_fork()
        self._queue = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._unconfirmed = None  # the parent's to send again, not the child's

    @classmethod
    def serve(cls, url: str, handler: MessageHandler) -> None:
        """Run RQ's worker (no fork per job) on the URL's queue until SIGTERM or SIGINT."""
        from .worker import run_simple_worker

        backend = cls.from_url(url)
        run_simple_worker(backend.redis_url, backend.queue_name, handler)

    def __repr__(self) -> str:
        return f"<RQBackend {redact_url(self.redis_url)} queue={self.queue_name!r}>"


def redis_url_of(url: str) -> str:
    """The Redis URL an ``rq://`` URL stands for, without the query (Kaneda's options)."""
    scheme, sep, rest = url.partition("://")
    redis_scheme = _SCHEMES.get(scheme.lower())
    if not sep or redis_scheme is None:
        raise ConfigurationError(
            f"{redact_url(url)!r} is not an RQ queue URL: expected rq://host:6379/0"
            "?queue_name=kaneda (rq+tls:// for TLS, rq+unix:///path for a socket)"
        )
    if redis_scheme != "unix":  # no host is localhost; a slash too many is refused
        check_host(url, RQBackend.example_url, default="localhost")
    check_credentials_escaped(url)  # before reading parts that may be a password's
    address = rest.partition("?")[0]
    if redis_scheme != "unix" and not unquote(address).strip("/"):
        address = "localhost:6379/0"
    database = address.rpartition("@")[2].partition("/")[2].strip("/")
    if redis_scheme != "unix" and database and not database.isdigit():
        raise ConfigurationError(
            f"{redact_url(url)} names a Redis database that is not a number: a Redis "
            "database is one, as in rq://localhost:6379/0?queue_name=kaneda"
        )
    return f"{redis_scheme}://{address}"


#: What OpenSSL says of a certificate that does not verify (redis-py quotes it).
_CERTIFICATE_FAILED = "CERTIFICATE_VERIFY_FAILED"


def _over_maxmemory(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing a write over its maxmemory (noeviction)."""
    return isinstance(error, OutOfMemoryError) or "maxmemory" in str(error)


def is_retryable_redis_error(error: BaseException) -> bool:
    """Whether a retry may help after ``error`` from redis-py (or from the socket below)."""
    if isinstance(error, DeliveryError):
        return error.retryable
    if _over_maxmemory(error):
        return True  # until workers take the queue, or memory is freed
    if isinstance(error, AuthenticationError) or _CERTIFICATE_FAILED in str(error):
        return False
    if isinstance(error, OSError):
        return is_transient_os_error(error)
    return isinstance(error, (ConnectionError, TimeoutError))


def redis_address(redis_url: str) -> str:
    """``host:port`` (or the socket's path) of a Redis URL, for messages."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return parts.path or redis_url
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


def connect_queue(redis_url: str, queue_name: str, timeout: float) -> Queue:
    """An RQ queue on a new Redis connection pool whose calls a deadline can break off.

    ``timeout`` bounds connecting and each read; run a call within a
    :class:`~kaneda_rq.bounded.RedisRequest` to bound it as a whole (as ``send`` does).
    """
    from rq import Queue

    return Queue(queue_name, connection=bounded_client(redis_url, timeout))
