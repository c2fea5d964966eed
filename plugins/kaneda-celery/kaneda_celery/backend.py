"""``CeleryBackend``: each batch sent as one Celery task, for ``kaneda worker`` or Celery's."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kaneda_core import DeliveryError, Metric
from kaneda_core.arguments import MAX_TIMEOUT, argument_error, check_arguments
from kaneda_core.backend import is_transient_os_error, url_options
from kaneda_core.errors import ConfigurationError
from kaneda_core.message import encode_batch
from kaneda_core.redact import redact_text, redact_url
from kaneda_core.urls import check_host
from kaneda_core.worker import MessageHandler, QueueBackend

if TYPE_CHECKING:
    from celery import Celery


class CeleryBackend(QueueBackend):
    """Sends each batch as one Celery task, ``kaneda.deliver(message)``.

    :param broker: the broker: ``redis://host:6379/0`` or ``amqp://user:pw@host:5672//``.
    :param queue_name: the queue (default ``kaneda``).
    :param timeout: seconds to wait for the broker before the batch is retried.
    :param visibility_timeout: on Redis, seconds after which a message whose worker
        died goes back to the queue. Keep it longer than a batch takes to store.
    :param assign_ids: give metrics reported without an id one (see
        :class:`~kaneda_core.worker.QueueBackend`); ``?assign_ids=false`` for InfluxDB.

    ``celery+redis://host:6379/0?queue_name=kaneda`` and
    ``celery+amqp://user:pw@host:5672//`` select it by URL. ``kaneda worker`` with the
    same URL, or ``celery -A kaneda_celery.worker worker -Q kaneda``, delivers the tasks.
    """

    example_url = "celery+redis://localhost:6379/0?queue_name=kaneda"

    def __init__(
        self,
        broker: str = "redis://localhost:6379/0",
        queue_name: str = "kaneda",
        timeout: float = 5.0,
        visibility_timeout: float = 60.0,
        assign_ids: bool = True,
    ) -> None:
        check_arguments(CeleryBackend, locals())
        super().__init__(assign_ids)
        if not queue_name:
            raise argument_error(CeleryBackend, "queue_name", "a non-empty string", queue_name)
        if not 0 < visibility_timeout < MAX_TIMEOUT:
            raise argument_error(
                CeleryBackend, "visibility_timeout", "a number of seconds > 0", visibility_timeout
            )
        if "://" not in broker:
            raise argument_error(
                CeleryBackend, "broker", "a broker URL (redis://host:6379/0, amqp://...)", broker
            )
        if any("://" not in url for url in broker.split(";")):
            # Celery reads "a;b" as a list of broker URLs: a ';' in a password would cut it
            # in two, and the broker's client quotes the pieces in its errors.
            raise ConfigurationError(
                f"broker {redact_url(broker)!r} holds a ';' that is not between two broker "
                "URLs: if a user name or password holds ';', escape it as %3B"
            )
        try:
            self._password = urlsplit(broker).password
        except ValueError:
            raise argument_error(CeleryBackend, "broker", "a URL", broker) from None
        self.broker = broker
        self.queue_name = queue_name
        self.timeout = float(timeout)
        self.visibility_timeout = float(visibility_timeout)
        self._app: Celery | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        _import_transport(broker)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> CeleryBackend:
        """``celery+redis://host:6379/0?queue_name=kaneda``, ``celery+amqp://user:pw@host//``."""
        options = url_options(cls, url, broker=broker_url_of(url))
        options.update(overrides)
        return cls(**options)

    def app(self) -> Celery:
        """The Celery app that sends the tasks, made on first use (again in a forked child)."""
        if self._pid != os.getpid():
            self.after_fork()
        if self._app is None:
            from .app import make_app

            with self._lock:
                if self._app is None:
                    self._app = make_app(
                        self.broker,
                        self.queue_name,
                        timeout=self.timeout,
                        visibility_timeout=self.visibility_timeout,
                        # py-amqp's own names (kombu hands it socket_timeout, which it
                        # ignores): a RabbitMQ that blocks publishers (a memory or disk
                        # alarm) held a send, waiting for its confirm, without end.
                        transport_options={
                            "read_timeout": self.timeout,
                            "write_timeout": self.timeout,
                        },
                    )
        return self._app

    def send(self, batch: Sequence[Metric]) -> None:
        """Send ``batch`` as one task; returns once the broker has it."""
        # The batch as JSON text: Celery's JSON then holds one string, which its decoder
        # reads in one step (a document would cost a Python call per metric's tags).
        from kombu.exceptions import OperationalError

        from .tasks import TASK

        try:
            self.app().send_task(
                TASK,
                args=(encode_batch(batch, self.new_id),),
                queue=self.queue_name,
                retry=False,  # the batching core retries, with its own backoff
            )
        except (OperationalError, OSError) as error:
            raise self.unreachable(error) from None

    def unreachable(self, error: BaseException) -> DeliveryError:
        """One line for a broker that cannot take the batch: where, why, what to check."""
        parts = urlsplit(self.broker)
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        where = (
            f"The Celery broker at {parts.hostname or 'localhost'}{port} ({parts.scheme}, "
            f"queue {self.queue_name!r})"
        )
        reason = self.redact(str(error) or type(error).__name__).rstrip(".")
        if _refused_credentials(error):
            return DeliveryError(
                f"{where} refused the credentials: {reason}. Check the user name and password "
                "in the URL",
                retryable=False,
            )
        if "maxmemory" in reason:  # Redis' OOM answer: reachable, and full
            return DeliveryError(
                f"{where} is out of memory and refuses new messages: {reason}. Free memory "
                "on it (are workers taking the queue?) or raise its maxmemory; the batch is "
                "sent again",
                retryable=True,
            )
        return DeliveryError(
            f"{where} unreachable: {reason}. Check that the broker runs there (Redis or "
            "RabbitMQ), that host, port and credentials in the URL are right, and that this "
            "machine can reach it",
            retryable=self.is_retryable(error),
        )

    def is_retryable(self, error: BaseException) -> bool:
        """Retry when the broker is down or slow (kombu's OperationalError, timeouts); not
        for refused credentials, a certificate that does not verify, a missing file."""
        from kombu.exceptions import OperationalError

        if isinstance(error, DeliveryError):
            return error.retryable
        if _refused_credentials(error) or "CERTIFICATE_VERIFY_FAILED" in str(error):
            return False
        if isinstance(error, OSError):
            return is_transient_os_error(error)
        return isinstance(error, OperationalError)

    def redact(self, text: str) -> str:
        """``text`` with the broker's password masked."""
        return redact_text(text, self._password)

    def close(self) -> None:
        """Close the broker connections; the next batch opens new ones."""
        app, self._app = self._app, None
        if app is not None:
            app.close()

    def after_fork(self) -> None:
        """Forget the parent's app and its connections (a child makes its own)."""
        super().after_fork()
        self._app = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @classmethod
    def serve(cls, url: str, handler: MessageHandler) -> None:
        """Run Celery's worker (solo pool) on the URL's queue until SIGTERM or SIGINT."""
        from .app import run_worker

        backend = cls.from_url(url)
        run_worker(backend.app(), backend.queue_name)

    def __repr__(self) -> str:
        return f"<CeleryBackend {redact_url(self.broker)} queue={self.queue_name!r}>"


