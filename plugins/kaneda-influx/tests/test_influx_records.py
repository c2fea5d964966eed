"""The line protocol of the calls' records is the line protocol of their Metrics.

kaneda-influx's ``send`` takes the records the calls queue (``Backend.sends_records``):
plain tuples in ``Metric``'s field order, read by position on the fast path and made
Metrics where a helper reads fields by name. Whatever the metric, both give one text.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st
from kaneda_influx.layouts import LAYOUTS

from kaneda_core import InvalidMetric, Metric

NAMES = st.text("abcdefghijklmnopqrstuvwxyz._- =,\\", min_size=1, max_size=12)
TAG_VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
NUMBERS = st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False))
FIELDS = st.dictionaries(NAMES, st.one_of(NUMBERS, st.text(max_size=8), st.booleans()), max_size=3)


@st.composite
def records(draw: Any) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["gauge", "counter", "timing", "event", "custom"]))
    if kind == "event":
        value: Any = draw(st.text(max_size=20))
    elif kind == "custom":
        value = draw(st.one_of(NUMBERS, FIELDS))
        kind = draw(st.sampled_from(["custom", "load"]))
    else:
        value = draw(NUMBERS)
    tags = draw(st.dictionaries(NAMES, TAG_VALUES, max_size=3))
    identifier = draw(st.one_of(st.none(), st.text("abc123-", min_size=1, max_size=8)))
    time_ns = draw(st.integers(0, 2**62))
    return (draw(NAMES), kind, value, tags, None, "host-1", identifier, time_ns)


def writable(layout_name: str, batch: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The records the layout's check lets through (what the calls would have queued)."""
    check = LAYOUTS[layout_name]().check
    kept = []
    for record in batch:
        try:
            check(tuple.__new__(Metric, record))
        except InvalidMetric:
            continue
        kept.append(record)
    return kept


@given(st.sampled_from(sorted(LAYOUTS)), st.lists(records(), max_size=12))
def test_records_and_their_metrics_make_the_same_lines(
    layout_name: str, batch: list[tuple[Any, ...]]
) -> None:
    batch = writable(layout_name, batch)
    assume(batch)
    metrics = [tuple.__new__(Metric, record) for record in batch]
    # Twice each, on layouts of their own: the second pass takes the cached series.
    from_records, from_metrics = LAYOUTS[layout_name](), LAYOUTS[layout_name]()
    for _ in range(2):
        assert from_records.lines(batch, {}) == from_metrics.lines(metrics, {})


@given(st.sampled_from(sorted(LAYOUTS)), st.lists(records(), max_size=12))
def test_records_and_their_metrics_make_the_same_typed_lines(
    layout_name: str, batch: list[tuple[Any, ...]]
) -> None:
    """After a field type conflict the batch is written in the stored types: the same."""
    batch = writable(layout_name, batch)
    assume(batch)
    metrics = [tuple.__new__(Metric, record) for record in batch]
    known = {"gauge": {"value": "integer"}, "load": {"value": "float"}}
    layout = LAYOUTS[layout_name]()
    try:
        expected = layout.lines(metrics, known)
    except (InvalidMetric, ValueError, OverflowError):
        assume(False)  # no stored type takes it: refused, and tested elsewhere
    assert LAYOUTS[layout_name]().lines(batch, known) == expected
