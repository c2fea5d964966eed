"""Queues: backends that forward batches to a broker, and the workers that deliver them.

A queue plugin provides a :class:`QueueBackend`. Its ``send`` puts each batch on a
broker as one message (the format is :mod:`kaneda_core.message`); its :meth:`serve
<QueueBackend.serve>` takes messages off the broker and hands them to a
:class:`MessageHandler`, which delivers their metrics through a
:class:`~kaneda_core.Metrics` on the target backend (retries, disk buffer, hooks,
stats) and says what to do with each message:

- :attr:`Verdict.STORED`: acknowledge it. The backend has every metric (or, with a
  disk buffer, the buffer has them: it delivers them even after a crash of the worker);
- :attr:`Verdict.RETRY`: put it back. The backend could not take it now;
- :attr:`Verdict.POISON`: move it aside. It can never be delivered (not a Kaneda
  message, a newer format, an invalid metric), and must not block the queue.

``kaneda worker QUEUE_URL --to BACKEND_URL`` runs :func:`run_worker`. The engines' own
workers (``celery worker``, ``rq worker``) find their handler with
:func:`current_handler`. Nothing here imports a broker's client.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from .backend import Backend
from .delivery import BufferFull
from .errors import ConfigurationError, DeliveryError, InvalidMetric
from .forking import reinit_after_fork, track_resettable
from .hookspecs import hookimpl
from .layouts import KANEDA2
from .message import IdMaker, MessageError, decode_batch, legacy_metric, with_ids
from .model import Metric

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("kaneda.worker")

#: The longest a handler waits, after a message it had to put back, before the next.
MAX_RETRY_PAUSE = 5.0
#: Seconds a stopping worker gives the store for what its put-back messages held.
STOPPING_CLOSE_TIMEOUT = 2.0


class Verdict(str, Enum):
    """What a consumer does with a message once its handler is done with it."""

    STORED = "stored"
    RETRY = "retry"
    POISON = "poison"


class Outcome(NamedTuple):
    """A message's verdict, why (for RETRY and POISON), its metrics, and how many were refused.

    ``refused`` counts the metrics of a STORED message that the backend refused for good
    (they went to the ``kaneda_batch_failed`` hook, as on the direct path).
    """

    verdict: Verdict
    reason: str = ""
    metrics: int = 0
    refused: int = 0


class WorkerStats:
    """What a worker did: messages handled, metrics stored or refused, messages put back or aside.

    ``messages``: messages handled. ``stored``: metrics the backend (or the disk buffer)
    took. ``failed``: metrics the backend refused for good (passed to the
    ``kaneda_batch_failed`` hook, as on the direct path). ``requeued``: messages put back
    because the backend could not take them then. ``poison``: messages moved aside.
    """

    __slots__ = ("failed", "messages", "poison", "requeued", "stored")

    def __init__(self) -> None:
        self.messages = 0
        self.stored = 0
        self.failed = 0
        self.requeued = 0
        self.poison = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in sorted(self.__slots__)}

    def __repr__(self) -> str:
        counters = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"WorkerStats({counters})"


class QueueBackend(Backend):
    """A backend that forwards each batch to a broker, as one message, for a worker to deliver.

    Subclasses implement ``send`` (put the batch on the broker with
    :func:`kaneda_core.message.encode_batch`, passing :attr:`new_id`) and :meth:`serve`.

    Delivery through a queue is at least once: a worker killed before it acknowledged
    a message gets it again, and a batch whose answer came late or was lost (the
    worker or broker had it) is sent again. With ``assign_ids`` (the default) every
    metric reported without an ``id_`` travels with one Kaneda makes (see
    :class:`~kaneda_core.message.IdMaker`), the same in every send of its batch, so
    that stores keying by id (MongoDB, Elasticsearch, RethinkDB) keep one copy.
    InfluxDB keys a point by its series and time, so a repeat overwrites itself there;
    ``assign_ids=False`` then saves storing (and checking) an id field per point.
    """

    def __init__(self, assign_ids: bool = True) -> None:
        from .message import IdMaker

        self.assign_ids = assign_ids
        #: Makes ids, unique across processes, for metrics reported without one (or None).
        self.new_id: IdMaker | None = IdMaker() if assign_ids else None

    @classmethod
    def serve(cls, url: str, handler: MessageHandler) -> None:
        """Take messages off the queue ``url`` names and hand them to ``handler``.

        Acknowledge, put back or move aside each message as its :class:`Outcome` says.
        Returns when the process is asked to stop (SIGTERM or SIGINT).
        """
        raise NotImplementedError(f"{cls.__name__} has no worker")

    def after_fork(self) -> None:
        """A forked child makes ids of its own (the parent's counter is the parent's)."""
        from .message import IdMaker

        self.new_id = IdMaker() if self.assign_ids else None


class MessageHandler:
    """Delivers the metrics of queue messages through ``metrics`` and judges each message.

    With ``acknowledge_buffered`` (a ``Metrics`` with a disk buffer), a message is
    STORED once its metrics are on disk; otherwise once the backend has them. Several
    threads may call it at once (a consumer with a thread pool): while one waits for
    the backend, another reads its next message.

    With ``legacy``, kaneda 1.0's messages (:meth:`handle_legacy`) are delivered through
    the ``Metrics`` it returns, made on the first of them, instead of ``metrics``: the
    same store in kaneda 1.0's layout (see :func:`kaneda1_url`). They are counted in
    this handler's :attr:`stats` all the same.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        acknowledge_buffered: bool = False,
        legacy: Callable[[], Metrics] | None = None,
    ) -> None:
        from .plugins import get_plugin_manager

        self.metrics = metrics
        self.acknowledge_buffered = acknowledge_buffered
        self.stats = WorkerStats()
        self._lock = threading.Lock()
        self._legacy_metrics = legacy
        self._legacy: MessageHandler | None = None
        self._legacy_lock = threading.Lock()
        self._retry_pause = 0.0
        self._recorder = _FailureRecorder(metrics.backend)
        track_resettable(self)
        if not acknowledge_buffered:  # with a disk buffer, failures come after the verdict
            get_plugin_manager().register(self._recorder)
        self._closed = False
        self._stopping = threading.Event()

    def stop_waiting(self) -> None:
        """The worker was asked to stop: a message whose delivery has not settled is put
        back now (RETRY) instead of when its retries end, about 30 s into an outage of
        the store, past what ``docker stop`` waits. Its metrics may still reach the
        store before the process exits: stores keep a point sent twice once (InfluxDB's
        same series and time, a document's id)."""
        self._stopping.set()
        if self._legacy is not None:
            self._legacy.stop_waiting()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._legacy_lock = threading.Lock()
        self._stopping = threading.Event()

    def handle(self, message: Any) -> Outcome:
        """Deliver one batch message (its JSON text or document)."""
        return self.handle_many([message])[0]

    def handle_many(self, messages: Sequence[Any]) -> list[Outcome]:
        """Deliver several batch messages together; one outcome per message, in order."""
        groups: list[list[Metric] | Outcome] = []
        for message in messages:
            try:
                groups.append(decode_batch(message))
            except MessageError as error:
                groups.append(Outcome(Verdict.POISON, str(error)))
        return self._deliver(groups)

    def handle_legacy(
        self,
        name: Any,
        metric: Any,
        value: Any,
        tags: Any = None,
        id_: Any = None,
        *,
        origin: str | None = None,
        ns: int | None = None,
    ) -> Outcome:
        """Deliver one kaneda 1.0 message: a single call, stored at the time it arrives.

        ``origin`` (the broker's id of the message) and ``ns`` (a time the broker keeps
        for it): see :func:`~kaneda_core.message.legacy_metric`.
        """
        call = (name, metric, value, tags, id_)
        return self.handle_legacy_many([call], [(origin, ns)])[0]

    def handle_legacy_many(
        self,
        calls: Sequence[Sequence[Any]],
        origins: Sequence[tuple[str | None, int | None]] | None = None,
    ) -> list[Outcome]:
        """Deliver several kaneda 1.0 messages, each ``(name, metric, value, tags, id_)``;
        ``origins`` gives each one's ``(origin, ns)`` (see :meth:`handle_legacy`)."""
        if self._legacy_metrics is not None:
            return self._legacy_handler().handle_legacy_many(calls, origins)
        groups: list[list[Metric] | Outcome] = []
        # kaneda 1.0 gave such a call no id: stored in its layout (or by a backend of the
        # kaneda package's, or a 1.0 BaseBackend) it keeps none, as 1.0's did (an id is a
        # MongoDB _id, a RethinkDB id, a log line's key); in this version's, the broker's.
        keeps_ids = _layout_of(self.metrics.backend) == KANEDA2
        for index, call in enumerate(calls):
            if not 3 <= len(call) <= 5:
                groups.append(
                    Outcome(Verdict.POISON, f"a kaneda 1.0 call has 3 to 5 fields, got {call!r}")
                )
                continue
            origin, ns = origins[index] if origins is not None else (None, None)
            if not keeps_ids:
                origin = None
            groups.append([legacy_metric(*call, origin=origin, ns=ns)])
        return self._deliver(groups)

    def _legacy_handler(self) -> MessageHandler:
        """The handler of kaneda 1.0's messages, made on first use (see ``legacy``)."""
        legacy = self._legacy
        if legacy is not None:
            return legacy
        with self._legacy_lock:
            if self._legacy is None:
                assert self._legacy_metrics is not None
                self._legacy = _LegacyHandler(self, self._legacy_metrics())
                if self._stopping.is_set():
                    self._legacy.stop_waiting()
            return self._legacy

    def reject(self, reason: str) -> Outcome:
        """Count and log a message the consumer could not even read off its transport."""
        outcome = Outcome(Verdict.POISON, reason)
        with self._lock:
            self._count([outcome])
        return outcome

    def close(self, timeout: float | None = None) -> int:
        """Flush and close the ``Metrics``; returns how many metrics were left undelivered.

        After :meth:`stop_waiting`, ``STOPPING_CLOSE_TIMEOUT`` seconds at most (unless
        ``timeout`` says otherwise): what the store has not taken by then belongs to
        messages that were put back, delivered again by the next worker.
        """
        from .plugins import get_plugin_manager

        if self._closed:
            return 0
        self._closed = True
        if timeout is None and self._stopping.is_set():
            timeout = STOPPING_CLOSE_TIMEOUT
        with self._legacy_lock:
            legacy, self._legacy_metrics = self._legacy, None  # none made from now on
        left = self.metrics.close(timeout)
        if legacy is not None:
            left += legacy.close(timeout)
        if get_plugin_manager().is_registered(self._recorder):
            get_plugin_manager().unregister(self._recorder)
        return left

    # -- delivering a round of messages ----------------------------------------------

    def _deliver(self, groups: Sequence[list[Metric] | Outcome]) -> list[Outcome]:
        outcomes, forwarded = self._forward(groups)
        if forwarded and not self.acknowledge_buffered:
            self._wait_and_judge(outcomes, forwarded)
        with self._lock:
            self._count(outcomes)
        self._pause_after(outcomes)
        return outcomes

    def _forward(
        self, groups: Sequence[list[Metric] | Outcome]
    ) -> tuple[list[Outcome], dict[int, list[Metric]]]:
        """Queue each group's metrics; what is poison, or did not fit, is judged at once."""
        outcomes: list[Outcome] = []
        forwarded: dict[int, list[Metric]] = {}
        new_id = getattr(self.metrics.backend, "new_id", None)
        # One round queues at a time, so the drops it sees are its own.
        with self._lock:
            dropped = self.metrics.stats().dropped
            for index, group in enumerate(groups):
                if isinstance(group, Outcome):
                    outcomes.append(group)
                    continue
                if type(new_id) is IdMaker:
                    # Delivered to a queue that assigns ids: given here, not by forward,
                    # so that the metrics its failures name are this group's (see _key).
                    group = with_ids(group, new_id)
                refused: list[Metric] = []
                try:
                    self.metrics.forward(group)
                except InvalidMetric as error:
                    # The store's check refuses what the producer's backend (a queue)
                    # took. One metric must not hold the others back: they are stored,
                    # it fails as a metric the store refuses does on the direct path. A
                    # message of nothing but such metrics is poison, kept aside.
                    refused, reason = self._forward_valid(group)
                    if len(refused) == len(group):
                        outcomes.append(Outcome(Verdict.POISON, str(error), len(group)))
                        continue
                except Exception as error:  # noqa: BLE001 - input no check foresaw: its message's
                    reason = f"the worker could not read it: {error!r}"[:300]
                    outcomes.append(Outcome(Verdict.POISON, reason, len(group)))
                    continue
                now_dropped = self.metrics.stats().dropped
                if now_dropped > dropped:
                    dropped = now_dropped
                    outcomes.append(
                        Outcome(Verdict.RETRY, "the worker's buffer was full", len(group))
                    )
                    continue
                if refused:
                    gone = {id(metric) for metric in refused}
                    forwarded[index] = [m for m in group if id(m) not in gone]
                    outcomes.append(Outcome(Verdict.STORED, reason, len(group), len(refused)))
                    continue
                forwarded[index] = group
                outcomes.append(Outcome(Verdict.STORED, "", len(group)))
        return outcomes, forwarded

    def _forward_valid(self, group: list[Metric]) -> tuple[list[Metric], str]:
        """Forward the metrics of ``group`` the backend takes; fail the others for good.

        Returns those refused, and why (the first reason).
        """
        refused: list[Metric] = []
        reasons: list[str] = []
        for metric in group:
            try:
                self.metrics.forward([metric])
            except InvalidMetric as error:
                refused.append(metric)
                reasons.append(str(error).removeprefix("forwarded metric 0: "))
        if len(refused) < len(group):
            refusal = InvalidMetric(f"refused at the worker: {reasons[0]}")
            self.metrics._delivery.fail(refused, refusal)  # counted, logged, hooked
            # Heard by this handler's recorder too: not this round's to judge again.
            self._recorder.take(dict.fromkeys(_key(metric) for metric in refused))
        return refused, f"{len(refused)} metrics refused by the backend: {reasons[0]}"

    def _wait_and_judge(self, outcomes: list[Outcome], forwarded: dict[int, list[Metric]]) -> None:
        """Wait until the backend settled the round, then judge it by what failed."""
        # flush() returns once the queue was empty: this round's metrics, queued before,
        # are settled then (stored, refused or given up on), whatever came in since.
        reason = "delivery did not finish"
        for _ in range(3):
            if not self.metrics._dispatcher.flush(None, stop=self._stopping):
                break
            if self._stopping.is_set():
                reason = "the worker is stopping before the store took them"
                break
        else:
            self._put_back(outcomes, forwarded, reason)
            return
        if reason != "delivery did not finish":
            self._put_back(outcomes, forwarded, reason)
            return
        if not self._recorder.pending():
            return  # the usual case: nothing failed
        owners: dict[tuple[Any, ...], list[int]] = {}
        for index, group in forwarded.items():
            for metric in group:
                owners.setdefault(_key(metric), []).append(index)
        for key, transient, reason in self._recorder.take(owners):
            for index in owners[key]:
                outcome = outcomes[index]
                if transient:
                    outcomes[index] = outcome._replace(verdict=Verdict.RETRY, reason=reason)
                elif outcome.verdict is Verdict.STORED:
                    outcomes[index] = outcome._replace(
                        reason=f"refused by the backend: {reason}", refused=outcome.refused + 1
                    )

    @staticmethod
    def _put_back(outcomes: list[Outcome], forwarded: dict[int, list[Metric]], reason: str) -> None:
        for index in forwarded:
            outcomes[index] = outcomes[index]._replace(verdict=Verdict.RETRY, reason=reason)

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        stats = self.stats
        for outcome in outcomes:
            stats.messages += 1
            if outcome.verdict is Verdict.STORED:
                stats.stored += outcome.metrics - outcome.refused
                stats.failed += outcome.refused
            elif outcome.verdict is Verdict.RETRY:
                stats.requeued += 1
                log.warning("Kaneda worker: message put back: %s", outcome.reason)
            else:
                stats.poison += 1
                log.error("Kaneda worker: message moved aside: %s", outcome.reason)

    def _pause_after(self, outcomes: Sequence[Outcome]) -> None:
        """Wait a little, longer each time, after putting messages back: no busy loop."""
        if self._stopping.is_set():
            time.sleep(0.1)  # stopping: no longer waits, but a broker redelivering to a
            return  # consumer not yet gone does not spin either
        if any(outcome.verdict is Verdict.RETRY for outcome in outcomes):
            self._retry_pause = min(MAX_RETRY_PAUSE, max(0.1, self._retry_pause * 2))
            time.sleep(self._retry_pause)
        else:
            self._retry_pause = 0.0