def _refused_credentials(error: BaseException) -> bool:
    text = str(error)
    return "ACCESS_REFUSED" in text or "WRONGPASS" in text or "invalid password" in text


def broker_url_of(url: str) -> str:
    """The broker URL a ``celery+redis://`` or ``celery+amqp://`` URL stands for (no query)."""
    scheme, sep, rest = url.partition("://")
    prefix, plus, transport = scheme.partition("+")
    if not sep or prefix.lower() != "celery" or not plus or not transport:
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a Celery queue URL: expected celery+redis://host:6379/0"
            " or celery+amqp://user:password@host:5672//, with ?queue_name=kaneda"
        )
    if transport.lower() in _NETWORK_TRANSPORTS:  # no host is localhost, as for kombu
        check_host(url, CeleryBackend.example_url, default="localhost")
    return f"{transport.lower()}://{rest.partition('?')[0]}"


#: Brokers reached over the network, whose URL names a host (kombu's others may not:
#: ``memory://``, ``filesystem://``, ``redis+socket:///path``).
_NETWORK_TRANSPORTS = frozenset(("redis", "rediss", "amqp", "amqps", "pyamqp"))


def _import_transport(broker: str) -> None:
    """Import the broker's transport now, while the process runs (no connection is made).

    Kombu imports it on the first send; for a short-lived process that is at its exit,
    when redis-py's import (through concurrent.futures) can no longer register its exit
    hook and fails: every metric of the process was lost. An unknown transport is left
    for the first send to report, as a delivery error.
    """
    from kombu.transport import resolve_transport

    scheme = broker.partition("://")[0].partition("+")[0] or "amqp"
    with contextlib.suppress(Exception):
        from kombu.utils.imports import symbol_by_name

        symbol_by_name(resolve_transport(scheme))  # type: ignore[no-untyped-call]
