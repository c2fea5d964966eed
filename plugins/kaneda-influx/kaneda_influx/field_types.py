"""InfluxDB field types: writing a value in the type its field already has, when lossless.

InfluxDB fixes each field's type per shard (a week by default): once ``value`` is an
integer field, a point writing ``value=7.0`` is refused ("field type conflict"), and
the other way round. A layout writes each value in its natural type; when the server
refuses one, the backend learns the stored types (from the error and from
``SHOW FIELD KEYS``) into a :data:`KnownTypes` cache, and the layouts write each number
in the stored type whenever that loses nothing: ``7.0`` into an integer field as ``7i``,
``7`` into a float field as ``7.0``. What cannot be written without loss (``7.5`` into an
integer field, text into a number field, a number into a boolean one) is refused.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

FLOAT, INTEGER, UNSIGNED, STRING, BOOLEAN = "float", "integer", "unsigned", "string", "boolean"

#: Learned stored types of the measurements that had a conflict: measurement -> field -> type.
KnownTypes = dict[str, dict[str, str]]

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})

# InfluxDB prints the names unescaped, between double quotes.
_CONFLICT = re.compile(
    r'field type conflict: input field "(?P<field>.*?)" on measurement "(?P<measurement>.*?)" '
    r"is type (?P<written>\w+), already exists as type (?P<stored>\w+)",
    re.DOTALL,
)
_DROPPED = re.compile(r"dropped=(\d+)")


class Conflict(NamedTuple):
    """The field type conflict an InfluxDB error reports (it names the first one only)."""

    measurement: str
    field: str
    written: str
    stored: str


def is_conflict(message: str) -> bool:
    """Whether an InfluxDB error is a field type conflict.

    Two forms: ``partial write: field type conflict: input field ... dropped=N`` when a
    field already holds another type (the other points are stored), and a bare ``field
    type conflict`` when one batch gives a new field two types: then InfluxDB stores
    nothing, yet creates the field with the type of its first value.
    """
    return "field type conflict" in message


def parse_conflict(message: str) -> Conflict | None:
    """The conflict named in an InfluxDB error message, or None."""
    found = _CONFLICT.search(message)
    if found is None:
        return None
    return Conflict(found["measurement"], found["field"], found["written"], found["stored"])


def dropped_count(message: str) -> int | None:
    """How many points a partial write dropped (``dropped=N``), or None."""
    found = _DROPPED.search(message)
    return int(found.group(1)) if found else None


def type_of(value: Any, integers: bool) -> str:
    """The type a value is written in when its field has no learned type.

    ``integers``: whether the layout writes Python ints as InfluxDB integers (kaneda
    1.0's layout does; the default layout writes every number as a float).
    """
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER if integers else FLOAT
    if isinstance(value, float):
        return FLOAT
    return STRING


def encode(value: Any, influx_type: str) -> str:
    """``value`` as a line-protocol field value of ``influx_type`` (no check of loss)."""
    if influx_type == FLOAT:
        return repr(float(value))
    if influx_type == INTEGER:
        return f"{int(value)}i"
    if influx_type == UNSIGNED:
        return f"{int(value)}u"
    if influx_type == BOOLEAN:
        return "true" if value else "false"
    return '"' + str(value).translate(_STRING_ESCAPES) + '"'


def converts(value: Any, influx_type: str) -> bool:
    """Whether ``value`` can be written as ``influx_type`` without losing anything.

    Only numbers convert, and only between number types: an int into a float field
    when the float holds it exactly, a whole float (or an int) into an integer or
    unsigned field within its range. Text, bools and numbers never turn into each other.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if influx_type == FLOAT:
        return isinstance(value, float) or float(value) == value
    if influx_type in (INTEGER, UNSIGNED):
        if isinstance(value, float) and not value.is_integer():
            return False
        low, high = _INT64 if influx_type == INTEGER else _UINT64
        return low <= int(value) <= high
    return False


def field(value: Any, natural: str, known: str | None) -> tuple[str, str]:
    """``(type, encoded value)`` to write: the learned type ``known`` when lossless."""
    if known is not None and known != natural and converts(value, known):
        return known, encode(value, known)
    return natural, encode(value, natural)


def describe(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
