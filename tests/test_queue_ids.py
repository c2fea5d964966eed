"""The ids a queue gives metrics reported without one: the same in every send of a batch.

A batch is sent again when its answer came late or was lost although the worker or the
broker had it (a ZeroMQ worker slower than ``timeout``, a connection to Redis or
RabbitMQ dropped after the publish): both copies are stored, and a store keying by id
keeps one only if they carry the same ids.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy
from kaneda_core.backends import MemoryBackend
from kaneda_core.message import IdMaker, batch_document, decode_batch, encode_batch
from kaneda_core.model import host_name, timestamp_from_ns
from kaneda_core.worker import MessageHandler, QueueBackend, Verdict

FAST_RETRY = RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.02, jitter=0)
PAST_NS = 1_600_000_000_123_456_789


class LostAnswerQueue(QueueBackend):
    """A broker that takes every batch, and whose answer to the first ``lose`` is lost."""

    def __init__(self, lose: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.lose = lose
        self.messages: list[str] = []

    def send(self, batch: Sequence[Metric]) -> None:
        self.messages.append(encode_batch(batch, self.new_id))  # the broker has it
        if self.lose:
            self.lose -= 1
            raise ConnectionResetError("connection reset before the broker's confirm")

    def stored(self) -> list[Metric]:
        """What a worker stores: every metric of every message, copies included."""
        return [metric for message in self.messages for metric in decode_batch(message)]


def ids_by_metric(stored: list[Metric]) -> dict[tuple[Any, ...], set[Any]]:
    """The ids each metric (by name, kind, value, tags, time and host) was stored with."""
    found: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    for metric in stored:
        value, tags = repr(metric.value), repr(metric.tags)
        found[(metric.name, metric.kind, value, tags, metric.epoch_ns, metric.host)].add(metric.id)
    return found


# -- a batch sent again -----------------------------------------------------------------


def test_a_batch_sent_again_after_a_lost_answer_carries_the_same_ids() -> None:
    queue = LostAnswerQueue(lose=2)
    metrics = Metrics(queue, retry=FAST_RETRY, flush_interval=60)
    metrics.gauge("load", 0.5)
    metrics.increment("requests", {"route": "/"})
    metrics.event("deploy", "v2")
    metrics.custom("job", "run", {"took": 3}, id_="job-7")
    assert metrics.flush(5) == 0
    metrics.close()
    assert len(queue.messages) == 3  # the batch, sent three times: all three stored
    stored = queue.stored()
    assert len(stored) == 12
    found = ids_by_metric(stored)
    assert len(found) == 4 and all(len(ids) == 1 for ids in found.values()), found
    assert len({id_ for ids in found.values() for id_ in ids}) == 4
    assert {"job-7"} in found.values()  # the caller's own id, as given


def test_aggregated_points_sent_again_carry_the_same_ids_none_shared() -> None:
    queue = LostAnswerQueue()
    metrics = Metrics(queue, retry=FAST_RETRY, aggregate=True, flush_interval=60)
    for n in range(50):
        metrics.increment("hits", {"shard": str(n % 5)})
        metrics.gauge("depth", n, {"shard": str(n % 3)})
        metrics.timing("took", n / 10)
    metrics.gauge("direct", 1)
    assert metrics.flush(5) == 0
    metrics.close()
    found = ids_by_metric(queue.stored())
    assert len(found) == 5 + 3 + 1 + 1
    assert all(len(ids) == 1 for ids in found.values()), found
    assert len({id_ for ids in found.values() for id_ in ids}) == len(found)


def test_the_id_of_a_metric_this_process_stamped_is_its_time_with_the_token() -> None:
    queue = LostAnswerQueue(lose=0)
    metrics = Metrics(queue, batching=False)
    metrics.gauge("load", 0.5)
    [metric] = queue.stored()
    assert queue.new_id is not None
    assert metric.id == f"{queue.new_id.token}-{metric.time_ns}"


def test_a_forked_child_gives_ids_of_its_own() -> None:
    queue = LostAnswerQueue(lose=0)
    metric = Metric("a", "gauge", 1, {}, None, host_name(), None, PAST_NS)
    parent_id = queue.new_id.id_of(metric)  # type: ignore[union-attr]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            queue.after_fork()
            os.write(write, queue.new_id.id_of(metric).encode())  # type: ignore[union-attr]
        finally:
            os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    child_id = os.read(read, 100).decode()
    os.close(read)
    assert child_id != parent_id and child_id.endswith(f"-{PAST_NS}")
    assert parent_id == queue.new_id.id_of(metric)  # type: ignore[union-attr]


def test_without_assign_ids_no_id_is_made() -> None:
    queue = LostAnswerQueue(assign_ids=False)
    metrics = Metrics(queue, retry=FAST_RETRY, flush_interval=60)
    metrics.gauge("load", 0.5)
    metrics.forward([Metric.create("made", "gauge", 1)])
    assert metrics.flush(5) == 0
    metrics.close()
    assert [m.id for m in queue.stored()] == [None] * 4


# -- records made elsewhere ---------------------------------------------------------------

text = st.text(alphabet="abc", min_size=1, max_size=2)
#: Few times and hosts: records made elsewhere share them often.
shared_times = st.sampled_from([PAST_NS, PAST_NS + 100, 0])
hosts = st.sampled_from([host_name(), "app-7", "app-8"])


@st.composite
def made_elsewhere(draw: Any) -> Metric:
    """A record another process reported, or one built by hand, with or without an id."""
    ns = draw(shared_times)
    when = draw(st.sampled_from([None, timestamp_from_ns(ns)]))
    id_ = draw(st.one_of(st.none(), st.sampled_from(["given-1", "given-2"])))
    return Metric(draw(text), "gauge", draw(st.integers(0, 2)), {}, when, draw(hosts), id_, ns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(made_elsewhere(), min_size=1, max_size=8), st.integers(1, 2))
def test_forwarded_records_sharing_a_time_get_ids_of_their_own_kept_when_sent_again(
    records: list[Metric], lose: int
) -> None:
    queue = LostAnswerQueue(lose=lose)
    metrics = Metrics(queue, retry=FAST_RETRY, flush_interval=60)
    metrics.gauge("own", 1)  # a call of this process, its time among theirs
    metrics.forward(records)
    assert metrics.flush(5) == 0
    metrics.close()
    copies = [decode_batch(message) for message in queue.messages]
    assert len(copies) == lose + 1
    first = [metric.id for metric in copies[0]]
    assert all([metric.id for metric in copy] == first for copy in copies)  # kept
    made = [id_ for id_, record in zip(first[1:], records, strict=True) if record.id is None]
    assert len(set(made)) == len(made)  # never shared with another record's
    assert not set(made) & {first[0], "given-1", "given-2"}
    given_ids = [id_ for id_, record in zip(first[1:], records, strict=True) if record.id]
    assert given_ids == [record.id for record in records if record.id]


def not_taken_for_stamped(metric: Metric) -> bool:
    """Whether ``metric`` does not look like one this process stamped (see IdMaker.id_of)."""
    return metric[4] is not None or metric.host != host_name()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(made_elsewhere().filter(not_taken_for_stamped), max_size=8),
    st.lists(st.integers(1, 10**18), max_size=8, unique=True),
)
def test_an_encoded_batch_never_gives_two_metrics_one_id(
    records: list[Metric], stamped_times: list[int]
) -> None:
    # Records handed to a send as they are, times shared, and metrics this process
    # stamped (each a time of its own): no id twice in one message; a stamped metric's
    # id is the same in every message, a record's a new one each time.
    stamped = [Metric("own", "gauge", 1, {}, None, host_name(), None, ns) for ns in stamped_times]
    batch = [*records, *stamped]
    make = IdMaker()
    first = [row[4] for row in batch_document(batch, make)["metrics"]]
    second = [row[4] for row in batch_document(batch, make)["metrics"]]
    for ids in (first, second):
        made = [id_ for id_, metric in zip(ids, batch, strict=True) if metric.id is None]
        assert len(set(made)) == len(made)
        assert not set(made) & {"given-1", "given-2"}
    assert first[len(records) :] == second[len(records) :]
    assert first[len(records) :] == [f"{make.token}-{ns}" for ns in stamped_times]
    made_twice = [
        (a, b) for a, b, record in zip(first, second, records, strict=False) if record.id is None
    ]
    assert all(a != b for a, b in made_twice)  # a new id each time: none given twice


def test_ids_made_by_a_plain_function_are_its_own() -> None:
    # A transport's own ``new_id`` (any callable): called for each metric without one.
    made = iter(range(100))
    document = batch_document(
        [Metric.create("a", "gauge", 1), Metric.create("b", "gauge", 2, id="b-1")],
        lambda: f"n-{next(made)}",
    )
    assert [row[4] for row in document["metrics"]] == ["n-0", "b-1"]


# -- a worker that delivers to another queue --------------------------------------------


class DownQueue(QueueBackend):
    """A queue whose broker is down."""

    def send(self, batch: Sequence[Metric]) -> None:
        raise DeliveryError("broker down", retryable=True)


def produced(name: str, id_: str | None = None) -> Metric:
    return Metric(name, "gauge", 1, {}, timestamp_from_ns(PAST_NS), "app-7", id_, PAST_NS)


def test_a_worker_delivering_to_a_queue_gives_ids_once_and_still_judges_its_messages() -> None:
    queue = LostAnswerQueue()
    handler = MessageHandler(Metrics(queue, retry=FAST_RETRY))
    outcome = handler.handle(encode_batch([produced("a"), produced("b"), produced("c", "c-1")]))
    assert outcome.verdict is Verdict.STORED
    first, second = (decode_batch(message) for message in queue.messages)
    assert [m.id for m in first] == [m.id for m in second]
    assert len({m.id for m in first}) == 3 and first[2].id == "c-1"
    handler.close()
    # A failure of the queue is the message's: its metrics carry the ids given them.
    down = MessageHandler(Metrics(DownQueue(), retry=RetryPolicy(attempts=1)))
    outcome = down.handle(encode_batch([produced("a")]))
    assert outcome.verdict is Verdict.RETRY and "broker down" in outcome.reason
    down.close(timeout=1)


@pytest.mark.parametrize("assign_ids", [True, False])
def test_a_worker_delivering_to_a_store_stores_what_arrived(assign_ids: bool) -> None:
    store = MemoryBackend()
    handler = MessageHandler(Metrics(store, retry=FAST_RETRY))
    handler.handle(encode_batch([produced("a")], IdMaker() if assign_ids else None))
    handler.close()
    assert (store.metrics[0].id is not None) is assign_ids


def test_a_batch_sent_from_memory_then_kept_in_the_file_keeps_its_ids(tmp_path: Any) -> None:
    # A disk buffer whose file fails delivers from memory; a batch whose answer was lost
    # then waits in the file, back meanwhile, which would give it ids of its own.
    import time

    class FileBackWhileSending(LostAnswerQueue):
        def send(self, batch: Sequence[Metric]) -> None:
            disk._retry_at = 0.0  # the file works again (a disk given room)
            super().send(batch)

    queue = FileBackWhileSending(lose=1)
    metrics = Metrics(
        queue,
        buffer_path=str(tmp_path / "buffer.sqlite"),
        flush_interval=60,
        retry=RetryPolicy(attempts=1, initial_delay=0.01),  # kept, for the next round
    )
    disk = metrics._dispatcher.disk  # type: ignore[attr-defined]
    disk._retry_at = time.monotonic() + 3600  # as after a failed write: metrics in memory
    for n in range(20):
        metrics.gauge("g", n)
    metrics.flush(10)  # sent from memory, its answer lost: kept, written to the file
    assert metrics.flush(10) == 0
    metrics.close()
    ids = ids_by_metric(queue.stored())
    assert len(ids) == 20 and len(queue.messages) == 2
    assert all(len(found) == 1 for found in ids.values()), ids
