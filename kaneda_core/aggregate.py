"""Client-side aggregation: counters, gauges and timings folded per flush interval.

With ``Metrics(..., aggregate=True)`` a counter, gauge or timing call does not queue a
metric: it appends the call's series (its name and tags) and value to a queue of its
kind, which takes no lock (so a signal handler may report too). The delivery worker
folds what was queued into one record per series, and at every flush interval emits one
point per series:

- a counter: the sum of its increments and decrements in the interval;
- a gauge: its last value in the interval (the gauges' points in the order of their
  series' last calls, each stamped after the one before);
- a timing: a dict ``{"count", "sum", "min", "max", "p50", "p90", "p99"}`` (the
  percentiles are configurable, computed over up to ``RESERVOIR`` values kept per series
  by reservoir sampling; count, sum, min and max are exact): ``count`` an integer, the
  others floats, whatever the calls' values were.

Events and custom metrics are never folded. A series is validated (and checked by the
backend) the first time it is seen; later calls on it only build its key and find the
series' own. That key is made of plain strings (a string subclass's text), or, for tags
with other values, each value with its type: ``1``, ``1.0`` and ``True`` are three
series, as a store keeps them, although Python finds them equal (and so are ``-0.0`` and
``0.0``). What the worker folds holds no object of the caller's: a value of an int or
float subclass (an ``IntEnum``, numpy's ``float64``) is folded as the plain number. An
aggregated point carries the time its interval ended.
"""

from __future__ import annotations

import collections
import itertools
import math
import operator
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .model import COUNTER, GAUGE, TIMING, Metric, check_name, check_number, copy_tags, plain
from .stamps import SLOTS

#: Values kept per timing series and interval for its percentiles.
RESERVOIR = 1024
#: Percentiles a timing point reports unless told otherwise.
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
#: Calls queued before the worker is woken to fold them (bounds the memory they take).
FOLD_EVERY = 20_000
#: Series remembered as validated, per kind; past it, the memory is emptied at the next
#: emit (a forgotten series is validated again when next seen).
MAX_SERIES = 100_000
#: About the bytes the series remembered may hold (their names and tags); past it, the
#: worker is woken to emit at once, and the memory is emptied.
MAX_SERIES_BYTES = 16 * 1024 * 1024
#: Points remembered with the calls they carry (stats().folded_lost) until delivered,
#: at most: past it (a long outage with a disk buffer), a lost point counts as one call.
MAX_CARRIED = 1_000_000
# What remembering and folding a series costs beyond its strings (tracemalloc: about
# 370 bytes for a counter with two tags and 63 characters in all).
_SERIES_OVERHEAD = 300

Key = tuple[Any, ...]


