"""What kaneda 1.0 stored for input that :mod:`kaneda_core` refuses.

kaneda 1.0 handed its backends whatever it was given, and InfluxDB's client (5.x,
``influxdb.line_protocol.make_lines``) wrote:

- a tag value as ``str()`` of it, bytes decoded as UTF-8: a ``uuid.UUID``, a ``Decimal``
  (``"1.10"``), a ``Fraction`` (``"1/3"``), a date (``"2026-11-25"``), a datetime
  (``"2026-11-25 10:00:05"``), a NaN (``"nan"``) or an infinite float (``"inf"``);
- a number that is neither int nor float (``Decimal``, ``Fraction``) as
  ``repr(float(value))``, a float field;
- bytes in a field as their decoded text, a string field.

``kaneda.Metrics`` converts such input to that, for every backend, and only where
``kaneda_core`` refuses it (each function answers None when it has nothing to convert):
the calls of ordinary input never come here. What 1.0 lost (undecodable bytes, a UUID
in a field, which its client wrote unquoted) is left as it is, for ``kaneda_core`` to
refuse; a number that is no finite float (``Decimal('NaN')``, ``Decimal('1E+400')``) is
refused here, named as the caller gave it rather than as the ``nan`` or ``inf`` it
would become.
"""

from __future__ import annotations

import math
from typing import Any

from kaneda_core.errors import InvalidMetric
from kaneda_core.model import MAX_INT, _shorten

#: How deep a custom value is looked into (kaneda_core refuses deeper ones).
_MAX_DEPTH = 33


def tags_as_1_0(tags: object) -> dict[str, Any] | None:
    """A copy of dict ``tags`` with each value 1.0 stored as text turned into that text."""
    if not isinstance(tags, dict):
        return None
    converted = None
    for key, item in tags.items():
        text = tag_text(item)
        if text is not None:
            if converted is None:
                converted = dict(tags)
            converted[key] = text
    return converted


def tag_text(value: object) -> str | None:
    """The text 1.0's InfluxDB client wrote for a tag value kaneda_core refuses, or None."""
    if isinstance(value, (str, bool)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return None if -MAX_INT < value < MAX_INT else str(value)
    if isinstance(value, bytes):
        return _decoded(value)
    import datetime
    import numbers
    import uuid

    if isinstance(value, (numbers.Number, uuid.UUID, datetime.date, datetime.time)):
        return str(value)
    return None


def number_as_1_0(value: object, field: str = "value") -> float | None:
    """``float(value)`` of a number that is neither an int nor a float (Decimal, Fraction).

    Raises InvalidMetric, naming ``field`` and ``value``, when that float is not finite.
    """
    if isinstance(value, (int, float)):
        return None
    import numbers

    if not isinstance(value, numbers.Number):  # Decimal is a Number, not a Real
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # complex, a signaling NaN, a huge Fraction
        return None
    if not math.isfinite(number):  # refused either way: said of what the caller passed
        raise InvalidMetric(f"{field} must be a finite number, got {_shorten(repr(value))}")
    return number


def text_as_1_0(value: object) -> str | None:
    """The decoded text of ``value`` when it is bytes (an event's text, a custom string)."""
    return _decoded(value) if isinstance(value, bytes) else None


def custom_as_1_0(value: Any, depth: int = 0, field: str = "value") -> Any:
    """A custom value with each number and bytes 1.0 stored otherwise converted, or None.

    Into dicts and lists, as 1.0's JSON stores (and InfluxDB's fields) had them. ``field``
    is where ``value`` is (``value['a'][0]``), for the error of a number no float holds.
    """
    if type(value) in (str, int, float, bool) or depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        converted = None
        for key, item in value.items():
            new = custom_as_1_0(item, depth + 1, f"{field}[{key!r}]")
            if new is not None:
                if converted is None:
                    converted = dict(value)
                converted[key] = new
        return converted
    if isinstance(value, (list, tuple)):
        items = [
            custom_as_1_0(item, depth + 1, f"{field}[{index}]") for index, item in enumerate(value)
        ]
        if all(item is None for item in items):
            return None
        copy = [old if new is None else new for old, new in zip(value, items, strict=True)]
        return tuple(copy) if isinstance(value, tuple) else copy
    text = text_as_1_0(value)
    return text if text is not None else number_as_1_0(value, field)


def _decoded(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # 1.0's client raised: the metric was lost
        return None