class _LegacyHandler(MessageHandler):
    """Delivers an owner handler's kaneda 1.0 messages through a ``Metrics`` of their own,
    and counts them in the owner's stats."""

    def __init__(self, owner: MessageHandler, metrics: Metrics) -> None:
        super().__init__(metrics, acknowledge_buffered=owner.acknowledge_buffered)
        self._owner = owner
        self.stats = owner.stats

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        with self._owner._lock:  # the owner's counters, under the owner's lock
            self._owner._count(outcomes)


def _layout_of(backend: object) -> str | None:
    """The name of the layout ``backend`` stores in, if it has one."""
    layout = getattr(backend, "layout", None)
    return layout if isinstance(layout, str) else getattr(layout, "name", None)


def kaneda1_url(url: str) -> str | None:
    """``url`` with ``layout=kaneda1``, for kaneda 1.0's messages, or None to keep ``url``.

    kaneda 1.0's workers stored its messages in kaneda 1.0's layout, and the ``kaneda``
    package's backends still do: a worker given a store's URL stores them in that
    layout too, unless the URL names a layout itself (``?layout=kaneda2``), so that a
    database written by kaneda 1.0 keeps one layout whatever worker delivers into it.
    None when the URL names a layout, or its backend has no ``layout`` option (a queue,
    ``memory://``), or its default layout is kaneda 1.0's already.
    """
    import inspect
    from urllib.parse import parse_qsl, urlsplit

    from .config import backend_name
    from .layouts import KANEDA1
    from .registry import load_backend

    try:
        query = urlsplit(url.strip()).query
        if any(key == "layout" for key, _ in parse_qsl(query, keep_blank_values=True)):
            return None
        parameter = inspect.signature(load_backend(backend_name(url))).parameters.get("layout")
    except Exception:  # noqa: BLE001 - a URL the worker cannot use: its own error says why
        return None
    if parameter is None or parameter.default == KANEDA1:
        return None
    base, mark, fragment = url.strip().partition("#")
    return f"{base}{'&' if '?' in base else '?'}layout={KANEDA1}{mark}{fragment}"


