"""The metric record and its validation.

A :class:`Metric` is built once per call and never changed. Validation lives here so
every path (batched or not, any backend) refuses the same input with the same message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InvalidMetric

if TYPE_CHECKING:
    from datetime import datetime

#: The kinds the :class:`~kaneda_core.Metrics` methods report; ``custom`` adds its own.
GAUGE, COUNTER, TIMING, EVENT = "gauge", "counter", "timing", "event"
BUILTIN_KINDS = frozenset((GAUGE, COUNTER, TIMING, EVENT))

Scalar = str | int | float | bool
#: Tags as a metric holds them: its own dict, or its own list.
Tags = dict[str, Scalar] | list[str]
#: Tags as a caller may give them.
TagsInput = Mapping[str, Scalar] | Sequence[str]

_MAX_DEPTH = 32
#: Integers are stored as numbers; beyond a double's range no store can hold one.
MAX_INT = 2**1023
_host: str | None = None


class _Fields(NamedTuple):
    name: str
    kind: str
    value: Any
    tags: Tags
    timestamp: datetime | None
    host: str
    id: str | int | None = None
    time_ns: int | None = None


class Metric(_Fields):
    """One reported measurement or event.

    ``kind`` is ``gauge``, ``counter``, ``timing``, ``event`` or the ``metric`` name of
    a custom report. ``tags`` is a dict of scalars (or, for backends that accept one, a
    list of strings); it is ``{}`` when none were given. ``timestamp`` is when the call
    was made, in UTC, to the microsecond; ``time_ns`` is the same instant in nanoseconds
    since the epoch, for stores that keep them (None when the metric was built from a
    datetime alone; :attr:`epoch_ns` always answers). ``host`` is this machine's name.
    ``id`` is the caller's ``id_`` (or one Kaneda assigned), which backends that store
    ids use to de-duplicate.

    The metrics the delivery worker makes hold ``time_ns`` only, and work out
    ``timestamp`` when it is asked for: a datetime per metric costs more than the rest
    of the record, and stores that keep nanoseconds never ask.
    """

    __slots__ = ()

    @property
    def timestamp(self) -> datetime:
        """When the call was made, in UTC, to the microsecond."""
        stored: datetime | None = tuple.__getitem__(self, 4)
        if stored is not None:
            return stored
        return timestamp_from_ns(tuple.__getitem__(self, 7))

    @property
    def epoch_ns(self) -> int:
        """Nanoseconds since the epoch: ``time_ns``, or the timestamp's microseconds."""
        if self.time_ns is not None:
            return self.time_ns
        return epoch_us(self.timestamp) * 1000

    def _fields_with_time(self) -> tuple[Any, ...]:
        return (*self[:4], self.timestamp, *self[5:])

    def __eq__(self, other: object) -> bool:
        # A timestamp worked out from time_ns equals the same timestamp given as such.
        if isinstance(other, Metric):
            return self._fields_with_time() == other._fields_with_time()
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._fields_with_time())

    def _asdict(self) -> dict[str, Any]:
        fields = super()._asdict()
        fields["timestamp"] = self.timestamp
        return fields

    def __repr__(self) -> str:
        return "Metric(" + ", ".join(f"{k}={v!r}" for k, v in self._asdict().items()) + ")"

    @classmethod
    def create(
        cls,
        name: str,
        kind: str,
        value: Any,
        tags: TagsInput | None = None,
        id: str | int | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> Metric:
        """Validate the arguments and build a metric stamped now (or at ``timestamp``)."""
        name = check_name(name)
        check_kind(kind)
        value = own_value(kind, value)
        check_id(id)
        if timestamp is None:
            ns = now_ns()
            timestamp = timestamp_from_ns(ns)
        elif timestamp.tzinfo is None:
            raise InvalidMetric(f"timestamp must be timezone-aware (UTC), got {timestamp!r}")
        else:
            ns = epoch_us(timestamp) * 1000
        return cls(name, kind, value, copy_tags(tags), timestamp, host_name(), id, ns)


def as_metric(record: Sequence[Any]) -> Metric:
    """A queued record (a plain tuple of a :class:`Metric`'s eight fields, in order) as a Metric.

    A Metric is returned as it is. For backends that take records (``checks_records``,
    ``sends_records``) and read a field by name on a path that is not the hottest.
    """
    return record if type(record) is Metric else tuple.__new__(Metric, record)


def record(metric: Metric) -> dict[str, Any]:
    """The metric as a document, the shape document stores and the logger share.

    ``timestamp`` (the datetime), ``metric`` (the kind), ``name``, ``value``, ``tags``
    and ``host``; each backend adds the id under its store's own key.
    """
    return {
        "timestamp": metric.timestamp,
        "metric": metric.kind,
        "name": metric.name,
        "value": metric.value,
        "tags": metric.tags,
        "host": metric.host,
    }


def now_ns() -> int:
    """The current time in nanoseconds since the epoch (the clock every metric uses)."""
    from .stamps import time_ns

    return time_ns()


def timestamp_from_ns(ns: int) -> datetime:
    """A UTC datetime for ``ns`` nanoseconds since the epoch, truncated to microseconds.

    Through a float for speed, yet exact: a double holds whole microseconds since the
    epoch exactly, and ``fromtimestamp`` rounds the quotient back to that microsecond.
    """
    from datetime import datetime, timezone  # imported when first needed: see epoch_us

    return datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc)


