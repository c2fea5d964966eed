"""Sizes a store may refuse: helpers for a backend's ``check``.

A metric too large for its store is refused at the call, where the caller can see why,
not dropped by the server later. Measuring every string of every metric at every call
would cost the hot path, so :func:`largest_text` looks at lengths only (a ``len`` per
string) and encodes nothing unless a string is long enough to matter.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidMetric
from .model import Metric


def largest_text(metric: Metric) -> tuple[str, int]:
    """The field and the length in characters of the metric's longest string.

    Looks at the name, the tags' keys and values, and the value (nested too).
    """
    field, longest = "name", len(metric.name)
    tags = metric.tags
    items = tags.items() if isinstance(tags, dict) else ((None, t) for t in tags)
    for key, item in items:
        if key is not None and len(key) > longest:
            field, longest = "tag key", len(key)
        if isinstance(item, str) and len(item) > longest:
            field, longest = f"tags[{key!r}]" if key is not None else "tag", len(item)
    found = _longest_in(metric.value, "value")
    if found[1] > longest:
        return found
    return field, longest


def _longest_in(value: Any, field: str, depth: int = 0) -> tuple[str, int]:
    if isinstance(value, str):
        return field, len(value)
    best = (field, 0)
    if depth > 32:
        return best
    if isinstance(value, dict):
        for key, item in value.items():
            for candidate in (
                (f"{field} key", len(key)),
                _longest_in(item, f"{field}[{key!r}]", depth + 1),
            ):
                if candidate[1] > best[1]:
                    best = candidate
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            candidate = _longest_in(item, f"{field}[{index}]", depth + 1)
            if candidate[1] > best[1]:
                best = candidate
    return best


def refuse_text_over(metric: Metric, limit: int, store: str, why: str) -> None:
    """Raise InvalidMetric if a string of ``metric`` is over ``limit`` bytes in UTF-8."""
    _, length = largest_text(metric)
    if length * 4 <= limit:  # short enough whatever it holds: nothing to encode
        return
    for text, where in _strings(metric):
        size = len(text.encode("utf-8"))
        if size > limit:
            raise InvalidMetric(
                f"{where} is {size} bytes long; {store} refuses more than {limit} bytes "
                f"there ({why}): shorten it"
            )


def _strings(metric: Metric) -> list[tuple[str, str]]:
    found = [(metric.name, "name")]
    tags = metric.tags
    if isinstance(tags, dict):
        for key, item in tags.items():
            found.append((key, "a tag key"))
            if isinstance(item, str):
                found.append((item, f"tags[{key!r}]"))
    else:
        found += [(item, "a tag") for item in tags]
    stack: list[tuple[Any, str]] = [(metric.value, "value")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            found.append((value, where))
        elif isinstance(value, dict):
            for key, item in value.items():
                found.append((key, f"a key of {where}"))
                stack.append((item, f"{where}[{key!r}]"))
        elif isinstance(value, (list, tuple)):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return found


def refuse_ints_beyond(metric: Metric, bits: int, store: str) -> None:
    """Raise InvalidMetric for an integer of ``metric`` that does not fit ``bits`` (signed)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    stack: list[tuple[Any, str]] = [(metric.value, "value")]
    tags = metric.tags
    if isinstance(tags, dict):
        stack += [(item, f"tags[{key!r}]") for key, item in tags.items()]
    while stack:
        value, where = stack.pop()
        if isinstance(value, int) and not low <= value <= high:  # int subclasses too
            raise InvalidMetric(
                f"{where} is an integer of {value.bit_length()} bits; {store} stores integers "
                f"of at most {bits} bits: report it as a float ({float(value)!r}) or a string"
            )
        if isinstance(value, dict):
            stack += [(item, f"{where}[{key!r}]") for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(value)]