def _key(metric: Metric) -> tuple[Any, ...]:
    key = (metric.id, metric.epoch_ns, metric.name, metric.kind)
    try:
        hash(key)
    except TypeError:  # a refused metric's name, kind or id may be a JSON list or object
        return tuple(map(repr, key))
    return key


class _FailureRecorder:
    """A hook plugin that notes which metrics of one backend failed for good, and why."""

    #: Failures kept for rounds to claim; past this many, the oldest are forgotten.
    LIMIT = 100_000

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._failures: dict[tuple[Any, ...], tuple[bool, str]] = {}
        track_resettable(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @hookimpl
    def kaneda_batch_failed(
        self, metrics: Sequence[Metric], error: BaseException, backend: Backend
    ) -> None:
        if backend is not self.backend:
            return
        if isinstance(error, BufferFull):
            transient = True
        elif isinstance(error, DeliveryError):
            transient = error.retryable
        else:
            transient = backend.is_retryable(error)
        rejected = {_key(metric) for metric in getattr(error, "rejected", ())}
        reason = backend.redact(f"{type(error).__name__}: {error}")
        with self._lock:
            if len(self._failures) > self.LIMIT:
                self._failures.clear()
            for metric in metrics:
                key = _key(metric)
                self._failures[key] = (transient and key not in rejected, reason)

    def pending(self) -> int:
        """How many failures wait to be claimed."""
        return len(self._failures)

    def take(
        self, keys: Mapping[tuple[Any, ...], object]
    ) -> list[tuple[tuple[Any, ...], bool, str]]:
        """The failures of the metrics ``keys`` names, forgotten here once taken."""
        with self._lock:
            found = [key for key in keys if key in self._failures]
            return [(key, *self._failures.pop(key)) for key in found]


# -- the handler of this process ------------------------------------------------------

_installed: tuple[int, MessageHandler] | None = None
_install_lock = threading.Lock()


@reinit_after_fork
def _new_lock_in_child() -> None:
    # A thread of the parent may have been making its handler at the fork (a pre-fork
    # pool then makes one per child).
    global _install_lock
    _install_lock = threading.Lock()


def install_handler(handler: MessageHandler | None) -> None:
    """Make ``handler`` the one :func:`current_handler` returns in this process."""
    global _installed
    _installed = None if handler is None else (os.getpid(), handler)


def current_handler(backend: Callable[[], Backend] | None = None) -> MessageHandler:
    """The handler this process's jobs deliver through.

    The one ``kaneda worker`` installed; otherwise (an engine's own worker) one made on
    first use from ``backend()``, or from ``KANEDA_URL`` or the settings module, and kept
    for this process (a forked child makes its own). With ``KANEDA_URL``, kaneda 1.0's
    messages go to its store in kaneda 1.0's layout (see :func:`kaneda1_url`).
    """
    installed = _installed
    if installed is not None and installed[0] == os.getpid():
        return installed[1]
    with _install_lock:
        installed = _installed
        if installed is None or installed[0] != os.getpid():
            from .config import URL_VARIABLE
            from .metrics import Metrics

            metrics = Metrics(backend() if backend is not None else None)
            # KANEDA_URL names the store: kaneda 1.0's messages in kaneda 1.0's layout.
            url = os.environ.get(URL_VARIABLE, "").strip()
            legacy_url = kaneda1_url(url) if "://" in url else None
            legacy = None if legacy_url is None else functools.partial(Metrics, legacy_url)
            install_handler(MessageHandler(metrics, legacy=legacy))
            installed = _installed
        assert installed is not None
        return installed[1]


def load_queue_backend(url: str) -> type[QueueBackend]:
    """The queue backend class ``url``'s scheme names; a clear error if it is not a queue."""
    from .config import backend_name
    from .redact import redact_url
    from .registry import load_backend

    cls = load_backend(backend_name(url))
    if not issubclass(cls, QueueBackend):
        raise ConfigurationError(
            f"{redact_url(url)} names the backend {cls.__name__}, which stores metrics "
            "rather than queueing them: give the queue to read from "
            "(rq://, celery+redis://, celery+amqp://, zmq+tcp://) and the store with --to"
        )
    return cls


def _same_place(queue_url: str, to: str) -> bool:
    """Whether ``to`` names the very queue ``queue_url`` does (scheme, address, options)."""
    from urllib.parse import parse_qsl, urlsplit

    def place(url: str) -> tuple[object, ...]:
        parts = urlsplit(url.strip())
        query = sorted(parse_qsl(parts.query, keep_blank_values=True))
        return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port,
                parts.path.rstrip("/"), tuple(query))  # fmt: skip

    try:
        return place(queue_url) == place(to)
    except ValueError:  # a URL that does not parse: the loading says what is wrong
        return False


