"""Kaneda metrics as InfluxDB 1.x line protocol, and the checks that keep it unambiguous.

The default (``kaneda2``) layout; kaneda 1.0's is beside it in :mod:`kaneda_influx.layouts`.
One point per metric:

- measurement: the metric's kind (``gauge``, ``counter``, ``timing``, ``event``, or the
  custom metric's name);
- tags: ``name`` and ``host``, plus the caller's tags (values written as strings);
- fields: ``value`` for a number (always a float: InfluxDB fixes a field's type, and a
  gauge of 7 and one of 7.5 must both be stored) or a bool, ``text`` for an event's text
  or a custom string, a custom dict's own keys (numbers as floats), and ``id`` when the
  metric has one;
- time: the metric's timestamp in nanoseconds (``precision=n``), as taken at the call
  (its last two digits tell the reporting processes of a host apart: see
  :mod:`kaneda_core.stamps`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from kaneda_core import InvalidMetric, Metric
from kaneda_core.model import EVENT, as_metric, epoch_us

from .series_cache import SeriesCache

# A backslash InfluxDB would take for an escape: at the end, or before , = space \ ".
_AMBIGUOUS_BACKSLASH = re.compile(r'\\([, =\\"]|$)')

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: InfluxDB's limit on a key, in bytes: the series key (the measurement and its tags,
#: escaped), then ``#!~#``, then a field key (escaped), for each field of a point.
MAX_KEY_BYTES = 65535
#: What InfluxDB puts between the series key and a field key in the key it limits.
FIELD_KEY_SEPARATOR = "#!~#"
#: The longest field key the layouts write of their own (``value``; ``text``, ``id``,
#: ``name`` are shorter): room for it is kept in every series key.
OWN_FIELD_KEY = "value"
#: The largest string field written, in bytes once escaped (every ``"`` and ``\`` is
#: written as two): InfluxDB's default max-body-size is 25 MB for a whole request.
MAX_STRING_BYTES = 16 * 1024 * 1024

RESERVED_TAGS = frozenset(("name", "host", "time"))
RESERVED_FIELDS = frozenset(("value", "text", "id", "time"))

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


_NUMBERS = frozenset((int, float, bool))


def checker(cache: SeriesCache) -> Callable[[Metric], None]:
    """The check of this layout, remembering checked series in ``cache``.

    It refuses, with advice, what InfluxDB cannot store or could misread. A function of
    its own rather than a method: it runs at every reporting call, and every call level
    costs there.
    """
    checked = cache.checked  # emptied in place by cache.clear(): bound once
    checked_by_name = cache.checked_by_name
    remember = cache.remember_checked_by_name

    def check(metric: Metric) -> None:
        # A number without an id on the series remembered for its name (see
        # SeriesCache) costs a lookup and a comparison of two small dicts; on another
        # series checked before, a key and a lookup.
        name, kind, value, tags, _, _, id_, _ = metric
        if type(value) in _NUMBERS and id_ is None and type(tags) is dict:
            last = None
            if tags:
                last = checked_by_name.get(name)
                if last is not None and last[1] == tags and last[0] == kind:
                    return
                key: tuple[Any, ...] = (kind, name, *tags.items())
            else:
                key = (kind, name)
            plain = checked.get(key)
            if plain:
                if tags and last is None:
                    remember(name, kind, tags)
                return
            # Tag values not all strings: 1 == 1.0 == True and 2**1000 == float(2**1000),
            # whose texts differ (and so the series key's length): the types tell.
            if plain is not None and (*key, *map(type, tags.values())) in checked:
                return
        _check(as_metric(metric), cache)  # a record, maybe (see Backend.checks_records)

    return check


def series_key(key: tuple[Any, ...], tags: dict[str, Any]) -> tuple[Any, ...]:
    """``key`` (kind, name, tag items) as the checked series are remembered under: with
    the tag values' types when they are not all strings, since values that compare
    equal (1, 1.0, True) are written as different texts."""
    if all(type(value) is str for value in tags.values()):
        return key
    return (*key, *map(type, tags.values()))


def remember_series(cache: SeriesCache, key: tuple[Any, ...], exact: tuple[Any, ...]) -> None:
    """Remember that the series passed its checks: under ``key`` with whether its tag
    values are all strings (the check's fast path), and under ``exact`` if not."""
    cache.remember_checked(key, exact is key)
    if exact is not key:
        cache.remember_checked(exact, False)


def _check(metric: Metric, cache: SeriesCache) -> None:
    tags = metric.tags
    if isinstance(tags, list):
        raise InvalidMetric(
            f"InfluxDB tags must be a dict, not a list: got tags={tags!r}. "
            "Give each tag a key, e.g. tags={'from': 'login', 'to': 'edit_profile'}"
        )
    # Series (kind, name, tags) repeat: each is checked once, then remembered.
    key = (metric.kind, metric.name, *tags.items()) if tags else (metric.kind, metric.name)
    exact = series_key(key, tags)
    if exact not in cache.checked:
        _check_series(metric.kind, metric.name, tags)
        check_key_length(lambda: series(metric), (metric.kind, metric.name, metric.host), tags)
        remember_series(cache, key, exact)
    value = metric.value
    if isinstance(value, (str, dict, list, tuple)):
        _check_value(metric.kind, value)
        if isinstance(value, dict):
            check_field_keys(
                lambda: series(metric), (metric.kind, metric.name, metric.host), tags, value
            )
    if isinstance(metric.id, str):
        _check_text(metric.id, "id_")


def _check_series(kind: str, name: str, tags: dict[str, Any]) -> None:
    _check_identifier(kind, "metric kind (the measurement)")
    if kind.startswith("#"):
        raise InvalidMetric(
            f"metric kind {kind!r} starts with '#', which InfluxDB reads as a comment "
            "line: rename it"
        )
    _check_identifier(name, "name")
    for key, value in tags.items():
        if key in RESERVED_TAGS:
            raise InvalidMetric(
                f"tag {key!r} is reserved by kaneda-influx (it holds the metric's {key}): "
                "rename the tag"
            )
        _check_identifier(key, "tag key")
        text = tag_text(value)
        if text == "":
            raise InvalidMetric(
                f"tags[{key!r}] is empty: InfluxDB drops empty tag values; leave the tag out"
            )
        _check_identifier(text, f"tags[{key!r}]")


def _check_value(kind: str, value: Any) -> None:
    if isinstance(value, dict):
        if not value:
            raise InvalidMetric(
                "InfluxDB cannot store a point without fields: got value={}. Give at least "
                "one, e.g. value={'start_time': 120, 'end_time': 230}"
            )
        for key, item in value.items():
            if isinstance(item, (dict, list, tuple)):
                raise InvalidMetric(
                    f"InfluxDB fields cannot hold a list or a nested dict: got "
                    f"value[{key!r}]={item!r}. Flatten it into scalars, e.g. "
                    "value={'start_time': 120, 'end_time': 230}"
                )
            if key in RESERVED_FIELDS:
                raise InvalidMetric(f"value key {key!r} is reserved by kaneda-influx: rename it")
            _check_identifier(key, "value key")
            if isinstance(item, str):
                _check_text(item, f"value[{key!r}]")
    elif isinstance(value, (list, tuple)):
        raise InvalidMetric(
            f"InfluxDB cannot store a list as a value: got value={value!r}. "
            "Use a dict of scalars instead, e.g. value={'start_time': 120, 'end_time': 230}"
        )
    else:
        _check_text(value, "text" if kind == EVENT else "value")


def _check_identifier(text: str, field: str) -> None:
    if text.isprintable() and "\\" not in text:
        return  # the common case: no control character, no backslash
    if "\n" in text or "\r" in text:
        raise InvalidMetric(
            f"{field} {text!r} contains a line break, which InfluxDB cannot store: remove it"
        )
    if _CONTROL.search(text):
        raise InvalidMetric(
            f"{field} {text!r} contains a control character (a tab, for one), which "
            "InfluxDB's line protocol reads as whitespace: remove it"
        )
    if "\\" in text and _AMBIGUOUS_BACKSLASH.search(text):
        raise InvalidMetric(
            f"{field} {text!r} has a backslash at its end or before a space, comma, equals "
            "sign, quote or backslash, which InfluxDB's line protocol reads as an escape: "
            "remove it"
        )


def _rough_key_bytes(parts: tuple[str, ...], tags: dict[str, Any]) -> int:
    """At least the escaped series key's size in bytes, without building it.

    A character is at most 4 bytes escaped (a UTF-8 sequence, or an escaped ASCII
    character's 2); each tag (the layout's own, ``host`` and ``name``, counted among
    ``parts``) adds a comma and an equals sign.
    """
    chars = sum(map(len, parts)) + sum(len(str(k)) + len(str(v)) for k, v in tags.items())
    return 4 * chars + 2 * (len(tags) + len(parts))


def check_key_length(
    build: Callable[[], str], parts: tuple[str, ...], tags: dict[str, Any]
) -> None:
    """Refuse a series whose key (``build()``, escaped) leaves no room for a field key.

    InfluxDB limits the series key, ``#!~#`` and each field key together to
    MAX_KEY_BYTES: room is kept for the longest field key the layouts write of their
    own (OWN_FIELD_KEY); a custom dict's keys are checked by :func:`check_field_keys`.
    """
    room = len(FIELD_KEY_SEPARATOR) + len(OWN_FIELD_KEY)
    if _rough_key_bytes(parts, tags) + room <= MAX_KEY_BYTES:
        return  # short: the common case, without building the key
    size = len(build().encode("utf-8"))
    if size + room > MAX_KEY_BYTES:
        raise InvalidMetric(
            f"{_longest_part(parts, tags)} makes the series key (measurement and tags) "
            f"{size} bytes; with {FIELD_KEY_SEPARATOR!r} and the field key {OWN_FIELD_KEY!r} "
            f"InfluxDB's key would be {size + room} bytes, and it refuses keys over "
            f"{MAX_KEY_BYTES} bytes (max key length exceeded): shorten it, or move long text "
            "to a field (an event's text)"
        )


def check_field_keys(
    build: Callable[[], str],
    parts: tuple[str, ...],
    tags: dict[str, Any],
    fields: dict[str, Any],
    escapes: dict[int, str] | None = None,
) -> None:
    """Refuse a custom dict whose longest key, with the series key, is over InfluxDB's
    key limit (see :func:`check_key_length`); ``escapes`` are the layout's for field keys."""
    longest = max(fields, key=len)
    if len(longest) <= len(OWN_FIELD_KEY):
        return  # room was kept for it in the series check
    rough_field = 4 * len(longest) + len(FIELD_KEY_SEPARATOR)
    if _rough_key_bytes(parts, tags) + rough_field <= MAX_KEY_BYTES:
        return
    series_bytes = len(build().encode("utf-8"))
    table = _KEY_ESCAPES if escapes is None else escapes
    for key in fields:
        key_bytes = len(key.translate(table).encode("utf-8"))
        total = series_bytes + len(FIELD_KEY_SEPARATOR) + key_bytes
        if total > MAX_KEY_BYTES:
            shown = key if len(key) <= 24 else key[:20] + "..."
            raise InvalidMetric(
                f"value key {shown!r} ({key_bytes} bytes) with the series key (measurement "
                f"and tags, {series_bytes} bytes; the longest is {_longest_part(parts, tags)}) "
                f"makes InfluxDB's key {total} bytes, and it refuses keys over "
                f"{MAX_KEY_BYTES} bytes (max key length exceeded): shorten the key or the tags"
            )


def _longest_part(parts: tuple[str, ...], tags: dict[str, Any]) -> str:
    """The longest piece of a series key, named as the caller knows it."""
    named = [(len(str(v).encode("utf-8")), f"tags[{k!r}] ({{}} bytes)") for k, v in tags.items()]
    named += [
        (len(part.encode("utf-8")), f"{what} ({{}} bytes)")
        for part, what in zip(parts, ("the metric kind", "the name", "the host name"), strict=False)
    ]
    size, what = max(named, key=lambda pair: pair[0])
    return what.format(size)


def escaped_string_bytes(text: str) -> int:
    """The bytes of ``text`` in a string field: UTF-8, every ``"`` and ``\\`` doubled."""
    return len(text.encode("utf-8")) + text.count('"') + text.count("\\")


def _check_text(text: str, field: str) -> None:
    # A character is at most 4 bytes written (UTF-8; an escaped quote or backslash is 2).
    if len(text) * 4 > MAX_STRING_BYTES and (size := escaped_string_bytes(text)) > MAX_STRING_BYTES:
        raise InvalidMetric(
            f"{field} is {size} bytes long as written (UTF-8, each quote and backslash "
            f"escaped as two); kaneda-influx writes strings of at most {MAX_STRING_BYTES} "
            "bytes (InfluxDB's default request limit is 25 MB): store large text elsewhere "
            "and report a reference to it"
        )
    if "\n" in text or "\r" in text:
        raise InvalidMetric(
            f"{field} {text!r} contains a line break, which InfluxDB cannot store: "
            "replace it (with ' / ' for instance)"
        )


def tag_text(value: Any) -> str:
    """A tag value as InfluxDB stores it: a string (``true``/``false`` for bools)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == 0 and isinstance(value, float):
        return "0.0"  # not "-0.0": equal keys must give one series (see lines())
    return str(value)


def _field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    return '"' + str(value).translate(_STRING_ESCAPES) + '"'


def series(metric: Metric) -> str:
    """The escaped measurement and sorted tags of ``metric``: the start of its line."""
    tags = metric.tags
    pairs = [("host", metric.host), ("name", metric.name)]
    if tags:
        pairs += [(k, tag_text(v)) for k, v in tags.items()]  # type: ignore[union-attr]
        pairs.sort()
    escaped = "".join(
        f",{key.translate(_KEY_ESCAPES)}={text.translate(_KEY_ESCAPES)}" for key, text in pairs
    )
    return metric.kind.translate(_MEASUREMENT_ESCAPES) + escaped


def line(metric: Metric) -> str:
    """One point of line protocol for ``metric`` (checked beforehand, see :func:`checker`)."""
    return lines((metric,), SeriesCache())


#: Integers a float holds exactly: written as they are, InfluxDB reads them as floats.
_EXACT = 2**53


def lines(batch: Iterable[Metric], cache: SeriesCache) -> str:
    """Line protocol for a batch, one point per line, nanosecond timestamps.

    The batch may hold records (see ``Backend.sends_records``): the loop reads fields by
    position, and what leaves it for a helper is made a Metric.
    """
    prefixes = cache.prefixes
    by_name = cache.prefix_by_name
    out: list[str] = []
    append = out.append
    low, high = -_EXACT, _EXACT
    for metric in batch:
        name, kind, value, tags, _, host, id_, time_ns = metric
        if tags:
            last = by_name.get(name)
            if last is not None and last[2] == tags and last[0] == kind and last[1] == host:
                prefix = last[3]  # the series remembered for this name: no key to build
            else:
                key: tuple[Any, ...] = (kind, name, host, *tags.items())  # type: ignore[union-attr]
                prefix = prefixes.get(key)  # type: ignore[assignment]
                if prefix is None or prefix is _TYPED:
                    prefix = _prefix(as_metric(metric), key, prefix, cache)
                elif last is None:
                    cache.remember_prefix_by_name(name, kind, host, tags, prefix)  # type: ignore[arg-type]
        else:
            key = (kind, name, host)
            prefix = prefixes.get(key)  # type: ignore[assignment]
            if prefix is None:
                prefix = _prefix(as_metric(metric), key, None, cache)
        if time_ns is None:
            time_ns = epoch_us(as_metric(metric).timestamp) * 1000
        if id_ is None:
            if type(value) is float:
                append(f"{prefix} value={value!r} {time_ns}")
                continue
            # An int without the "i" suffix is a float to InfluxDB: the same stored value
            # as float(value), formatted faster.
            if type(value) is int and low <= value <= high:
                append(f"{prefix} value={value} {time_ns}")
                continue
        append(f"{prefix} {','.join(_fields(as_metric(metric)))} {time_ns}")
    return "\n".join(out)


# Stands in the cache for a key whose tag values are not all strings: True == 1 == 1.0,
# yet their tags read "true", "1" and "1.0", so such series are cached under a key that
# holds the value types too. A string equals only a string: all-string keys are exact.
_TYPED = "\0typed"


def _prefix(metric: Metric, key: tuple[Any, ...], cached: str | None, cache: SeriesCache) -> str:
    """The escaped start of ``metric``'s line, not found under ``key``: built, remembered."""
    tags = metric.tags
    if cached is None and all(type(v) is str for v in tags.values()):  # type: ignore[union-attr]
        prefix = series(metric)
        cache.remember_prefix(key, prefix)
        if tags and metric.name not in cache.prefix_by_name:
            cache.remember_prefix_by_name(metric.name, metric.kind, metric.host, tags, prefix)  # type: ignore[arg-type]
        return prefix
    cache.remember_prefix(key, _TYPED)
    typed = (*key, *map(type, tags.values()))  # type: ignore[union-attr]
    found = cache.prefixes.get(typed)
    if found is None:
        found = series(metric)
        cache.remember_prefix(typed, found)
    return found


def _fields(metric: Metric) -> Iterable[str]:
    value = metric.value
    if isinstance(value, dict):
        if not value:
            raise InvalidMetric(
                "InfluxDB cannot store a point without fields: got value={}. Give at least "
                "one, e.g. value={'start_time': 120, 'end_time': 230}"
            )
        for key, item in value.items():
            yield f"{key.translate(_KEY_ESCAPES)}={_field(item)}"
    elif isinstance(value, str):
        yield f"text={_field(value)}"
    else:
        yield f"value={_field(value)}"
    if metric.id is not None:
        yield f"id={_field(str(metric.id))}"
