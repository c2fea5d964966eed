"""The message a queue carries: one batch of metrics as a versioned JSON document.

Producers (the queue backends) and consumers (``kaneda worker`` and the engines' own
workers) share this module, so the format lives in one place::

    {"kaneda": 1, "metrics": [[name, kind, value, tags, id, time_ns, host], ...]}

Each metric keeps its name, kind, value, tags, id, the time of the reporting call in
nanoseconds since the epoch, and the host that reported it. A transport that speaks
JSON itself (Celery) carries the document as its task argument; the others carry
:func:`encode_batch`'s text. kaneda 1.0 sent one call per message
(``name, metric, value, tags, id_``) without time or host: :func:`legacy_metric`
reads those.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import KanedaError
from .model import Metric, epoch_us, host_name, now_ns, timestamp_from_ns

#: The format version this module writes, and the newest it reads.
VERSION = 1
#: The key that marks a document as a Kaneda batch and holds its version.
MARKER = "kaneda"
#: Times a message may carry: nanoseconds since the epoch in 64 bits, as stores keep them.
MAX_NS = 2**63


class MessageError(KanedaError, ValueError):
    """A message is not a Kaneda batch this version can read (a poison message)."""


class IdMaker:
    """Makes ids, unique across processes, for metrics reported without one.

    A message may be delivered twice (a worker killed before it acknowledged), and a
    producer may send a batch again that a worker or broker did take (its answer came
    late, or was lost with the connection): stores that key by id then keep one copy,
    as long as each copy carries the same ids. So the id of a metric Kaneda queued
    depends on the metric, not on how often its batch is encoded:

    - a metric with no ``timestamp`` and this host's name, as this process's reporting
      calls and aggregated points queue them, gets ``TOKEN-TIME_NS``: no two of those
      share a ``time_ns`` (see :mod:`kaneda_core.stamps`);
    - any other (a record built with a timestamp, another host's) gets ``TOKEN-cN``, N
      counting from 1, a new one each time. Records made elsewhere reach a queue through
      :meth:`kaneda_core.Metrics.forward`, which gives them theirs as it queues them
      (:func:`with_ids`), so that they too keep it when sent again. Give records handed
      to a queue's ``send`` directly ids of their own the same way when their times
      may repeat.

    ``TOKEN`` is random, of this maker. Make one per process: a forked child that used
    its parent's maker would repeat the parent's ids (its own times differ, but its
    counter does not).
    """

    __slots__ = ("_count", "token")

    def __init__(self) -> None:
        import itertools
        import uuid

        self.token = uuid.uuid4().hex[:16]
        self._count = itertools.count(1)

    def __call__(self) -> str:
        """A new id, never given before by this maker."""
        return f"{self.token}-c{next(self._count)}"

    def id_of(self, metric: Metric) -> str:
        """The id :func:`batch_document` gives ``metric`` (reported without one).

        ``TOKEN-TIME_NS`` for a metric with no ``timestamp`` and this host's name (what
        this process's calls and aggregated points queue), the same each time; else a
        new ``TOKEN-cN``.
        """
        when, host, ns = metric[4], metric[5], metric[7]
        if when is None and host == host_name() and ns is not None:
            return f"{self.token}-{ns}"
        return self()


def with_ids(metrics: Sequence[Metric], new_id: IdMaker) -> list[Metric]:
    """``metrics``, those without an id given a new one (``TOKEN-cN``) for good.

    For records made elsewhere (:meth:`kaneda_core.Metrics.forward`): their times are
    not this process's to derive an id from, and the id they are queued with is the one
    every later send of them carries.
    """
    new = tuple.__new__
    return [
        metric if metric[6] is not None else new(type(metric), (*metric[:6], new_id(), *metric[7:]))
        for metric in metrics
    ]


def batch_document(
    batch: Sequence[Metric], new_id: Callable[[], str | int] | None = None
) -> dict[str, Any]:
    """``batch`` as a JSON-ready document (for transports that encode JSON themselves).

    With ``new_id``, metrics without an id get one: from an :class:`IdMaker`, the same
    each time the batch is encoded (see there); from any other callable, ``new_id()``.
    """
    # Unpacked, not read by attribute: this runs for every metric a queue carries.
    rows: list[list[Any]] = []
    append = rows.append
    if type(new_id) is IdMaker:
        token, here = new_id.token, host_name()
        for name, kind, value, tags, when, host, id_, ns in batch:
            if ns is None and when is not None:  # a record made from a datetime alone
                ns = epoch_us(when) * 1000
                if id_ is None:
                    id_ = new_id()
            elif id_ is None:
                # IdMaker.id_of, inline (a call per metric would be a noticeable share)
                if when is None and host == here and ns is not None:
                    id_ = f"{token}-{ns}"
                else:
                    id_ = new_id()
            append([name, kind, value, tags, id_, ns, host])
        return {MARKER: VERSION, "metrics": rows}
    for name, kind, value, tags, when, host, id_, ns in batch:
        if id_ is None and new_id is not None:
            id_ = new_id()
        if ns is None and when is not None:  # a record made from a datetime alone
            ns = epoch_us(when) * 1000
        append([name, kind, value, tags, id_, ns, host])
    return {MARKER: VERSION, "metrics": rows}


def encode_batch(batch: Sequence[Metric], new_id: Callable[[], str | int] | None = None) -> str:
    """``batch`` as the JSON text of one message (ids from ``new_id`` where missing)."""
    return json.dumps(batch_document(batch, new_id), ensure_ascii=False, separators=(",", ":"))


def decode_batch(message: str | bytes | Mapping[str, Any]) -> list[Metric]:
    """The metrics of one message (its JSON text, or the document itself).

    Checks the document's shape and the type of every field; values are checked by
    :meth:`kaneda_core.Metrics.forward`, which every consumer goes through. Raises
    :class:`MessageError` naming what is wrong.
    """
    document: Any = message
    if isinstance(message, (str, bytes, bytearray)):
        try:
            document = json.loads(message)
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
            raise MessageError(f"message is not JSON: {error}: {_excerpt(message)}") from None
    if not isinstance(document, Mapping) or MARKER not in document:
        raise MessageError(
            f"message is not a Kaneda batch (no {MARKER!r} key): {_excerpt(document)}"
        )
    version = document[MARKER]
    if type(version) is not int or version < 1:
        raise MessageError(f"message has a bad format version {version!r}")
    if version > VERSION:
        raise MessageError(
            f"message has format version {version}, newer than this worker reads "
            f"({VERSION}): upgrade kaneda-core where the worker runs"
        )
    rows = document.get("metrics")
    if not isinstance(rows, list):
        raise MessageError(f"message field 'metrics' must be a list, got {_excerpt(rows)}")
    new = tuple.__new__
    metrics: list[Metric] = []
    append = metrics.append
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != 7:
            raise MessageError(
                f"metrics[{index}] must be a list of 7 fields "
                f"(name, kind, value, tags, id, time_ns, host), got {_excerpt(row)}"
            )
        name, kind, value, tags, id_, ns, host = row
        if type(ns) is not int or type(host) is not str or not 0 <= ns < MAX_NS:
            _refuse_time_or_host(index, ns, host)
        # The timestamp is worked out from time_ns when asked (see Metric).
        append(new(Metric, (name, kind, value, tags, None, host, id_, ns)))
    return metrics


def _refuse_time_or_host(index: int, ns: object, host: object) -> None:
    if type(ns) is not int:
        raise MessageError(f"metrics[{index}] time_ns must be an integer, got {ns!r}")
    if type(host) is not str:
        raise MessageError(f"metrics[{index}] host must be a string, got {host!r}")
    raise MessageError(
        f"metrics[{index}] time_ns is out of range (0 to 2**63 - 1 nanoseconds since the "
        f"epoch): {ns!r}"
    )


def legacy_metric(
    name: Any,
    metric: Any,
    value: Any,
    tags: Any = None,
    id_: Any = None,
    *,
    ns: int | None = None,
    origin: str | None = None,
) -> Metric:
    """The metric of a kaneda 1.0 message (one call, without time or host).

    kaneda 1.0's workers stored such a call at the time they received it, under their
    own host name: so does this, unless the broker keeps a time for the message, given
    as ``ns`` (nanoseconds since the epoch). ``origin``, the broker's id of the message
    (the same each time it is delivered), makes the id of a call given without one,
    ``ORIGIN-0`` (the call's index in its message), so that stores keying by id keep
    one copy of a message delivered twice.
    """
    if ns is None:
        ns = now_ns()
    if tags is None:
        tags = {}
    if id_ is None and origin is not None:
        id_ = f"{origin}-0"
    return Metric(name, metric, value, tags, timestamp_from_ns(ns), host_name(), id_, ns)


def _excerpt(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