#: Seconds a worker asked to stop has to do so before it exits without waiting any
#: longer: an engine's stop talks to its broker (RQ's writes to Redis, Celery's cancels
#: its consumers), and a broker that does not answer (frozen, or a network that drops
#: packets) held it for ever. A message not finished comes back as after a kill.
STOP_GRACE = 15.0

_stop_watch: threading.Thread | None = None
#: Set once the engine's worker returned: the final delivery is not the stop's to bound.
_stopped = threading.Event()
#: Set while run_worker serves a queue (``kaneda worker``).
_serving = threading.Event()


def exit_unless_stopped_within(seconds: float, broker: str) -> None:
    """End the process in ``seconds`` unless the worker stopped by then; for an engine's
    stop (SIGTERM), which may wait on ``broker``. The first ask counts."""
    global _stop_watch
    if _stop_watch is not None or not _serving.is_set():
        return  # an engine's own command (rq worker, celery worker): its own stop

    def watch() -> None:
        if _stopped.wait(seconds):
            return
        log.error(
            "Kaneda worker: asked to stop %.0f s ago and %s still holds it (it does not "
            "answer); exiting without it. A message not finished comes back to the queue "
            "as after a kill",
            seconds,
            broker,
        )
        logging.shutdown()
        os._exit(1)

    _stop_watch = threading.Thread(target=watch, name="kaneda-worker-stop", daemon=True)
    try:
        _stop_watch.start()
    except RuntimeError:  # no thread to be had: the engine's stop as it is
        _stop_watch = None


