"""The options of a ``Metrics``, checked when it is made.

Each refusal is a :class:`~kaneda_core.ConfigurationError` that names the option, says
what it got and gives a value that works, so a typo in a configuration file fails at
start-up, not as a worker that never delivers.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .delivery import RetryPolicy
from .dispatch import OVERFLOW_POLICIES
from .errors import ConfigurationError


def check_options(
    *,
    batching: Any,
    batch_size: Any,
    flush_interval: Any,
    max_buffer: Any,
    max_buffer_bytes: Any,
    buffer_path: Any,
    overflow: Any,
    block_timeout: Any,
    exit_timeout: Any,
    retry: Any,
    aggregate: Any,
    percentiles: Any,
) -> None:
    """Refuse, with advice, any option of ``Metrics`` that cannot work."""
    for name, flag in (("batching", batching), ("aggregate", aggregate)):
        if type(flag) is not bool:
            _refuse(name, flag, "True or False", f"{name}=True")
    _count("batch_size", batch_size, "batch_size=1000")
    _count("max_buffer", max_buffer, "max_buffer=100_000")
    if max_buffer_bytes is not None:
        _count("max_buffer_bytes", max_buffer_bytes, "max_buffer_bytes=64 * 2**20")
    _seconds("flush_interval", flush_interval, "flush_interval=1.0", zero=False)
    _seconds("block_timeout", block_timeout, "block_timeout=0.1")
    _seconds("exit_timeout", exit_timeout, "exit_timeout=5.0")
    if overflow not in OVERFLOW_POLICIES:
        _refuse("overflow", overflow, f"one of {', '.join(OVERFLOW_POLICIES)}", "overflow='block'")
    if buffer_path is not None:
        _check_path(buffer_path)
        if not batching:
            raise ConfigurationError("buffer_path needs batching=True (the worker reads the file)")
    if retry is not None:
        _check_retry(retry)
    if aggregate and not batching:
        raise ConfigurationError(
            "aggregate=True needs batching=True: points are folded between flushes"
        )
    if percentiles is not None:
        from .aggregate import check_percentiles

        check_percentiles(percentiles)
        if not aggregate:
            raise ConfigurationError(
                f"percentiles={percentiles!r} only apply to aggregated timings: "
                "add aggregate=True, or leave percentiles out"
            )


def _check_path(buffer_path: Any) -> None:
    example = "buffer_path='/var/lib/app/kaneda.db'"
    try:
        path = os.fsdecode(buffer_path) if isinstance(buffer_path, (str, os.PathLike)) else ""
    except TypeError:  # an os.PathLike whose __fspath__ gives neither str nor bytes
        path = ""
    if not path:
        _refuse("buffer_path", buffer_path, "a file path", example)
    # No file name holds a NUL: SQLite's open would raise a bare ValueError for it.
    if "\0" in path:
        _refuse("buffer_path", buffer_path, "a file path without a NUL character", example)


def _check_retry(retry: Any) -> None:
    example = "retry=RetryPolicy(attempts=8, initial_delay=0.2)"
    if not isinstance(retry, RetryPolicy):
        _refuse("retry", retry, "a kaneda_core.RetryPolicy", example)
    _count("retry.attempts", retry.attempts, example)
    for name in ("initial_delay", "max_delay", "jitter"):
        _seconds(f"retry.{name}", getattr(retry, name), example)
    if not _real(retry.multiplier) or retry.multiplier < 1:
        _refuse("retry.multiplier", retry.multiplier, "a number >= 1", example)


def _count(name: str, value: Any, example: str) -> None:
    if type(value) is not int or value < 1:
        _refuse(name, value, "a whole number >= 1", example)


#: The longest wait an option may ask for: a day. Far longer waits overflow the
#: platform's timeouts (threading.TIMEOUT_MAX), which failed the worker at every round.
MAX_SECONDS = 86_400


def _seconds(name: str, value: Any, example: str, *, zero: bool = True) -> None:
    if not _real(value) or value < 0 or (value == 0 and not zero) or value > MAX_SECONDS:
        low = ">= 0" if zero else "> 0"
        _refuse(name, value, f"a number of seconds {low} and at most {MAX_SECONDS:,}", example)


def _real(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return type(value) in (int, float) and math.isfinite(value)


def _refuse(name: str, value: Any, wanted: str, example: str) -> None:
    raise ConfigurationError(f"{name} must be {wanted}, got {value!r} (for example {example})")
