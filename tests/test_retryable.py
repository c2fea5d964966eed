"""What is retried: network errors are; a missing folder or a permission is not."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics
from kaneda_core.backends import LoggerBackend


class Nothing(Backend):
    def send(self, batch: Sequence[Metric]) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        socket.gaierror(socket.EAI_AGAIN, "try again"),
        OSError(errno.ENETUNREACH, "network unreachable"),
        OSError(errno.ENOSPC, "no space left on device"),
    ],
)
def test_the_default_retries_network_errors(error: BaseException) -> None:
    assert Nothing().is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "Permission denied"),
        IsADirectoryError(errno.EISDIR, "Is a directory"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory"),
        OSError(errno.EROFS, "Read-only file system"),
        ssl.SSLCertVerificationError("certificate verify failed"),
        ValueError("not an OSError"),
    ],
)
def test_the_default_does_not_retry_what_no_retry_mends(error: BaseException) -> None:
    assert not Nothing().is_retryable(error)


def test_the_logger_fails_a_missing_folder_at_once_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "metrics.jsonl"
    backend = LoggerBackend(filename=str(path))
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert not caught.value.retryable
    assert str(path) in str(caught.value) and "folder exists" in str(caught.value)


def test_a_missing_folder_is_not_retried_by_the_dispatcher(tmp_path: Path) -> None:
    metrics = Metrics(LoggerBackend(filename=str(tmp_path / "missing" / "m.jsonl")))
    metrics.gauge("g", 1)
    assert metrics.flush(timeout=5) == 0
    stats = metrics.stats()
    assert (stats.failed, stats.retried, stats.sent) == (1, 0, 0)
    metrics.close()


QUEUES = {
    "rq": "rq://127.0.0.1:6379/0",
    "celery": "celery+redis://127.0.0.1:6379/0",
    "zmq": "zmq+tcp://127.0.0.1:5555",
}


@pytest.mark.parametrize("queue", sorted(QUEUES))
@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory: '/run/redis.sock'"),
        PermissionError(errno.EACCES, "Permission denied"),
        ssl.SSLCertVerificationError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    ],
)
def test_no_queue_retries_what_no_retry_mends(queue: str, error: BaseException) -> None:
    from kaneda_core import create_backend

    backend = create_backend(QUEUES[queue])
    assert not backend.is_retryable(error)
    backend.close()


@pytest.mark.parametrize("queue", sorted(QUEUES))
def test_every_queue_retries_a_refused_connection(queue: str) -> None:
    from kaneda_core import create_backend

    backend = create_backend(QUEUES[queue])
    assert backend.is_retryable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    backend.close()


def test_redis_errors_that_wrap_a_certificate_or_a_password_are_not_retried() -> None:
    from redis.exceptions import AuthenticationError, ConnectionError

    from kaneda_core import create_backend

    backend = create_backend(QUEUES["rq"])
    assert not backend.is_retryable(AuthenticationError("WRONGPASS invalid password"))
    assert not backend.is_retryable(
        ConnectionError("Error 1 connecting to h:6380. [SSL: CERTIFICATE_VERIFY_FAILED]")
    )
    assert backend.is_retryable(ConnectionError("Error 111 connecting to h:6379. Refused."))
    backend.close()