def _legacy_metrics(to: str, metrics_options: dict[str, Any]) -> Callable[[], Metrics] | None:
    """What makes the ``Metrics`` a worker delivers kaneda 1.0's messages through, if not
    its own: ``to`` in kaneda 1.0's layout (see :func:`kaneda1_url`), with a disk buffer
    of its own beside the worker's (``worker-kaneda1.sqlite`` for ``worker.sqlite``)."""
    from .config import create_backend
    from .metrics import Metrics

    url = kaneda1_url(to)
    if url is None:
        return None
    options = dict(metrics_options)
    if options.get("buffer_path") is not None:
        root, extension = os.path.splitext(os.fspath(options["buffer_path"]))
        options["buffer_path"] = f"{root}-kaneda1{extension}"

    def make() -> Metrics:
        log.info("Kaneda worker: kaneda 1.0's messages are stored in kaneda 1.0's layout")
        return Metrics(create_backend(url), **options)

    return make


def run_worker(queue_url: str, to: str, **metrics_options: Any) -> WorkerStats:
    """Deliver what arrives on ``queue_url`` to the backend ``to`` until SIGTERM or SIGINT.

    ``metrics_options`` are :class:`~kaneda_core.Metrics` options for the delivering
    side (``batch_size``, ``buffer_path``, ``retry`` ...). Returns the worker's stats.
    """
    from .config import create_backend
    from .metrics import Metrics
    from .redact import redact_url

    queue = load_queue_backend(queue_url)
    if _same_place(queue_url, to):
        raise ConfigurationError(
            f"kaneda worker would deliver {redact_url(queue_url)} into itself: each message "
            "would come back for ever. Give --to the store the metrics go to, e.g. "
            "--to influxdb://localhost:8086/metrics"
        )
    # A full buffer must refuse what arrives (its message is put back), never drop
    # metrics of messages already acknowledged.
    metrics_options.setdefault("overflow", "drop_newest")
    metrics = Metrics(create_backend(to), **metrics_options)
    handler = MessageHandler(
        metrics,
        acknowledge_buffered=metrics_options.get("buffer_path") is not None,
        legacy=_legacy_metrics(to, metrics_options),
    )
    install_handler(handler)
    log.info(
        "Kaneda worker: delivering %s to %s", redact_url(queue_url), metrics.backend.redact(to)
    )
    _serving.set()
    try:
        queue.serve(queue_url, handler)
    finally:
        _stopped.set()
        left = handler.close()
        install_handler(None)
        if left and handler._stopping.is_set():
            log.warning(
                "Kaneda worker: %d metrics not delivered before the stop; their messages "
                "were put back, for the next worker to deliver",
                left,
            )
        elif left:
            log.error("Kaneda worker: %d metrics not delivered at exit", left)
        log.info("Kaneda worker: stopped; %s", handler.stats)
    return handler.stats