def epoch_us(timestamp: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    # datetime is imported here, not with the module: import kaneda_core stays cheap.
    from datetime import datetime, timedelta, timezone

    return (timestamp - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def host_name() -> str:
    """This machine's host name, asked of the OS once per process."""
    global _host
    if _host is None:
        import socket

        _host = socket.gethostname()
    return _host


def check_name(name: object, field: str = "name") -> str:
    """Refuse a name that is not a non-empty string every store can encode; the name as a
    plain string (see :func:`plain`)."""
    if not isinstance(name, str) or not name:
        raise InvalidMetric(f"{field} must be a non-empty string, got {name!r}")
    check_text(name, field)
    return plain(name)


def plain(text: str) -> str:
    """``text`` as a plain ``str``: what a ``str`` subclass holds, not what its ``__str__``
    says (``str()`` of a ``(str, Enum)`` member is ``'Cls.MEMBER'``, not its value)."""
    return text if type(text) is str else str.__str__(text)


def check_text(text: str, field: str) -> None:
    """Refuse a string that cannot be written as UTF-8 (it holds a lone surrogate)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidMetric(
            f"{field} {_shorten(text)!r} holds {text[error.start : error.end]!r} at position "
            f"{error.start}, a lone surrogate that no store can encode as UTF-8: decode the "
            "text it came from with errors='replace'"
        ) from None


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_kind(kind: object) -> None:
    """Refuse a metric kind that is not a non-empty string."""
    check_name(kind, "metric")


def check_id(id: object) -> None:
    """Refuse an ``id_`` that is neither None, a non-empty string nor an integer."""
    if id is None:
        return
    if type(id) is str and id:
        check_text(id, "id_")
        return
    if type(id) is int and -MAX_INT < id < MAX_INT:
        return
    raise InvalidMetric(f"id_ must be a non-empty string or an integer, got {_shorten(repr(id))}")


def check_number(value: object, field: str = "value") -> None:
    """Refuse anything but a finite int or float (bool is not a number here)."""
    kind = type(value)
    if kind is int:
        if -MAX_INT < value < MAX_INT:  # type: ignore[operator]
            return
        raise InvalidMetric(
            f"{field} must be a number a float can hold (|value| < 2**1023), got an integer "
            f"of {value.bit_length()} bits"  # type: ignore[attr-defined]
        )
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return
        raise InvalidMetric(f"{field} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        check_number(int(value), field)
        return
    if isinstance(value, float):
        check_number(float(value), field)
        return
    raise InvalidMetric(f"{field} must be a number (int or float), got {_shorten(repr(value))}")


def check_value(kind: str, value: object) -> None:
    """Refuse a value that the metric's kind cannot carry."""
    own_value(kind, value)


def own_value(kind: str, value: Any) -> Any:
    """``value`` checked for the metric's kind, as the metric's own copy.

    A custom dict or list is copied: the caller may change or reuse its own after the
    call, and what was checked is what is sent.
    """
    if kind in (GAUGE, COUNTER, TIMING):
        check_number(value)
        return value
    if kind == EVENT:
        if not isinstance(value, str):
            raise InvalidMetric(
                f"value of an event must be a string (its text), got {_shorten(repr(value))}"
            )
        check_text(value, "text")
        return plain(value)
    return own_custom_value(value)


def check_custom_value(value: object, field: str = "value", depth: int = 0) -> None:
    """Refuse a custom value that is not JSON-like: scalars, lists and str-keyed dicts."""
    own_custom_value(value, field, depth)


def own_custom_value(value: Any, field: str = "value", depth: int = 0) -> Any:
    """A checked deep copy of a custom value: scalars, lists and str-keyed dicts of them."""
    if depth > _MAX_DEPTH:
        raise InvalidMetric(f"{field} is nested more than {_MAX_DEPTH} levels deep")
    kind = type(value)
    if kind is bool:
        return value
    if isinstance(value, str):
        check_text(value, field)
        return plain(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, field)
        return value
    if isinstance(value, dict):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise InvalidMetric(f"{field} keys must be non-empty strings, got {key!r}")
            check_text(key, f"{field} key")
            copy[plain(key)] = own_custom_value(item, f"{field}[{key!r}]", depth + 1)
        return copy
    if isinstance(value, (list, tuple)):
        items = [
            own_custom_value(item, f"{field}[{index}]", depth + 1)
            for index, item in enumerate(value)
        ]
        return tuple(items) if isinstance(value, tuple) else items
    raise InvalidMetric(
        f"{field} must be a number, a string, a bool, a list or a dict of those, "
        f"got {_shorten(repr(value))}"
    )


def check_tags(tags: object) -> None:
    """Refuse tags that are neither a dict of scalars nor a list of strings."""
    if tags is None:
        return
    if isinstance(tags, dict):
        for key, item in tags.items():
            if not isinstance(key, str) or not key:
                raise InvalidMetric(f"tag keys must be non-empty strings, got {key!r}")
            check_text(key, "tag key")
            if isinstance(item, str):
                check_text(item, f"tags[{key!r}]")
                continue
            if isinstance(item, bool):
                continue
            if isinstance(item, (int, float)):
                check_number(item, f"tags[{key!r}]")
                continue
            raise InvalidMetric(
                f"tags[{key!r}] must be a string, number or bool, got {_shorten(repr(item))}"
            )
    elif isinstance(tags, (list, tuple)):
        for item in tags:
            if not isinstance(item, str) or not item:
                raise InvalidMetric(
                    f"tags given as a list must hold non-empty strings, got {item!r}"
                )
            check_text(item, "tag")
    else:
        raise InvalidMetric(
            f"tags must be a dict of scalars or a list of strings, got {_shorten(repr(tags))}"
        )


def copy_tags(tags: object) -> Tags:
    """Validate ``tags`` and return the metric's own copy ({} when none were given)."""
    check_tags(tags)
    if tags is None:
        return {}
    if isinstance(tags, dict):
        # str subclasses become plain strings: what was checked is what is sent.
        return {plain(k): (plain(v) if isinstance(v, str) else v) for k, v in tags.items()}
    return [plain(t) for t in tags]  # type: ignore[attr-defined]