class _Mark:
    """A place holder in a series' key that no tag key or value can equal."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: In a key, after the name: the tags were a list (its strings follow).
LIST = _Mark("LIST")
#: In a key, after the name: the tags' values are not all strings (each follows as a
#: ``(type, value)`` pair, after the tag keys).
TYPED = _Mark("TYPED")
#: In a key, the type of a tag value ``-0.0``: a store keeps it apart from ``0.0``, which
#: Python finds equal to it.
NEGATIVE_ZERO = _Mark("NEGATIVE_ZERO")

# Counter's C loop: a mapping's count += 1 for each item of an iterable.
_count_elements = collections._count_elements  # type: ignore[attr-defined]
_first = operator.itemgetter(0)
_MAX_INT64 = 2**63 - 1
_MIN_INT64 = -(2**63)


class Aggregator:
    """The folding state of one ``Metrics``: queued calls, then one record per series."""

    def __init__(
        self,
        make_tags: Callable[[Any], Any],
        check: Callable[[Metric], None],
        host: str,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    ) -> None:
        self.make_tags = make_tags
        self.check = check
        self.host = host
        self.percentiles = tuple(percentiles)
        self._labels = tuple(_percentile_label(p) for p in self.percentiles)
        #: What the calls append: a key (a counter's +1), or (key, value).
        self.counts: deque[Key] = deque()
        self.adds: deque[tuple[Key, Any]] = deque()
        self.gauges: deque[tuple[Key, Any]] = deque()
        self.timings: deque[tuple[Key, Any]] = deque()
        #: Series already validated, per kind: each key to itself, so that a call's own
        #: key (a string subclass in it, say) finds the series' key, which it queues.
        self.valid: dict[str, dict[Any, Key]] = {COUNTER: {}, GAUGE: {}, TIMING: {}}
        #: The tags each series' points carry (its calls' tags, default tags added).
        self.tags: dict[str, dict[Key, Any]] = {COUNTER: {}, GAUGE: {}, TIMING: {}}
        #: Series of tags holding numbers or bools, by the call's tags with each value's
        #: type (their key, typed, matches no call's): validated once, as strings are.
        self.typed: dict[str, dict[Key, Key]] = {COUNTER: {}, GAUGE: {}, TIMING: {}}
        #: Per counter series: its increments (as many as its calls), then what its other
        #: calls add (their sums, apart: so an increment is folded in one C pass).
        self._sums: dict[Key, Any] = {}
        self._added: dict[Key, Any] = {}
        self._lasts: dict[Key, Any] = {}
        #: When each gauge series was last set (a running count of gauge calls).
        self._turns: dict[Key, int] = {}
        self._turn = 0
        self._timings: dict[Key, list[Any]] = {}
        #: Calls folded per counter and gauge series (a timing's record counts its own).
        self._calls: dict[str, dict[Key, int]] = {COUNTER: {}, GAUGE: {}}
        #: Calls each emitted point carries, by its time (unique): what a point lost
        #: (failed, dropped) loses, for stats().folded_lost. Set by emit().
        self.carried: dict[int, int] = {}
        self.folded = 0  # calls folded since the last emit
        self.last_emit = time.monotonic()
        #: About the bytes of the series remembered in ``valid``.
        self.series_bytes = 0
        #: Called when ``series_bytes`` passes MAX_SERIES_BYTES (wakes the worker).
        self.wake: Callable[[], None] | None = None
        #: Called before a series is first admitted: in a forked child, set until its
        #: first call starts the worker (the series are forgotten at the fork, so that
        #: each call's first goes through :meth:`admit`: see dispatch.start_at_first_call).
        self.on_new_series: Callable[[], None] | None = None

    # -- the calling side: first sight of a series -----------------------------------

    def admit(self, kind: str, name: Any, tags: Any, value: Any = 1) -> Key:
        """Validate a call whose series is not known (raises InvalidMetric); its series' key.

        The key is what the call queues (see :func:`series_key`). The points of the
        series carry the tags as the call's would have been (default tags added).
        """
        typed = _typed_call(name, tags)
        if typed is not None:
            try:
                found = self.typed[kind].get(typed)
            except Exception:  # noqa: BLE001 - a value's own __eq__ or __hash__: validated below
                found = typed = None
            if found is not None:
                if kind != COUNTER:
                    check_number(value)
                    if type(value) is int and not _MIN_INT64 <= value <= _MAX_INT64:
                        self.check_value(kind, name, tags, value)
                return found
        own = self.check_value(kind, name, tags, value)
        key = series_key(plain(name), copy_tags(tags))
        if typed is not None and key[1:2] == (TYPED,) and not _float_zero(tags):
            # (A call's typed tags find -0.0 and 0.0 equal: such series are not cached.)
            self.typed[kind][typed] = key
        known = self.valid[kind]
        if key not in known:
            if self.on_new_series is not None:
                self.on_new_series()
            known[key] = key
            self.tags[kind][key] = own
            self.series_bytes += _SERIES_OVERHEAD + sum(
                len(part) for part in key if type(part) is str
            )
            if self.series_bytes > MAX_SERIES_BYTES and self.wake is not None:
                self.wake()
        return key

    def check_value(self, kind: str, name: Any, tags: Any, value: Any) -> Any:
        """Validate one call as a series' first call is (raises InvalidMetric); its tags.

        Also what a call on a known series takes for an integer beyond 64 bits: a store
        may refuse one its first call's value did not show (InfluxDB's kaneda1 layout).
        """
        name = check_name(name)
        if kind != COUNTER:
            check_number(value)
        own = self.make_tags(tags)
        now = time.time_ns()
        self.check(Metric(name, kind, value, own, None, self.host, None, now))
        if kind == TIMING:  # what will be stored is a summary: the backend must take a dict
            summary = self._timing_value([1, value, value, value, [value]])
            self.check(Metric(name, kind, summary, own, None, self.host, None, now))
        return own

    def over_budget(self) -> bool:
        """Whether the series remembered hold more than MAX_SERIES_BYTES (emit now)."""
        return self.series_bytes > MAX_SERIES_BYTES

    # -- the worker's side -------------------------------------------------------------

    def pending(self) -> int:
        """Calls queued and not yet folded."""
        return len(self.counts) + len(self.adds) + len(self.gauges) + len(self.timings)

    def series(self) -> int:
        """Series folded and not yet emitted."""
        counters = self._sums
        both = sum(1 for key in self._added if key in counters) if self._added else 0
        return len(counters) + len(self._added) - both + len(self._lasts) + len(self._timings)

    def fold(self) -> None:
        """Fold every queued call into its series' record."""
        folded = 0
        counts = self.counts
        if counts:
            popleft = counts.popleft
            keys = [popleft() for _ in range(len(counts))]
            _count_elements(self._sums, keys)  # C: a dict += 1 per key
            folded += len(keys)
        sums = self._added
        get = sums.get
        calls = self._calls[COUNTER]
        called = calls.get
        popleft = self.adds.popleft
        for _ in range(len(self.adds)):
            key, value = popleft()
            if type(value) is not int:
                value = _plain_number(value)  # (a numpy int64 sum would wrap around)
            sums[key] = get(key, 0) + value
            calls[key] = called(key, 0) + 1
            folded += 1
        gauges = self.gauges
        if gauges:
            popleft = gauges.popleft
            pairs = [popleft() for _ in range(len(gauges))]
            self._lasts.update(pairs)  # the last value of each series wins
            _count_elements(self._calls[GAUGE], map(_first, pairs))
            # When each key was last set: emit merges one series given in two tag orders.
            self._turns.update(zip(map(_first, pairs), itertools.count(self._turn)))
            self._turn += len(pairs)
            folded += len(pairs)
        timings = self._timings
        popleft = self.timings.popleft
        for _ in range(len(self.timings)):
            key, value = popleft()
            if type(value) is not float and type(value) is not int:
                value = _plain_number(value)  # (numpy's float64 sums to inf unseen)
            record = timings.get(key)
            if record is None:
                # count, sum, min, max, then the reservoir
                timings[key] = [1, value, value, value, [value]]
            else:
                _add_timing(record, value)
            folded += 1
        self.folded += folded

    def emit(self, stamp_ns: int) -> tuple[list[Metric], int, list[Metric]]:
        """One point per folded series, how many calls they fold, and the points no store
        can take. The points are stamped ``stamp_ns``, the next ``SLOTS`` ns later, and so
        on: no two share a time (see stamps.reserve).

        Each call's value fit; the sum of many may not fit a 64-bit float (two timings
        of 1.5e308): such a point is set aside, its value the exact sum, for the caller
        to count as failed, never stored as infinity or left to stop every later emit.

        Calls whose tags were given in another order (``{"a": 1, "b": 2}``, then
        ``{"b": 2, "a": 1}``) are one series: their records are merged here. The records
        start again empty.
        """
        self.fold()
        folded = self.folded
        host = self.host
        points: list[Metric] = []
        unstorable: list[Metric] = []

        carried = self.carried

        def add(name: str, kind: str, value: Any, tags: Any, calls: int) -> None:
            ns = stamp_ns + (len(points) + len(unstorable)) * SLOTS
            point = Metric(plain(name), kind, value, _own(tags), None, host, None, ns)
            if _finite(value):
                points.append(point)
                if len(carried) < MAX_CARRIED:
                    carried[ns] = calls
            else:
                unstorable.append(point)
                carried[ns] = calls  # (counted lost at once)

        # A counter's calls: its increments, and its other calls (counted apart).
        counter_calls = self._calls[COUNTER]
        counters = self._sums
        for key, added in self._added.items():
            increments = counters.get(key, 0)
            counters[key] = increments + added
            counter_calls[key] = increments + counter_calls[key]
        for key, increments in counters.items():
            counter_calls.setdefault(key, increments)
        for kind, records in ((COUNTER, counters), (GAUGE, self._lasts)):
            merged: dict[Key, list[Any]] = {}
            turns = self._turns
            calls_of = self._calls[kind]
            for key, value in records.items():
                tags = self._tags_of(kind, key)
                series = (key[0], _canonical(tags))
                found = merged.get(series)
                calls = calls_of.get(key, 1)
                if found is None:
                    merged[series] = [key[0], tags, value, key, calls]
                    continue
                found[4] += calls
                if kind == COUNTER:
                    found[2] += value
                elif turns.get(key, 0) > turns.get(found[3], 0):  # the later call's value
                    found[2] = value
                    found[3] = key
            series_points = list(merged.values())
            if kind == GAUGE:
                # In the order of their last calls: series Kaneda keeps apart that a store
                # keeps as one (tags 200 and "200": text in InfluxDB) end on the last
                # call's value there too, the later point being stamped later.
                series_points.sort(key=lambda found: turns.get(found[3], 0))
            for name, tags, value, _, calls in series_points:
                # A gauge is one call's value, as stored without aggregation; a sum may
                # pass what a store's integers hold.
                value = _storable(value) if kind == COUNTER else _plain_number(value)
                add(name, kind, value, tags, calls)
        merged_timings: dict[Key, list[Any]] = {}
        for key, record in self._timings.items():
            tags = self._tags_of(TIMING, key)
            series = (key[0], _canonical(tags))
            found = merged_timings.get(series)
            if found is None:
                merged_timings[series] = [key[0], tags, record]
            else:
                _merge_timings(found[2], record)
        for name, tags, record in merged_timings.values():
            add(name, TIMING, self._timing_value(record), tags, record[0])
        self._sums = {}
        self._added = {}
        self._lasts = {}
        self._turns = {}
        self._timings = {}
        self._calls = {COUNTER: {}, GAUGE: {}}
        self.folded = 0
        self.last_emit = time.monotonic()
        if self.over_budget():  # bounded: forgotten series are validated again
            self.forget_series()
        for kind, known in self.valid.items():
            if len(known) > MAX_SERIES or len(self.typed[kind]) > MAX_SERIES:
                known.clear()
                self.tags[kind].clear()
                self.typed[kind].clear()
        return points, folded, unstorable

    def lost(self, items: Any) -> int:
        """How many calls the aggregated points among ``items`` (lost) carried; forgotten."""
        carried = self.carried
        if not carried:
            return 0
        pop = carried.pop
        return sum(pop(item[7], 0) for item in items)

    def settled(self, items: Any) -> None:
        """Forget the calls of ``items``, delivered (or counted lost already)."""
        carried = self.carried
        if carried:
            pop = carried.pop
            for item in items:
                pop(item[7], None)

    def discard(self) -> int:
        """Let go of the folded records (an emit that failed); how many points they were."""
        points = self.series()
        self._sums = {}
        self._added = {}
        self._lasts = {}
        self._turns = {}
        self._timings = {}
        self._calls = {COUNTER: {}, GAUGE: {}}
        self.folded = 0
        self.last_emit = time.monotonic()
        return points

    def _tags_of(self, kind: str, key: Key) -> Any:
        """The tags a point of the series ``key`` carries.

        Remembered when the series was admitted; a series forgotten meanwhile (the
        memory was emptied while a call queued it) gets them from its key again.
        """
        tags = self.tags[kind].get(key)
        if tags is not None:
            return tags
        mark = key[1] if len(key) > 1 else None
        if mark is LIST:  # (name, LIST, *strings)
            return self.make_tags(list(key[2:]))
        if mark is TYPED:  # (name, TYPED, *keys, *(type, value))
            half = (len(key) - 2) // 2
            values = [value for _, value in key[2 + half :]]
            return self.make_tags(dict(zip(key[2 : 2 + half], values, strict=True)))
        half = (len(key) - 1) // 2  # (name, *keys, *values)
        return self.make_tags(dict(zip(key[1 : 1 + half], key[1 + half :], strict=True)))

    def forget_series(self) -> None:
        """Empty the memory of validated series (each is validated again when next seen)."""
        for known in (*self.valid.values(), *self.tags.values(), *self.typed.values()):
            known.clear()
        self.series_bytes = 0

    def close(self) -> int:
        """Let go of everything: the queued calls, the records, the series remembered.

        Returns how many calls were let go unfolded (made while the last points were
        emitted, as ``close()`` ran).
        """
        left = self.pending()
        self.after_fork_in_child()
        self.forget_series()
        return left

    def _timing_value(self, record: list[Any]) -> dict[str, Any]:
        """A timing's summary: ``count`` an integer, every other field a float, whatever
        the calls' types (a store that types each field by its first write, InfluxDB's
        kaneda1 layout, refused a float sum after an interval of integer timings)."""
        count, total, low, high, sample = record
        value: dict[str, Any] = {
            "count": count,
            "sum": _as_float(total),
            "min": float(low),
            "max": float(high),
        }
        if sample:
            ordered = sorted(sample)
            for label, percentile in zip(self._labels, self.percentiles, strict=True):
                value[label] = float(_nearest_rank(ordered, percentile))
        return value

    def after_fork_in_child(self) -> None:
        """A forked child folds its own calls: the parent's are the parent's to emit."""
        for queue in (self.counts, self.adds, self.gauges, self.timings):
            queue.clear()
        self._sums = {}
        self._added = {}
        self._lasts = {}
        self._turns = {}
        self._timings = {}
        self._calls = {COUNTER: {}, GAUGE: {}}
        self.carried = {}
        self.folded = 0


