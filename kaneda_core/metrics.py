"""``Metrics``: the reporting API applications call."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from time import perf_counter, time_ns
from types import TracebackType
from typing import Any, TypeVar, cast

from .backend import Backend
from .delivery import Delivery, Item, RetryPolicy, Stats
from .dispatch import OVERFLOW_POLICIES, BatchingDispatcher, Overflow, Submit, SyncDispatcher
from .errors import ConfigurationError, InvalidMetric
from .model import (
    COUNTER,
    EVENT,
    GAUGE,
    TIMING,
    Metric,
    Scalar,
    TagsInput,
    check_custom_value,
    check_id,
    check_kind,
    check_name,
    check_number,
    check_value,
    copy_tags,
    host_name,
)

F = TypeVar("F", bound=Callable[..., Any])

# Tag values whose type alone proves them valid; anything else takes the full check.
_PLAIN_TAG_TYPES = frozenset((str, int, bool))
# Kinds whose int value needs no further check.
_NUMERIC_KINDS = frozenset((GAUGE, COUNTER, TIMING))


class Metrics:
    """Reports metrics and events to a backend.

    ``backend`` is a :class:`Backend`, a registered name (``"logger"``) or a URL
    (``"influxdb://localhost:8086/metrics"``); with none, ``KANEDA_URL`` or the
    settings module says which. With ``batching=True`` (the default) a call validates
    its input and queues the metric; a background worker delivers batches of
    ``batch_size`` at least every ``flush_interval`` seconds, retrying transient
    failures per ``retry``. At most ``max_buffer`` metrics (and, if given, about
    ``max_buffer_bytes`` of memory) wait; past that, ``overflow`` decides
    (``drop_oldest``, ``drop_newest``, or ``block`` for up to ``block_timeout``
    seconds). With ``buffer_path`` the queue is a SQLite file that keeps metrics across
    a backend outage and a crash of the process, delivered at least once. At
    interpreter exit the queue gets ``exit_timeout`` seconds to drain. With
    ``batching=False`` each call delivers before returning.

    A call raises :class:`InvalidMetric` for bad input, and never because the backend
    is down: delivery failures are logged, counted in :meth:`stats` and passed to the
    ``kaneda_batch_failed`` hook.
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        *,
        batching: bool = True,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        max_buffer: int = 100_000,
        max_buffer_bytes: int | None = None,
        buffer_path: str | os.PathLike[str] | None = None,
        overflow: Overflow = "drop_oldest",
        block_timeout: float = 0.1,
        exit_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        _check_options(
            batch_size, flush_interval, max_buffer, overflow, block_timeout, exit_timeout
        )
        if retry is not None and (not isinstance(retry, RetryPolicy) or retry.attempts < 1):
            raise ConfigurationError(f"retry must be a RetryPolicy, attempts >= 1; got {retry!r}")
        if buffer_path is not None and not batching:
            raise ConfigurationError("buffer_path needs batching=True")
        if max_buffer_bytes is not None and (
            not isinstance(max_buffer_bytes, int) or max_buffer_bytes < 1
        ):
            raise ConfigurationError(
                f"max_buffer_bytes must be a positive integer, got {max_buffer_bytes!r}"
            )
        if backend is None:
            from .config import backend_from_environment

            backend = backend_from_environment()
        elif isinstance(backend, str):
            from .config import create_backend

            backend = create_backend(backend)
        elif not isinstance(backend, Backend):
            raise ConfigurationError(
                f"backend must be a kaneda_core.Backend, a backend name or a URL, got {backend!r}"
            )
        self.backend: Backend = backend
        delivery = Delivery(backend, retry)
        self._delivery = delivery
        self._default_tags = _default_tags(backend)
        self._dispatcher: SyncDispatcher | BatchingDispatcher
        if batching:
            disk = None
            if buffer_path is not None:
                from .disk_buffer import DiskBuffer

                disk = DiskBuffer(os.fspath(buffer_path))
            self._dispatcher = BatchingDispatcher(
                delivery,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_buffer=max_buffer,
                max_buffer_bytes=max_buffer_bytes,
                disk=disk,
                overflow=overflow,
                block_timeout=block_timeout,
                exit_timeout=exit_timeout,
            )
        else:
            self._dispatcher = SyncDispatcher(delivery)
        self._submit = self._dispatcher.submit
        if type(backend).check is not Backend.check:
            # Only backends that refuse some metrics pay for a check at every call.
            self._submit = self._checked(self._submit)

    # -- reporting ---------------------------------------------------------------

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> None:
        """Record the current value of something: ``metrics.gauge('queue.size', 13)``."""
        if type(value) is not int:
            check_number(value)
        self._report(name, GAUGE, value, tags, None)

    def increment(self, name: str, tags: TagsInput | None = None) -> None:
        """Add one to a counter: ``metrics.increment('user.profile.views')``."""
        # The hottest call: _report's body inlined (a call costs as much as the checks).
        if type(name) is not str or not name:
            check_name(name)
        if type(tags) is dict:
            for key, item in tags.items():
                if type(key) is not str or type(item) not in _PLAIN_TAG_TYPES or not key:
                    tags = copy_tags(tags)
                    break
            tags = {**self._default_tags, **tags} if self._default_tags else tags.copy()  # type: ignore[dict-item]
        else:
            tags = self._own_tags(tags)
        self._submit((name, COUNTER, 1, tags, None, time_ns()))

    def decrement(self, name: str, tags: TagsInput | None = None) -> None:
        """Subtract one from a counter: ``metrics.decrement('hotel.occupation')``."""
        self._report(name, COUNTER, -1, tags, None)

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> None:
        """Record a duration: ``metrics.timing('request_time', 0.25)`` (units are yours)."""
        if type(value) is not int:
            check_number(value)
        self._report(name, TIMING, value, tags, None)

    def event(self, name: str, text: str, tags: TagsInput | None = None) -> None:
        """Record something that happened: ``metrics.event('user.signup', 'New user')``."""
        if not isinstance(text, str):
            raise InvalidMetric(f"text of an event must be a string, got {text!r}")
        self._report(name, EVENT, text, tags, None)

    def custom(
        self,
        name: str,
        metric: str,
        value: Any,
        tags: TagsInput | None = None,
        id_: str | int | None = None,
    ) -> None:
        """Record a value of your own kind ``metric``: a number, a string or a dict of them.

        ``id_`` identifies the report; backends that store ids keep one copy per id.
        """
        check_kind(metric)
        check_custom_value(value)
        check_id(id_)
        self._report(name, metric, value, tags, id_)

    def forward(self, metrics: Iterable[Metric]) -> None:
        """Queue metrics built elsewhere, keeping their name, kind, value, tags, id, time and host.

        For workers that take metrics off a queue and deliver them (``kaneda worker``):
        the stored metrics keep what the reporting process gave them. Each metric is
        validated as a reporting call's would be, and the backend's check and the
        filters still apply; default tags are not added (the reporting side did). If
        one is refused, :class:`InvalidMetric` names it and none of them is queued.
        """
        check = self.backend.check if type(self.backend).check is not Backend.check else None
        items = []
        for index, metric in enumerate(metrics):
            try:
                items.append(_forwarded_item(metric))
                if check is not None:
                    check(metric)
            except InvalidMetric as error:
                raise InvalidMetric(f"forwarded metric {index}: {error}") from None
        submit = self._dispatcher.submit
        for item in items:
            submit(item)

    def _report(self, name: str, kind: str, value: Any, tags: Any, id_: Any) -> None:
        if type(name) is not str or not name:
            check_name(name)
        # Validate and copy the tags in one pass; odd but valid values take the slow path.
        if type(tags) is dict:
            for key, item in tags.items():
                if type(key) is not str or type(item) not in _PLAIN_TAG_TYPES or not key:
                    tags = copy_tags(tags)
                    break
            tags = {**self._default_tags, **tags} if self._default_tags else tags.copy()
        else:
            tags = self._own_tags(tags)
        self._submit((name, kind, value, tags, id_, time_ns()))

    def _own_tags(self, tags: Any) -> Any:
        """The metric's own copy of tags that are not a plain dict (None, a list, a subclass)."""
        if tags is None:
            return dict(self._default_tags)
        tags = copy_tags(tags)
        if type(tags) is dict and self._default_tags:
            return {**self._default_tags, **tags}
        return tags

    def _checked(self, submit: Submit) -> Submit:
        """``submit`` preceded by the backend's own check of each metric, at the call."""
        check = self.backend.check
        new = tuple.__new__
        stamp = datetime.fromtimestamp
        utc = timezone.utc
        host = host_name()

        def checked_submit(item: Item) -> None:
            name, kind, value, tags, id_, ns = item
            check(
                new(Metric, (name, kind, value, tags, stamp(ns // 1000 / 1e6, utc), host, id_, ns))
            )
            submit(item)

        return checked_submit

    # -- timing ------------------------------------------------------------------

    def timed(
        self, name: str | None = None, tags: TagsInput | None = None, use_ms: bool | None = None
    ) -> Timer:
        """Time a function (as a decorator) or a block (as a context manager).

        Reports seconds as a float, or whole milliseconds with ``use_ms=True``. The
        decorator's default name is ``module.function``; ``async def`` functions are
        timed until their coroutine finishes. The time is reported even if the code
        raises.
        """
        return Timer(self, name, tags, use_ms)

    # -- lifecycle ---------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> int:
        """Deliver what is queued, waiting at most ``timeout`` seconds; returns what is left."""
        return self._dispatcher.flush(timeout)

    def close(self, timeout: float | None = None) -> int:
        """Flush, stop the worker and close the backend; returns how many metrics were left."""
        return self._dispatcher.close(timeout)

    def stats(self) -> Stats:
        """A snapshot of the delivery counters: sent, failed, dropped, filtered, retried, queued."""
        counters = self._delivery.stats
        with self._delivery._lock:
            snapshot = Stats(**counters.as_dict())
        snapshot.queued = self._dispatcher.queued()
        return snapshot

    def __enter__(self) -> Metrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "batching" if isinstance(self._dispatcher, BatchingDispatcher) else "sync"
        return f"<Metrics {type(self.backend).__name__} {mode}>"


class Timer:
    """What :meth:`Metrics.timed` returns: a decorator and a context manager."""

    def __init__(
        self, metrics: Metrics, name: str | None, tags: TagsInput | None, use_ms: bool | None
    ) -> None:
        if name is not None:
            check_name(name)
        self.metrics = metrics
        self.name = name
        self.tags = tags
        self.use_ms = bool(use_ms)
        self._starts: list[float] = []

    def report(self, elapsed: float, name: str | None = None) -> None:
        """Report ``elapsed`` seconds under this timer's name (or ``name``)."""
        value: float = round(elapsed * 1000) if self.use_ms else elapsed
        self.metrics.timing(cast(str, name or self.name), value, self.tags)

    def __call__(self, func: F) -> F:
        name = self.name or f"{func.__module__}.{func.__name__}"
        report = self.report
        if _is_coroutine_function(func):

            @functools.wraps(func)
            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                start = perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    report(perf_counter() - start, name)

            return cast(F, timed_coroutine)

        @functools.wraps(func)
        def timed_function(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                report(perf_counter() - start, name)

        return cast(F, timed_function)

    def __enter__(self) -> Timer:
        if self.name is None:
            raise ConfigurationError("metrics.timed() used as a context manager needs a name")
        self._starts.append(perf_counter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.report(perf_counter() - self._starts.pop())

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


def _forwarded_item(metric: Metric) -> Item:
    """The queue item of a metric built elsewhere: validated, tags copied, host kept."""
    if type(metric) is not Metric and not isinstance(metric, Metric):
        raise InvalidMetric(f"forward() takes Metric records, got {metric!r}")
    name, kind, value, tags, _stamp, host, id_, ns = metric
    # The usual case passes type checks alone (as a reporting call's does); the rest
    # takes the full checks, which name what is wrong.
    if type(name) is not str or not name:
        check_name(name)
    if kind not in _NUMERIC_KINDS or type(value) is not int:
        check_kind(kind)
        check_value(kind, value)
    if id_ is not None and (type(id_) is not str or not id_):
        check_id(id_)
    if type(host) is not str or not host:
        raise InvalidMetric(f"host must be a non-empty string, got {host!r}")
    if type(tags) is dict:
        for key, item in tags.items():
            if type(key) is not str or type(item) not in _PLAIN_TAG_TYPES or not key:
                tags = copy_tags(tags)
                break
        else:
            tags = tags.copy()
    else:
        tags = copy_tags(tags)
    if type(ns) is not int:
        if not isinstance(_stamp, datetime) or _stamp.tzinfo is None:
            raise InvalidMetric(f"timestamp must be timezone-aware (UTC), got {_stamp!r}")
        ns = metric.epoch_ns
    # A forwarded item carries its host after the time (a reporting call's does not).
    return cast(Item, (name, kind, value, tags, id_, ns, host))


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


def _default_tags(backend: Backend) -> dict[str, Scalar]:
    from .plugins import get_plugin_manager

    merged: dict[str, Scalar] = {}
    for tags in reversed(get_plugin_manager().hook.kaneda_default_tags(backend=backend)):
        if tags:
            merged.update(cast(Mapping[str, Scalar], tags))
    if merged:
        copy_tags(merged)  # a hook's bad tags fail here, once, not at every call
    return merged


def _check_options(
    batch_size: int,
    flush_interval: float,
    max_buffer: int,
    overflow: str,
    block_timeout: float,
    exit_timeout: float,
) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(max_buffer, int) or max_buffer < 1:
        raise ConfigurationError(f"max_buffer must be a positive integer, got {max_buffer!r}")
    for field, seconds in (
        ("flush_interval", flush_interval),
        ("block_timeout", block_timeout),
        ("exit_timeout", exit_timeout),
    ):
        if not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ConfigurationError(f"{field} must be a number of seconds >= 0, got {seconds!r}")
    if flush_interval <= 0:
        raise ConfigurationError(f"flush_interval must be > 0, got {flush_interval!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigurationError(
            f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}"
        )


__all__ = ["Metric", "Metrics", "Timer"]
