"""The clock calls are stamped with: the system's, or spread where its readings repeat."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaneda_core import stamps
from kaneda_core.stamps import SLOTS, clock_step_ns, spread_clock, stamping_clock


def stepping(step_ns: int, start: int = 1_700_000_000_000_000_000) -> Callable[[], int]:
    """A clock that moves on by ``step_ns`` every ``reads_per_step`` readings (10)."""
    readings = itertools.count()
    return lambda: start + next(readings) // 10 * step_ns


def test_a_clock_reading_in_nanoseconds_is_used_as_it_is() -> None:
    assert clock_step_ns(time.time_ns) == 0  # Linux: successive readings never repeat
    assert stamping_clock(time.time_ns) is time.time_ns
    assert stamps.time_ns is time.time_ns  # nothing added to the calls here


def test_the_step_of_a_coarse_clock_is_found() -> None:
    assert clock_step_ns(stepping(1_000)) == 1_000  # macOS: microseconds
    assert clock_step_ns(stepping(15_625_000)) == 15_625_000
    assert clock_step_ns(lambda: 42) == stamps.STILL_CLOCK_STEP_NS  # never moved


def test_a_clock_stepping_by_no_more_than_two_slots_is_used_as_it_is() -> None:
    clock = stepping(150)
    assert stamping_clock(clock) is clock  # calls, over 100 ns each, fall in distinct steps


@given(
    step=st.integers(min_value=2 * SLOTS, max_value=20_000_000),
    per_step=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=20),
)
def test_calls_in_one_step_get_distinct_times_short_of_the_next_step(
    step: int, per_step: list[int]
) -> None:
    value = [1_700_000_000_000_000_000]
    spread = spread_clock(lambda: value[0], step)
    seen: list[int] = []
    for calls in per_step:
        calls = min(calls, step // SLOTS)  # a call takes over 100 ns: no more fit one step
        times = [spread() for _ in range(calls)]
        assert all(value[0] <= t < value[0] + step for t in times)
        # Moved on by whole slots: the last two digits stay the reading's, for the slot.
        assert all((t - value[0]) % SLOTS == 0 for t in times)
        seen += times
        value[0] += step
    assert len(set(seen)) == len(seen)


def test_threads_reading_one_coarse_step_never_share_a_time() -> None:
    spread = spread_clock(lambda: 1_700_000_000_000_000_000, 15_625_000)
    results: list[list[int]] = [[] for _ in range(4)]

    def read(into: list[int]) -> None:
        into.extend(spread() for _ in range(30_000))

    threads = [threading.Thread(target=read, args=(into,)) for into in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [t for into in results for t in into]
    assert len(set(every)) == len(every) == 120_000


def _stamped_across_a_step(step_ns: int, calls: int = 2000) -> tuple[list[int], list[int], int]:
    """The times of calls before and after the wall clock is stepped by ``step_ns``; the
    slot of the calls after."""
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    from kaneda_core.testing import wall_clock_stepped

    backend = MemoryBackend()
    with wall_clock_stepped() as offset, Metrics(backend, flush_interval=60) as metrics:
        for i in range(calls):
            metrics.increment("hits")
            metrics.gauge("level", i)
        offset[0] = step_ns
        for i in range(calls):
            metrics.increment("hits")
            metrics.gauge("level", i)
        assert metrics.flush(5) == 0
        after = stamps.slot
    times = [m.time_ns for m in backend.metrics]
    assert all(t is not None for t in times)
    half = len(times) // 2
    return times[:half], times[half:], after  # type: ignore[return-value]


def test_a_clock_stepped_back_a_little_gives_no_time_twice() -> None:
    # 50 ms back, as NTP steps a clock: the calls hold on just past the last time given.
    slot = stamps.process_slot()
    before, after, slot_after = _stamped_across_a_step(-50_000_000)
    assert len(set(before + after)) == len(before + after)  # no point overwrites another
    assert min(after) > max(before) and slot_after == slot
    assert all(t % SLOTS == slot for t in before + after)


def test_a_clock_stepped_back_an_hour_keeps_its_time_in_another_slot() -> None:
    # Holding on would stamp an hour of calls within moments: the calls keep the clock's
    # time, in a slot this process never stamped those times in.
    slot = stamps.process_slot()
    before, after, slot_after = _stamped_across_a_step(-3600 * 10**9)
    assert len(set(before + after)) == len(before + after)
    assert slot_after != slot and all(t % SLOTS == slot_after for t in after)
    assert max(before) - 3601 * 10**9 < min(after) < max(before) - 3599 * 10**9
    # The former slot stays this process's until the clock passes its last time.
    assert any(last == max(before) for _, last in stamps._retired)


def test_a_clock_stepped_forward_is_followed_at_once() -> None:
    slot = stamps.process_slot()
    before, after, slot_after = _stamped_across_a_step(3600 * 10**9)
    assert min(after) > max(before) + 3599 * 10**9 and slot_after == slot


@pytest.mark.parametrize("step_ns", [-50_000_000, -3600 * 10**9], ids=["held", "another slot"])
def test_threads_reporting_across_a_step_back_never_share_a_time(step_ns: int) -> None:
    # A thread stamps, is switched out, and stores its time after others stored theirs:
    # the last time given can move back, or ahead with a time read before the step.
    import sys

    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    from kaneda_core.testing import wall_clock_stepped

    backend = MemoryBackend()
    metrics = Metrics(backend, flush_interval=60, max_buffer=10**6)
    retired = len(stamps._retired)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switched as often as they can be
    try:
        with wall_clock_stepped() as offset:

            def report(thread: int) -> None:
                for n in range(20_000):
                    metrics.increment("hits", tags={"t": str(thread)})
                    if thread == 0 and n == 5_000:
                        offset[0] = step_ns

            threads = [threading.Thread(target=report, args=(t,)) for t in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert metrics.flush(30) == 0
            switches = len(stamps._retired) - retired
    finally:
        sys.setswitchinterval(interval)
        metrics.close()
    times = [m.time_ns for m in backend.metrics]
    assert len(times) == 80_000 and len(set(times)) == 80_000
    # One change of slot per step, and one more for a call that read the clock before the
    # step and the slot after a change (its time then looks like a step of its own).
    assert switches == 0 if step_ns > -stamps.HOLD_NS else 1 <= switches <= 8