def series_key(name: str, tags: Any) -> Key:
    """The key of a series: its name and its tags (validated: a list or a plain dict).

    One flat tuple (tuples of pairs cost three allocations, and the collector's time):
    a dict of strings gives its keys then its values, which is also the key a call
    builds from such tags; a list gives LIST then its strings; a dict holding numbers
    or bools gives TYPED, its keys, then each value with its type.
    """
    if type(tags) is list:
        return (name, LIST, *tags)
    values = tags.values()
    if all(type(value) is str for value in values):
        return (name, *tags, *values)
    return (name, TYPED, *tags, *map(_typed, values))


def _typed_call(name: Any, tags: Any) -> Key | None:
    """A call's tags with each value's type, for a plain dict of them; else None."""
    if type(name) is not str or type(tags) is not dict:
        return None
    return (name, *tags, *map(type, tags.values()), *tags.values())


def _typed(value: Any) -> tuple[Any, Any]:
    """A tag value with its type, as a plain bool, int, float or str (never a subclass);
    ``-0.0``'s type is NEGATIVE_ZERO (it equals ``0.0``, which a store keeps apart)."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            plain_value = kind(value)
            if kind is float and plain_value == 0.0 and math.copysign(1.0, plain_value) < 0:
                return NEGATIVE_ZERO, plain_value
            return kind, plain_value
    raise AssertionError(f"a validated tag value: {value!r}")  # pragma: no cover


def _as_float(total: Any) -> Any:
    """A sum as a float; a sum past a float's range stays the exact integer, which
    :func:`_finite` refuses."""
    try:
        return float(total)
    except OverflowError:
        return total


def _float_zero(tags: Any) -> bool:
    """Whether a dict of tags holds a float equal to zero (``0.0`` or ``-0.0``)."""
    return any(isinstance(value, float) and value == 0.0 for value in tags.values())


def _plain_number(value: Any) -> Any:
    """A call's value (validated: an int or a float, or a subclass) as the plain number."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    return int(value) if isinstance(value, int) else float(value)


