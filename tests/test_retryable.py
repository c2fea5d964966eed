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
