"""The two stored layouts of kaneda-influx, side by side.

``kaneda2`` (the default, :mod:`kaneda_influx.line_protocol`), one point per metric:
measurement = the kind; tags ``name``, ``host`` and yours (as text); fields ``value``
(every number a float, or a bool), ``text`` (an event's text, a custom string), a
custom dict's keys (numbers as floats), ``id`` when given.

``kaneda1``, exactly what kaneda 1.0 wrote: measurement = the kind; tags ``host`` and
yours (``str()`` of each value, so ``True`` is ``"True"``); fields ``name`` (a string)
and ``value`` (an int as an integer, a float as a float, a bool, or an event's text)
or, for a custom dict, its own keys with their own types, plus ``name``; no id.

Both write the metric's own time in nanoseconds. When InfluxDB already holds a field
with another number type, either layout writes a number in the stored type if that
loses nothing (see :mod:`kaneda_influx.field_types`): ``lines`` takes the learned
``known`` types of the measurements that had a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kaneda_core import InvalidMetric, Metric
from kaneda_core.layouts import KANEDA1, KANEDA2
from kaneda_core.model import EVENT, as_metric, epoch_us

from . import field_types, line_protocol
from .field_types import KnownTypes
from .line_protocol import (
    _check_identifier,
    _check_text,
    check_field_keys,
    check_key_length,
    remember_series,
)
from .series_cache import SeriesCache

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
# kaneda 1.0's client escaped a backslash in names, tags and field keys as two, which
# InfluxDB stores as two: its layout does the same, so its series stay the same.
_KANEDA1_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})
_INT64 = (-(2**63), 2**63 - 1)


class Layout:
    """How metrics become line protocol; one subclass per layout."""

    #: The name given as ``layout=`` (``?layout=`` in a URL).
    name = ""
    #: Whether Python ints are written as InfluxDB integers (else as floats).
    integers = False
    #: How field keys are escaped.
    key_escapes = _KEY_ESCAPES

    def __init__(self) -> None:
        #: Checked series and line prefixes, bounded in bytes.
        self.cache = SeriesCache()
        #: :meth:`check` itself, as the reporting calls run it (one call level less).
        self.check_at_call: Callable[[Metric], None] = self.check

    def check(self, metric: Metric) -> None:
        """Refuse, with advice, what this layout cannot write or InfluxDB could misread."""
        raise NotImplementedError

    def lines(self, batch: Sequence[Metric], known: KnownTypes) -> str:
        """Line protocol for ``batch``: numbers in their ``known`` stored types when lossless.

        The batch may hold records (see ``Backend.sends_records``).
        """
        if not known:
            return self.plain_lines(batch)
        out: list[str] = []
        run: list[Metric] = []
        for metric in map(as_metric, batch):
            fields = known.get(metric.kind)
            if fields is None:
                run.append(metric)
                continue
            if run:
                out.append(self.plain_lines(run))
                run = []
            out.append(self.typed_line(metric, fields))
        if run:
            out.append(self.plain_lines(run))
        return "\n".join(out)

    def plain_lines(self, batch: Sequence[Metric]) -> str:
        """Line protocol for ``batch``, every value in its natural type (the fast path).

        The batch may hold records: the loop reads fields by position, and what leaves
        it for a helper is made a Metric (``as_metric``).
        """
        raise NotImplementedError

    def series(self, metric: Metric) -> str:
        """The escaped measurement and tags of ``metric``'s line."""
        raise NotImplementedError

    def fields(self, metric: Metric) -> list[tuple[str, Any]]:
        """``(field key, value)`` of each field written for ``metric``."""
        raise NotImplementedError

    def typed_fields(
        self, metric: Metric, known: dict[str, str] | None
    ) -> list[tuple[str, str, str]]:
        """``(key, InfluxDB type, encoded value)`` of each field, as :meth:`lines` writes it."""
        known = known or {}
        integers = self.integers
        typed = []
        for key, value in self.fields(metric):
            natural = field_types.type_of(value, integers)
            kind, text = field_types.field(value, natural, known.get(key))
            typed.append((key, kind, text))
        return typed

    def typed_line(self, metric: Metric, known: dict[str, str]) -> str:
        """One line for ``metric``, numbers in their ``known`` stored types when lossless."""
        escapes = self.key_escapes
        fields = ",".join(
            f"{key.translate(escapes)}={text}" for key, _, text in self.typed_fields(metric, known)
        )
        return f"{self.series(metric)} {fields} {_time_ns(metric)}"


