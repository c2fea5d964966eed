"""``Metrics``: the reporting API applications call."""

from __future__ import annotations

import functools
import os
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import descriptors, plugins, stamps
from .backend import Backend
from .closer import let_go
from .delivery import Delivery, Item, RetryPolicy, Stats, log
from .dispatch import (
    BatchingDispatcher,
    Overflow,
    Submit,
    SyncDispatcher,
    close_made_backend,
    exit_callback_ran,
)
from .errors import ConfigurationError, InvalidMetric
from .model import (
    COUNTER,
    EVENT,
    GAUGE,
    MAX_INT,
    TIMING,
    Metric,
    Scalar,
    TagsInput,
    check_id,
    check_kind,
    check_name,
    check_number,
    copy_tags,
    host_name,
    own_custom_value,
    own_value,
)
from .options import check_options
from .stamps import SLOTS, after_step_back, latest, time_ns

if TYPE_CHECKING:
    from contextvars import ContextVar

    from .aggregate import Aggregator

F = TypeVar("F", bound=Callable[..., Any])

_MIN_INT = -MAX_INT
#: The integers every store holds as such (aggregated calls check those beyond in full).
_MAX_INT64 = 2**63 - 1
_MIN_INT64 = -(2**63)
# The methods an aggregating Metrics replaces with folding ones, per instance.
_AGGREGATED = ("increment", "decrement", "gauge", "timing")
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
    interpreter exit, and leaving a ``with`` block, the queue gets ``exit_timeout``
    seconds to drain. With
    ``batching=False`` each call delivers before returning. A URL may carry
    ``?aggregate=true&percentiles=...``; the keywords, when given, win over them.

    A call raises :class:`InvalidMetric` for bad input, and never because the backend
    is down: delivery failures are logged, counted in :meth:`stats` and passed to the
    ``kaneda_batch_failed`` hook.
    """

    #: The dispatcher of ``batching=False``; the ``kaneda`` face uses one that keeps
    #: the backend's answer for the caller.
    _sync_dispatcher: type[SyncDispatcher] = SyncDispatcher

    @descriptors.explained("make a Metrics")  # (what it imports on first use)
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
        aggregate: bool | None = None,
        percentiles: Sequence[float] | None = None,
    ) -> None:
        made = not isinstance(backend, Backend)  # from a URL, a name or the environment
        if isinstance(backend, str) or backend is None:
            # A URL (or KANEDA_URL) may carry the Metrics' own options: ?aggregate=true
            from .config import URL_VARIABLE, split_metrics_options

            url = backend if backend is not None else os.environ.get(URL_VARIABLE)
            if url and "://" in url:
                url, from_url = split_metrics_options(url)
                # A keyword given wins over the URL's option, as in connect().
                if aggregate is None:
                    aggregate = from_url.get("aggregate", False)
                if percentiles is None:
                    percentiles = from_url.get("percentiles")
                if backend is not None:
                    backend = url
                elif from_url:
                    from .config import create_backend

                    backend = create_backend(url)
        if aggregate is None:  # not given, nor in the URL
            aggregate = False
        check_options(
            batching=batching,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            max_buffer_bytes=max_buffer_bytes,
            buffer_path=buffer_path,
            overflow=overflow,
            block_timeout=block_timeout,
            exit_timeout=exit_timeout,
            retry=retry,
            aggregate=aggregate,
            percentiles=percentiles,
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
        self._exit_timeout = exit_timeout
        delivery = Delivery(backend, retry)
        delivery.owns_backend = made
        self._delivery = delivery
        self._default_tags = hooks_default_tags(backend)
        self._dispatcher: SyncDispatcher | BatchingDispatcher
        self._host = host_name()
        stamps.process_slot()  # taken now: the calls read it directly
        if batching and exit_callback_ran():
            # Made by an exit handler that runs after Kaneda's (a lazy global): no worker
            # would deliver its queue, which nothing closes any more.
            log.warning(
                "Kaneda: a Metrics made after Kaneda's exit callback ran delivers each "
                "metric in the caller's thread (batching=False; no aggregation, no "
                "buffer_path)"
            )
            batching = aggregate = False
            buffer_path = None
        aggregator = None
        if aggregate:
            from .aggregate import Aggregator, check_percentiles

            aggregator = Aggregator(
                # Not a bound method: the worker keeps the aggregator, which must not keep
                # this Metrics from being collected (see closer.let_go).
                functools.partial(_tags_with_defaults, defaults=self._default_tags),
                backend.check,
                self._host,
                check_percentiles(percentiles if percentiles is not None else (50, 90, 99)),
            )
        if batching:
            disk = None
            if buffer_path is not None:
                from .disk_buffer import DiskBuffer

                disk = DiskBuffer(
                    os.fspath(buffer_path),
                    destination=_destination(backend),
                    on_unreadable=lambda rows: delivery.count(unreadable=rows),
                    on_refused=lambda item, why: delivery.fail([item], InvalidMetric(why)),
                )
            # No thread is started here: the first reporting call starts the worker (see
            # BatchingDispatcher.start_at_first_call); where none can be had then (the
            # process's thread limit), the calls deliver in the caller's thread instead.
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
                aggregator=aggregator,
            )
            # Let go of unclosed, it is closed for the application (see closer.let_go).
            weakref.finalize(self, let_go, self._dispatcher).atexit = False
            self._submit = self._dispatcher.waiting_submit()
        else:
            self._dispatcher = self._sync_dispatcher(delivery)
            self._submit = self._dispatcher.submit
            # Let go of unclosed, or alive at exit: the backend it made is closed (kaneda
            # 1.0's Metrics() from the settings, made per request, kept a socket each).
            weakref.finalize(self, close_made_backend, self._dispatcher)
        # Only backends that refuse some metrics pay for a check at every call.
        self._check = backend.check if type(backend).check is not Backend.check else None
        self._check_broke_logged = False
        # The check takes the queued record itself (see Backend.checks_records).
        self._check_records = bool(getattr(backend, "checks_records", False))
        if self._check is not None:
            self._submit = self._checked(self._submit)
        # A queue in memory that calls append to themselves (see _report): None when a
        # call goes through _submit (in the caller's thread, a disk buffer, a byte bound).
        self._queue: deque[Any] | None = None
        self._mark = 0
        if isinstance(self._dispatcher, BatchingDispatcher):
            self._queue, self._mark = self._dispatcher.direct_queue() or (None, 0)
        self._dispatcher.on_close(self._closed)
        # Until the first call (see _forked): the function that call goes through, and
        # what it replaced.
        self._first_submit: Submit | None = None
        self._started = (self._submit, self._mark)
        if isinstance(self._dispatcher, BatchingDispatcher):
            self._dispatcher.on_fork(self._forked)
            self._dispatcher.on_switch(self._switched)
            if self._dispatcher.waiting():
                self._forked(True)  # no worker yet: the first call starts it
        if aggregator is not None:
            self._aggregate_calls(aggregator)
        if isinstance(self._dispatcher, BatchingDispatcher) and self._dispatcher.in_callers():
            # Started when made (a disk buffer's rows), no thread to be had: in the caller.
            self._switched(self._dispatcher.submit)

    def _closed(self, submit_after_close: Submit) -> None:
        # After close(), a call is counted as dropped (and said once), never queued.
        self._submit = submit_after_close
        self._queue = None
        for name in _AGGREGATED:
            self.__dict__.pop(name, None)  # back to the class's methods, which drop

    def _forked(self, waiting: bool) -> None:
        """Until its first call (``waiting``: made, or in a forked child), the first call
        starts the dispatcher's worker.

        A call reaches the dispatcher when its queue reaches the mark, which is 1 until
        then, or through ``_submit``, then a function that starts the worker first; the
        calls' own path is not slowed. ``waiting`` False: started, the usual path again.
        """
        dispatcher = self._dispatcher
        assert isinstance(dispatcher, BatchingDispatcher)
        if waiting:
            if self._first_submit is not None:
                return  # a child of a child that never reported: waiting already
            submit = self._submit
            start = dispatcher.start_at_first_call

            def first_submit(item: Item) -> None:
                start()
                # Through what the start left: the usual path, or the caller's thread
                # where no worker could be had (see _switched).
                now = self._submit
                (submit if now is first_submit else now)(item)

            self._started = (submit, self._mark)
            self._first_submit = first_submit
            self._submit = first_submit
            self._mark = 1
            return
        first, self._first_submit = self._first_submit, None
        if first is None:
            return
        submit, self._mark = self._started
        if self._submit is first:  # not once closed
            self._submit = submit

    def _switched(self, submit: Submit) -> None:
        """No worker could be had at the first call: each call delivers in its thread
        through ``submit``, checked as before, without aggregation (as batching=False)."""
        self._first_submit = None
        self._submit = self._checked(submit) if self._check is not None else submit
        self._queue = None
        self._mark = 0
        self._started = (self._submit, 0)
        for name in _AGGREGATED:
            self.__dict__.pop(name, None)  # back to the class's methods

    def _aggregate_calls(self, aggregator: Aggregator) -> None:
        """Counters, gauges and timings queue their series for folding (see aggregate).

        A call builds a key from its name and tags as they are given (see
        aggregate.series_key); a known series' key equal to it was validated then, and
        the call queues that key, the series' own. A call whose key matches no series
        (its first, or tags of numbers, or no key can be made of them) is validated in
        full, and refused there if bad.
        """
        from .aggregate import FOLD_EVERY, LIST

        wake = self._dispatcher._wake_worker  # type: ignore[union-attr]
        admit = aggregator.admit
        check_value = aggregator.check_value

        def key_of(name: Any, tags: Any) -> tuple[Any, ...] | None:
            # A dict subclass (OrderedDict, defaultdict) is the series of the plain dict
            # alike; tags of any other type match no series.
            if isinstance(tags, dict):
                return (name, *tags, *tags.values())
            if tags is None:
                return (name,)
            return (name, LIST, *tags) if isinstance(tags, (list, tuple)) else None

        counts, known_counts = aggregator.counts, aggregator.valid[COUNTER]
        append_count = counts.append
        # Calls waiting to be folded, at most: past it the worker is held up (a backend
        # that is down, between retries) and a call is dropped, as a full queue drops.
        limit = max(10 * self._dispatcher.max_buffer, 2 * FOLD_EVERY)  # type: ignore[union-attr]
        count = self._delivery.count

        def drop_newest(queue: Any) -> None:
            try:
                queue.pop()  # this call, or one as recent
            except IndexError:  # the worker folded them meanwhile
                return
            count(dropped=1)

        def increment(name: str, tags: TagsInput | None = None) -> None:
            key = (name, *tags, *tags.values()) if type(tags) is dict else key_of(name, tags)
            try:
                key = known_counts[key]
            except Exception:  # noqa: BLE001 - not known, or no key (a value's __eq__ raised)
                key = None
            if key is None:
                key = admit(COUNTER, name, tags, 1)  # validates: raises InvalidMetric
            append_count(key)
            if len(counts) > FOLD_EVERY:
                wake()
                if len(counts) > limit:
                    drop_newest(counts)

        def valued(kind: str, queue: Any) -> Callable[..., None]:
            known = aggregator.valid[kind]
            append = queue.append

            def call(name: str, value: Any, tags: TagsInput | None = None) -> None:
                key = (name, *tags, *tags.values()) if type(tags) is dict else key_of(name, tags)
                try:
                    key = known[key]
                except Exception:  # noqa: BLE001 - see increment
                    key = None
                if key is None:
                    key = admit(kind, name, tags, value)
                elif type(value) is not int:
                    check_number(value)  # a float's finiteness; anything else is refused
                elif not _MIN_INT64 <= value <= _MAX_INT64:
                    # Beyond 64 bits: the store may refuse what the series' first value
                    # did not show it (InfluxDB's integers), so it checks this one too.
                    check_value(kind, name, tags, value)
                append((key, value))
                if len(queue) > FOLD_EVERY:
                    wake()
                    if len(queue) > limit:
                        drop_newest(queue)

            return call

        add = valued(COUNTER, aggregator.adds)

        def decrement(name: str, tags: TagsInput | None = None) -> None:
            add(name, -1, tags)

        calls = {
            "increment": increment,
            "decrement": decrement,
            "gauge": valued(GAUGE, aggregator.gauges),
            "timing": valued(TIMING, aggregator.timings),
        }
        for name, call in calls.items():
            # Held as a bound method holds its object: ``count = Metrics(...).increment``
            # keeps the Metrics, which is closed once let go of (see closer.let_go).
            call.__self__ = self  # type: ignore[attr-defined]
            setattr(self, name, call)

    # -- reporting ---------------------------------------------------------------

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> None:
        """Record the current value of something: ``metrics.gauge('queue.size', 13)``."""
        if type(value) is not int or not _MIN_INT < value < MAX_INT:
            check_number(value)
        self._report(name, GAUGE, value, tags, None)

    def increment(self, name: str, tags: TagsInput | None = None) -> None:
        """Add one to a counter: ``metrics.increment('user.profile.views')``."""
        # The hottest call: _report's body inlined (a call costs as much as the checks).
        if type(name) is not str or not name.isascii() or not name:
            name = check_name(name)
        if type(tags) is dict:
            # Plain ASCII strings are valid as they are; anything else takes the full check.
            for key, item in tags.items():
                if (
                    not (
                        type(key) is str and type(item) is str and key.isascii() and item.isascii()
                    )
                    or not key
                ):
                    tags = copy_tags(tags)
                    break
            tags = {**self._default_tags, **tags} if self._default_tags else tags.copy()  # type: ignore[dict-item]
        else:
            tags = self._own_tags(tags)
        ns = time_ns()
        ns -= ns % SLOTS - stamps.slot
        if ns <= latest[0]:  # the clock went back: never a time given already
            ns = after_step_back(ns)  # (which keeps the last time given)
        else:
            latest[0] = ns
        # The metric's record itself (see Item): the worker only wraps it as a Metric.
        item = (name, COUNTER, 1, tags, None, self._host, None, ns)
        queue = self._queue
        if queue is None:
            self._submit(item)
            return
        check = self._check
        if check is not None:
            # The record itself where the backend takes it (Backend.checks_records).
            try:
                check(item if self._check_records else tuple.__new__(Metric, item))  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                self._check_broke(error)
        queue.append(item)
        if len(queue) >= self._mark:
            self._dispatcher.after_append()  # type: ignore[union-attr]

    def decrement(self, name: str, tags: TagsInput | None = None) -> None:
        """Subtract one from a counter: ``metrics.decrement('hotel.occupation')``."""
        self._report(name, COUNTER, -1, tags, None)

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> None:
        """Record a duration: ``metrics.timing('request_time', 0.25)`` (units are yours)."""
        if type(value) is not int or not _MIN_INT < value < MAX_INT:
            check_number(value)
        self._report(name, TIMING, value, tags, None)

    def event(self, name: str, text: str, tags: TagsInput | None = None) -> None:
        """Record something that happened: ``metrics.event('user.signup', 'New user')``."""
        if type(text) is not str or not text.isascii():
            text = own_value(EVENT, text)
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

        ``id_`` identifies the report; backends that store ids keep one copy per id. The
        metric keeps its own copy of ``value``: changing your dict after the call changes
        nothing that was reported.
        """
        check_kind(metric)
        value = own_custom_value(value)
        check_id(id_)
        self._report(name, metric, value, tags, id_)

    def forward(self, metrics: Iterable[Metric]) -> None:
        """Queue metrics built elsewhere, keeping their name, kind, value, tags, id, time and host.

        For workers that take metrics off a queue and deliver them (``kaneda worker``):
        the stored metrics keep what the reporting process gave them. Each metric is
        validated as a reporting call's would be, and the backend's check and the
        filters still apply; default tags are not added (the reporting side did). If
        one is refused, :class:`InvalidMetric` names it and none of them is queued.
        To a queue that assigns ids (:class:`~kaneda_core.worker.QueueBackend`), a metric
        without one is queued with one (see :class:`~kaneda_core.message.IdMaker`).
        """
        check = self.backend.check
        own: list[Metric] = []
        for index, metric in enumerate(metrics):
            try:
                record = _own_forwarded(metric)
                try:
                    check(record)
                except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                    self._check_broke(error)
            except InvalidMetric as error:
                raise InvalidMetric(f"forwarded metric {index}: {error}") from None
            own.append(record)
        new_id = getattr(self.backend, "new_id", None)
        if new_id is not None:  # a queue that assigns ids (QueueBackend)
            from .message import IdMaker, with_ids  # here: json comes with it

            if type(new_id) is IdMaker:
                # Records made elsewhere: their times are not this process's stamps to
                # derive ids from. Given here, once, every send of them carries the same.
                own = with_ids(own, new_id)
        queue = self._queue
        if queue is not None and len(queue) + len(own) <= self._dispatcher.max_buffer:  # type: ignore[union-attr]
            queue.extend(own)  # one step for the lot (a worker forwards thousands at once)
            if len(queue) >= self._mark:
                self._dispatcher.after_append()  # type: ignore[union-attr]
            return
        submit = self._dispatcher.submit
        for record in own:
            submit(record)

    def _report(self, name: str, kind: str, value: Any, tags: Any, id_: Any) -> None:
        if type(name) is not str or not name.isascii() or not name:
            name = check_name(name)
        # Validate and copy the tags in one pass; odd but valid values take the slow path.
        if type(tags) is dict:
            for key, item in tags.items():
                if (
                    not (
                        type(key) is str and type(item) is str and key.isascii() and item.isascii()
                    )
                    or not key
                ):
                    tags = copy_tags(tags)
                    break
            tags = {**self._default_tags, **tags} if self._default_tags else tags.copy()
        else:
            tags = self._own_tags(tags)
        ns = time_ns()
        ns -= ns % SLOTS - stamps.slot
        if ns <= latest[0]:  # the clock went back (see stamps.after_step_back)
            ns = after_step_back(ns)
        else:
            latest[0] = ns
        item = (name, kind, value, tags, None, self._host, id_, ns)
        queue = self._queue
        if queue is None:
            self._submit(item)
            return
        # Appended here, not through a submit function: a call level is a noticeable
        # share of a call. The dispatcher looks at the queue past its mark (a full batch
        # to deliver, or the bound reached).
        check = self._check
        if check is not None:
            # The record itself where the backend takes it (Backend.checks_records).
            try:
                check(item if self._check_records else tuple.__new__(Metric, item))  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                self._check_broke(error)
        queue.append(item)
        if len(queue) >= self._mark:
            self._dispatcher.after_append()  # type: ignore[union-attr]

    def _check_metric(self, name: str, kind: str, value: Any, tags: TagsInput | None) -> None:
        """Refuse, as a call would, a metric this ``Metrics`` would refuse; report nothing.

        The same checks as a reporting call's, the backend's own included (InfluxDB's
        reserved tags, say): raises :class:`InvalidMetric` naming the field and value.
        """
        name = check_name(name)
        own_value(kind, value)
        item = (name, kind, value, self._own_tags(tags), None, self._host, None, time_ns())
        check = self._check
        if check is not None:
            try:
                check(item if self._check_records else tuple.__new__(Metric, item))  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                self._check_broke(error)

    def _check_broke(self, error: Exception) -> None:
        """The backend's check raised ``error``: InvalidMetric goes on to the caller.

        Anything else is a bug of the check's, not the metric's: the call must not raise
        it (a reporting call raises InvalidMetric or nothing). Logged once; the metric
        goes on unchecked, and the backend's send has the last word.
        """
        if isinstance(error, InvalidMetric):
            raise error
        if not self._check_broke_logged:
            import logging

            self._check_broke_logged = True
            logging.getLogger("kaneda").error(
                "Kaneda: %s.check raised %s: %s (a bug of the backend's, not of the "
                "metric's); metrics it fails on are queued unchecked",
                type(self.backend).__name__,
                type(error).__name__,
                error,
                exc_info=error,
            )

    def _own_tags(self, tags: Any) -> Any:
        """The metric's own copy of tags that are not a plain dict (None, a list, a subclass)."""
        return _tags_with_defaults(tags, self._default_tags)

    def _checked(self, submit: Submit) -> Submit:
        """``submit`` preceded by the backend's own check of each metric, at the call."""
        check = self.backend.check
        broke = self._check_broke
        new = tuple.__new__
        if self._check_records:

            def checked_record_submit(item: Item) -> None:
                try:
                    check(item)  # type: ignore[arg-type]  # a record: see Backend.checks_records
                except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                    broke(error)
                submit(item)

            return checked_record_submit

        def checked_submit(item: Item) -> None:
            # The record checked holds the very fields queued and sent. The plain tuple
            # is queued, not the record: the garbage collector stops scanning a tuple of
            # strings and numbers, never a record. Its timestamp is worked out only if
            # the check asks for it.
            try:
                check(new(Metric, item))
            except Exception as error:  # noqa: BLE001 - InvalidMetric raised again
                broke(error)
            submit(item)

        return checked_submit

    # -- timing ------------------------------------------------------------------

    def timed(
        self, name: str | None = None, tags: TagsInput | None = None, use_ms: bool | None = None
    ) -> Timer:
        """Time a function (as a decorator) or a block (as a context manager).

        Reports seconds as a float, or whole milliseconds with ``use_ms=True``. The
        decorator's default name is ``module.function``; ``async def`` functions are
        timed until their coroutine finishes, generators and async generators over
        their iteration (see :mod:`kaneda_core.timed`). The time is reported even if the
        code raises.
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
        dispatcher = self._dispatcher
        dispatcher.settle()  # calls that raced close(): counted before the snapshot
        for _ in range(100):
            # Read again if the worker counted metrics it held meanwhile: a metric is then
            # seen queued or counted, never both nor neither.
            moves = dispatcher.moves()
            snapshot = self._delivery.snapshot()
            snapshot.queued = dispatcher.queued()
            if dispatcher.moves() == moves:
                break
        return snapshot

    def __enter__(self) -> Metrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Bounded as an exit is: without a timeout, a store that is down held the block
        # for as long as the queue's retries took (minutes for a few thousand metrics).
        self.close(self._exit_timeout)

    def __repr__(self) -> str:
        mode = "batching" if isinstance(self._dispatcher, BatchingDispatcher) else "sync"
        return f"<Metrics {type(self.backend).__name__} {mode}>"

    def __reduce__(self) -> Any:
        # Said before pickle reaches a lock: "cannot pickle '_thread.lock' object".
        raise TypeError(
            f"a {type(self).__name__} cannot be pickled (nor copied), so not passed to a "
            "spawn or forkserver multiprocessing child either: it holds this process's "
            "queue, worker and backend connection. Make one in the child, from a URL "
            "(connect(url)) or the settings (Metrics() reads KANEDA_URL); a forked child "
            "may use its parent's"
        )


#: Starts of one timer kept per thread or context, entered and not yet left there.
MAX_OPEN_STARTS = 1024


class Timer:
    """What :meth:`Metrics.timed` returns: a decorator and a context manager."""

    def __init__(
        self, metrics: Metrics, name: str | None, tags: TagsInput | None, use_ms: bool | None
    ) -> None:
        self.metrics = metrics
        self.name = name
        # A copy, checked now: a bad tag raising when the block ends would replace the
        # function's result or its own exception, and a dict changed later would change
        # what is reported.
        self.tags = None if tags is None else copy_tags(tags)
        self.use_ms = bool(use_ms)
        if name is not None:
            self._check(name)
        # Each thread and each asyncio task has its own context: an entry's start is
        # found by its own exit even when one timer is entered by overlapping blocks.
        from contextvars import ContextVar  # imported with the first timer, not kaneda_core

        self._starts: ContextVar[tuple[float, ...]] = ContextVar("kaneda_timer_starts")
        self._overflowed = False  # (told once: see __enter__)

    def _check(self, name: str) -> None:
        """Refuse now what reporting under ``name`` would refuse (the backend's rules too)."""
        self.metrics._check_metric(name, TIMING, 0 if self.use_ms else 0.0, self.tags)

    def report(self, elapsed: float, name: str | None = None) -> None:
        """Report ``elapsed`` seconds under this timer's name (or ``name``)."""
        value: float = round(elapsed * 1000) if self.use_ms else elapsed
        self.metrics.timing(cast(str, name or self.name), value, self.tags)

    @staticmethod
    def _default_name(func: Callable[..., Any]) -> str:
        """``module.function``; a partial's function's; ``module.Class`` for an instance."""
        target: Any = func
        while isinstance(target, functools.partial):
            target = target.func
        name = getattr(target, "__name__", None)
        module = getattr(target, "__module__", None)
        if not isinstance(name, str) or not name:  # an instance with __call__, say
            name = type(target).__qualname__
            module = type(target).__module__
        if not isinstance(module, str) or not module:  # a built-in's method, say
            module = type(target).__module__
        return f"{module}.{name}"

    def __call__(self, func: F) -> F:
        name = self.name or self._default_name(func)
        if self.name is None:
            self._check(name)
        from .timed import timed

        return cast(F, timed(func, self.report, name))

    def __enter__(self) -> Timer:
        if self.name is None:
            raise ConfigurationError("metrics.timed() used as a context manager needs a name")
        starts = self._starts.get(())
        if len(starts) >= MAX_OPEN_STARTS:
            # Entered here and left elsewhere, again and again: each start stays here. No
            # block nests this deep (the recursion limit is 1,000): the oldest is dropped.
            starts = starts[1 - MAX_OPEN_STARTS :]
            if not self._overflowed:
                self._overflowed = True
                import logging

                logging.getLogger("kaneda").warning(
                    "Kaneda: timed(%r) was entered %d times in one thread or context "
                    "without being left there; the oldest starts are forgotten. Enter and "
                    "leave a timer in the same one.",
                    self.name,
                    MAX_OPEN_STARTS,
                )
        self._starts.set((*starts, perf_counter()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = perf_counter()
        entered = self._starts.get(())
        if not entered:
            # Entered in another thread or context (a framework's request-started and
            # request-finished signals may run apart): no start is known here.
            import logging

            logging.getLogger("kaneda").warning(
                "Kaneda: timed(%r) was left where it was not entered (another thread or "
                "context); nothing reported. Enter and leave a timer in the same one.",
                self.name,
            )
            return
        *starts, start = entered
        self._starts.set(tuple(starts))
        self.report(end - start)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


def _own_forwarded(metric: Metric) -> Metric:
    """A metric built elsewhere, validated and with its own copies, its time and host kept."""
    if not isinstance(metric, Metric):
        raise InvalidMetric(f"forward() takes Metric records, got {metric!r}")
    name, kind, value, tags, _when, host, id_, ns = tuple(metric)
    # The usual case passes type checks alone (as a reporting call's does); the rest
    # takes the full checks, which name what is wrong.
    if type(name) is not str or not name.isascii() or not name:
        name = check_name(name)
    if (
        type(kind) is not str  # a list is no kind, nor a key of _NUMERIC_KINDS
        or kind not in _NUMERIC_KINDS
        or type(value) is not int
        or not _MIN_INT < value < MAX_INT
    ):
        check_kind(kind)
        value = own_value(kind, value)
    if id_ is not None and not (type(id_) is str and id_.isascii() and id_):
        check_id(id_)
    if type(host) is not str or not host:
        raise InvalidMetric(f"host must be a non-empty string, got {host!r}")
    if type(tags) is dict:
        for key, item in tags.items():
            plain = type(key) is str and type(item) is str and key.isascii() and item.isascii()
            if not plain or not key:
                tags = copy_tags(tags)  # the full check: it names what is wrong
                break
        else:
            tags = tags.copy()
    else:
        tags = copy_tags(tags)
    if ns is None:
        ns = metric.epoch_ns
    return tuple.__new__(Metric, (name, kind, value, tags, None, host, id_, ns))


def hooks_default_tags(backend: Backend) -> dict[str, Scalar]:
    """The tags the ``kaneda_default_tags`` hooks give metrics sent to ``backend``, merged."""
    get_plugin_manager = plugins.get_plugin_manager  # (imported: see Delivery.__init__)

    merged: dict[str, Scalar] = {}
    # Each hook on its own (first registered first, so later ones win): one that raises,
    # or returns what is not a dict of valid tags, is logged and left out, and never
    # stops the Metrics from being created.
    for hook in get_plugin_manager().hook.kaneda_default_tags.get_hookimpls():
        if hook.hookwrapper or hook.wrapper:
            continue
        try:
            tags = hook.function(**{arg: backend for arg in hook.argnames if arg == "backend"})
            if not tags:
                continue
            if not isinstance(tags, Mapping):
                raise InvalidMetric(f"default tags must be a dict, got {tags!r}")
            tags = copy_tags(dict(tags))  # bad tags fail here, once, not at every call
        except Exception:
            import logging

            logging.getLogger("kaneda").exception(
                "kaneda_default_tags hook of plugin %r failed; its tags are left out",
                hook.plugin_name,
            )
            continue
        merged.update(cast(Mapping[str, Scalar], tags))
    return merged


__all__ = ["Metric", "Metrics", "Timer"]


def _destination(backend: Backend) -> str:
    """``backend.destination()``; a plugin's that fails names the backend's class."""
    try:
        return str(backend.destination())
    except Exception as error:  # noqa: BLE001 - a plugin's bug must not stop Metrics()
        log.warning("Kaneda: %s.destination() raised %r", type(backend).__name__, error)
        return ""


def _tags_with_defaults(tags: Any, defaults: dict[str, Any]) -> Any:
    """A metric's own copy of ``tags`` (None, a list, a dict subclass), defaults first."""
    if tags is None:
        return dict(defaults)
    tags = copy_tags(tags)
    if type(tags) is dict and defaults:
        return {**defaults, **tags}
    return tags