def _storable(total: Any) -> Any:
    """A sum as stores take it: an integer beyond 64 bits (no store's integers hold it) as
    the float nearest to it; each call's value fit, the sum of many may not. A sum past
    a float's range stays the exact integer, which :func:`_finite` refuses."""
    if type(total) is int and not _MIN_INT64 <= total <= _MAX_INT64:
        try:
            return float(total)
        except OverflowError:
            return total
    return total


def _finite(value: Any) -> bool:
    """Whether a point's value (a number, or a timing's summary) is one a store can hold."""
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is int and not _MIN_INT64 <= value <= _MAX_INT64:
        try:
            float(value)  # one call's value (at most 2**1023) is; a sum past it is not
        except OverflowError:
            return False
    return True


def _canonical(tags: Any) -> Key:
    """The tags in one order, whatever order they were given in (each value typed)."""
    if isinstance(tags, dict):
        return tuple(sorted(((key, _typed(value)) for key, value in tags.items()), key=_first))
    return (None, *sorted(tags))


def _own(tags: Any) -> Any:
    """A point's own copy of its series' tags."""
    return dict(tags) if isinstance(tags, dict) else list(tags)


def _merge_timings(into: list[Any], other: list[Any]) -> None:
    into[0] += other[0]
    into[1] += other[1]
    into[2] = min(into[2], other[2])
    into[3] = max(into[3], other[3])
    both = into[4] + other[4]
    if len(both) > RESERVOIR:
        # Each sample is a uniform pick of its calls: keep from each in proportion to its
        # calls, so that neither's values are lost from the percentiles.
        mine = round(RESERVOIR * (into[0] - other[0]) / into[0])
        both = random.sample(into[4], min(mine, len(into[4])))
        both += random.sample(other[4], min(RESERVOIR - len(both), len(other[4])))
    into[4] = both


