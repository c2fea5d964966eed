"""Kaneda's worker writing log lines into a small pipe read slowly (a lagging supervisor's stderr).

Used by the fork tests and by ``bench/bench_faults.py``: the worker's writes block inside
the log stream's own lock, the state a fork must not copy.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kaneda_core import Backend, Metrics

F_SETPIPE_SZ = 1031


class Refusing(Backend):
    """Refuses every batch for good with a message of its own: the worker logs each."""

    def __init__(self) -> None:
        self.refusals = 0

    def send(self, batch: Sequence[Any]) -> None:
        self.refusals += 1
        raise ValueError(f"refusal {self.refusals}: " + "x" * 300)

    def is_retryable(self, error: BaseException) -> bool:
        return False


@contextmanager
def kaneda_logging_into_a_full_pipe() -> Iterator[bytearray]:
    """While it lasts, Kaneda's worker logs refusals into a 4 KiB pipe read slowly.

    Yields what the pipe's reader has received so far (children forked meanwhile log
    into the same pipe).
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # a 4 KiB pipe fills at once
    stream = os.fdopen(write_end, "w")
    handler = logging.StreamHandler(stream)
    kaneda_log = logging.getLogger("kaneda")
    kaneda_log.addHandler(handler)
    kaneda_log.propagate = False
    received = bytearray()

    def read_slowly() -> None:
        while data := os.read(read_end, 65536):
            received.extend(data)
            time.sleep(0.002)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    metrics = Metrics(Refusing(), batch_size=1, flush_interval=0.001)
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            metrics.increment("refused")
            time.sleep(0.0005)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        time.sleep(0.3)  # the worker is logging refusals by now
        yield received
    finally:
        stop.set()
        feeder.join()
        metrics.close(5)
        kaneda_log.removeHandler(handler)
        kaneda_log.propagate = True
        stream.close()
        reader.join()