class Kaneda2Layout(Layout):
    """This version's layout: ``name`` as a tag, every number a float."""

    name = KANEDA2
    integers = False

    def __init__(self) -> None:
        super().__init__()
        self.check_at_call = line_protocol.checker(self.cache)

    def check(self, metric: Metric) -> None:
        self.check_at_call(metric)

    def plain_lines(self, batch: Sequence[Metric]) -> str:
        return line_protocol.lines(batch, self.cache)

    def series(self, metric: Metric) -> str:
        return line_protocol.series(metric)

    def fields(self, metric: Metric) -> list[tuple[str, Any]]:
        value = metric.value
        if isinstance(value, dict):
            fields = list(value.items())
        elif isinstance(value, str):
            fields = [("text", value)]
        else:
            fields = [("value", value)]
        if metric.id is not None:
            fields.append(("id", str(metric.id)))
        return fields


class Kaneda1Layout(Layout):
    """kaneda 1.0's layout: ``name`` as a field, numbers in their own type."""

    name = KANEDA1
    integers = True
    key_escapes = _KANEDA1_ESCAPES
    #: Tags kaneda 1.0 set itself (``host``) or InfluxDB forbids (``time``).
    reserved_tags = frozenset(("host", "time"))
    #: Keys of a custom dict kaneda 1.0 overwrote (``name``) or InfluxDB forbids.
    reserved_fields = frozenset(("name", "time"))

    # -- checks --------------------------------------------------------------------

    def check(self, metric: Metric) -> None:
        # Called at every reporting call: a number on the series remembered for its name
        # (the usual case) costs a lookup and a comparison of two small dicts, as in the
        # default layout (see line_protocol.checker).
        name, kind, value, tags, _, _, _, _ = metric
        if type(tags) is dict:
            kind_of_value = type(value)
            if (
                kind_of_value is float
                or kind_of_value is bool
                or (kind_of_value is int and _INT64[0] <= value <= _INT64[1])
            ):
                cache = self.cache
                if tags:
                    last = cache.checked_by_name.get(name)
                    if last is not None and last[1] == tags and last[0] == kind:
                        return
                    key: tuple[Any, ...] = (kind, name, *tags.items())
                else:
                    key = (kind, name)
                plain = cache.checked.get(key)
                if plain:
                    if tags and name not in cache.checked_by_name:
                        cache.remember_checked_by_name(name, kind, tags)
                    return
                # Tag values not all strings: equal values' texts differ (see _texts_key).
                if plain is not None and _texts_key(key, tags) in cache.checked:
                    return
        self._check(as_metric(metric))  # a record, maybe (see Backend.checks_records)

    def _check(self, metric: Metric) -> None:
        tags = metric.tags
        if isinstance(tags, list):
            if tags:
                raise InvalidMetric(
                    f"InfluxDB tags must be a dict, not a list: got tags={tags!r}. "
                    "Give each tag a key, e.g. tags={'from': 'login', 'to': 'edit_profile'}"
                )
            tags = {}  # kaneda 1.0 tested `if tags:`: an empty list (or tuple) is no tags
        key = (metric.kind, metric.name, *tags.items()) if tags else (metric.kind, metric.name)
        exact = key if all(type(v) is str for v in tags.values()) else _texts_key(key, tags)
        if exact not in self.cache.checked:
            self._check_series(metric.kind, metric.name, tags)
            check_key_length(lambda: self.series(metric), (metric.kind, metric.host), tags)
            remember_series(self.cache, key, exact)
        value = metric.value
        if isinstance(value, int):  # an int subclass (IntEnum, numpy-like) is written as one
            _check_int(value, "value")
        elif isinstance(value, str):
            _check_text(value, "text" if metric.kind == EVENT else "value")
        elif isinstance(value, dict):
            self._check_dict(value)
            if value:  # {} is the name alone (see _check_dict)
                check_field_keys(
                    lambda: self.series(metric),
                    (metric.kind, metric.host),
                    tags,
                    value,
                    _KANEDA1_ESCAPES,
                )
        elif isinstance(value, (list, tuple)):
            raise InvalidMetric(
                f"InfluxDB cannot store a list as a value: got value={value!r}. "
                "Use a dict of scalars instead, e.g. value={'start_time': 120, 'end_time': 230}"
            )

    def _check_series(self, kind: str, name: str, tags: dict[str, Any]) -> None:
        _check_identifier(kind, "metric kind (the measurement)")
        if kind.startswith("#"):
            raise InvalidMetric(
                f"metric kind {kind!r} starts with '#', which InfluxDB reads as a comment "
                "line: rename it"
            )
        _check_text(name, "name")
        for key, value in tags.items():
            if key in self.reserved_tags:
                raise InvalidMetric(
                    f"tag {key!r} is reserved by kaneda 1.0's layout (it holds the "
                    f"{'host name' if key == 'host' else 'time'}): rename the tag"
                )
            _check_identifier(key, "tag key")
            text = str(value)
            if text == "":
                raise InvalidMetric(
                    f"tags[{key!r}] is empty: InfluxDB drops empty tag values; leave the tag out"
                )
            _check_identifier(text, f"tags[{key!r}]")

    def _check_dict(self, value: dict[str, Any]) -> None:
        # An empty dict is a point all the same: its field `name`, as kaneda 1.0 wrote it.
        for key, item in value.items():
            if isinstance(item, (dict, list, tuple)):
                raise InvalidMetric(
                    f"InfluxDB fields cannot hold a list or a nested dict: got "
                    f"value[{key!r}]={item!r}. Flatten it into scalars, e.g. "
                    "value={'start_time': 120, 'end_time': 230}"
                )
            if key in self.reserved_fields:
                raise InvalidMetric(
                    f"value key {key!r} is reserved by kaneda 1.0's layout (the field "
                    f"{key!r} holds the metric's {key}): rename it"
                )
            _check_identifier(key, "value key")
            if isinstance(item, str):
                _check_text(item, f"value[{key!r}]")
            elif isinstance(item, int):
                _check_int(item, f"value[{key!r}]")

    # -- writing -------------------------------------------------------------------

    def plain_lines(self, batch: Sequence[Metric]) -> str:
        cache = self.cache
        heads = cache.prefixes
        by_name = cache.prefix_by_name
        out: list[str] = []
        append = out.append
        for metric in batch:
            name, kind, value, tags, _, host, _, time_ns = metric
            # The head (series and name) as in line_protocol.lines: the series remembered
            # for this name first, then the cache.
            if tags:
                last = by_name.get(name)
                if last is not None and last[2] == tags and last[0] == kind and last[1] == host:
                    head = last[3]
                else:
                    key: tuple[Any, ...] = (kind, name, host, *tags.items())  # type: ignore[union-attr]
                    head = heads.get(key)  # type: ignore[assignment]
                    if head is None or head is _TYPED:
                        head = self._head(as_metric(metric), key, head)
                    elif last is None:
                        cache.remember_prefix_by_name(name, kind, host, tags, head)  # type: ignore[arg-type]
            else:
                key = (kind, name, host)
                head = heads.get(key)  # type: ignore[assignment]
                if head is None:
                    head = self._head(as_metric(metric), key, None)
            if time_ns is None:
                time_ns = _time_ns(as_metric(metric))
            kind_of_value = type(value)
            if kind_of_value is int:
                append(f"{head},value={value}i {time_ns}")
            elif kind_of_value is float:
                append(f"{head},value={value!r} {time_ns}")
            else:
                fields = ",".join(
                    f"{field.translate(_KANEDA1_ESCAPES)}={field_types.encode(item, influx_type)}"
                    for field, item, influx_type in self._natural_fields(as_metric(metric))
                    if field != "name"  # already in the head
                )
                # A custom {} is the name alone, as kaneda 1.0 wrote it.
                append(f"{head},{fields} {time_ns}" if fields else f"{head} {time_ns}")
        return "\n".join(out)

    def _head(self, metric: Metric, key: tuple[Any, ...], cached: str | None) -> str:
        """``series name="..."``, not found under ``key``: built and remembered.

        See line_protocol._prefix for _TYPED.
        """
        cache = self.cache
        tags = metric.tags or {}  # an empty list is no tags (see _check)
        head = f"{self.series(metric)} name={field_types.encode(metric.name, 'string')}"
        if cached is None and all(type(v) is str for v in tags.values()):  # type: ignore[union-attr]
            cache.remember_prefix(key, head)
            if tags and metric.name not in cache.prefix_by_name:
                cache.remember_prefix_by_name(metric.name, metric.kind, metric.host, tags, head)  # type: ignore[arg-type]
            return head
        cache.remember_prefix(key, _TYPED)
        typed = _texts_key(key, tags)  # type: ignore[arg-type]
        found = cache.prefixes.get(typed)
        if found is None:
            found = head
            cache.remember_prefix(typed, found)
        return found

    def series(self, metric: Metric) -> str:
        pairs = [("host", metric.host)]
        if metric.tags:
            pairs += [(k, str(v)) for k, v in metric.tags.items()]  # type: ignore[union-attr]
            pairs.sort()
        escaped = "".join(
            f",{key.translate(_KANEDA1_ESCAPES)}={text.translate(_KANEDA1_ESCAPES)}"
            for key, text in pairs
        )
        return metric.kind.translate(_KANEDA1_ESCAPES) + escaped

    def fields(self, metric: Metric) -> list[tuple[str, Any]]:
        value = metric.value
        if isinstance(value, dict):
            return [("name", metric.name), *value.items()]
        return [("name", metric.name), ("value", value)]

    def _natural_fields(self, metric: Metric) -> Iterable[tuple[str, Any, str]]:
        for key, value in self.fields(metric):
            yield key, value, field_types.type_of(value, True)


# Stands in the head cache for a key whose tag values are not all strings (True == 1 ==
# 1.0 as dict keys, yet their tags read "True", "1" and "1.0"): such series are cached
# under a key that holds the texts written too (see _texts_key).
_TYPED = "\0typed"


def _texts_key(key: tuple[Any, ...], tags: dict[str, Any]) -> tuple[Any, ...]:
    """``key`` with the text written for each tag value, ``str()`` of it as in kaneda 1.0.

    Values that compare equal can have different texts even in one type (0.0 and -0.0,
    Decimal("1") and Decimal("1.0")): the texts, not the types, tell their series apart.
    """
    return (*key, *map(str, tags.values()))


LAYOUTS: dict[str, type[Layout]] = {KANEDA2: Kaneda2Layout, KANEDA1: Kaneda1Layout}


def _time_ns(metric: Metric) -> int:
    time_ns = metric.time_ns
    return time_ns if time_ns is not None else epoch_us(metric.timestamp) * 1000


def _check_int(value: int, field: str) -> None:
    if not _INT64[0] <= value <= _INT64[1]:
        raise InvalidMetric(
            f"{field} {value!r} does not fit InfluxDB's 64-bit integers: report it as a float "
            f"({float(value)!r}) or a string"
        )