def _add_timing(record: list[Any], value: Any) -> None:
    record[0] += 1
    record[1] += value
    if value < record[2]:
        record[2] = value
    elif value > record[3]:
        record[3] = value
    sample = record[4]
    if len(sample) < RESERVOIR:
        sample.append(value)
    else:  # reservoir sampling: every value has the same chance to be kept
        slot = random.randrange(record[0])
        if slot < RESERVOIR:
            sample[slot] = value


def _nearest_rank(ordered: list[Any], percentile: float) -> Any:
    rank = max(1, -(-len(ordered) * percentile // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def _percentile_label(percentile: float) -> str:
    return f"p{percentile:g}".replace(".", "_")


def check_percentiles(percentiles: object) -> tuple[float, ...]:
    """Percentiles as given to ``Metrics``: numbers above 0 and at most 100."""
    from .errors import ConfigurationError

    if not isinstance(percentiles, (list, tuple)) or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 100
        for p in percentiles
    ):
        raise ConfigurationError(
            f"percentiles must be a list of numbers above 0 and at most 100, got {percentiles!r} "
            "(for example percentiles=(50, 90, 99))"
        )
    labels: dict[str, float] = {}
    for percentile in percentiles:
        label = _percentile_label(percentile)
        if label in labels and labels[label] != percentile:
            raise ConfigurationError(
                f"percentiles {labels[label]!r} and {percentile!r} would both be stored as "
                f"{label!r} (six significant digits): keep one"
            )
        labels[label] = percentile
    return tuple(float(p) for p in percentiles)
