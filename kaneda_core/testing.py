"""The backend contract as a reusable pytest suite.

Every backend, in this repository or a third party's, proves itself by subclassing
:class:`BackendContract` in a test module::

    from kaneda_core.testing import BackendContract

    class TestContract(BackendContract):
        @pytest.fixture
        def backend(self):
            backend = MyBackend(...)
            yield backend
            backend.close()

        def stored(self, backend):
            return [...]          # every metric the store holds, read back as Metric

The suite reports through :class:`~kaneda_core.Metrics` and reads back with
:meth:`BackendContract.stored`, so it checks what really reached the store. Each test
uses names of its own, so a store shared between tests is fine. Capability flags say
what the store does not keep (events, custom metrics, tags, list tags, ids, the host,
the metric's own time); the suite then checks that the backend refuses such metrics
at the call (``check``) instead of losing them, and does not compare what the store
cannot give back.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from .backend import Backend, sends_records
from .errors import InvalidMetric
from .metrics import Metrics
from .model import Metric, host_name
from .plugins import get_plugin_manager


class BackendContract:
    """The checks every backend passes. Subclass it as ``TestContract`` and fill in the fixtures."""

    #: Whether the store keeps events; if not, ``check`` must refuse them at the call.
    stores_events: ClassVar[bool] = True
    #: Whether the store keeps custom metrics (``metrics.custom``); if not, ``check``
    #: must refuse them at the call.
    stores_custom: ClassVar[bool] = True
    #: Whether the store keeps tags; if not, ``check`` must refuse tagged metrics.
    stores_tags: ClassVar[bool] = True
    #: Whether the store keeps the reporting host (``Metric.host``); if not, the host
    #: ``stored()`` gives back is not compared.
    stores_host: ClassVar[bool] = True
    #: Whether the store keeps each metric's own time; if not (the store stamps what it
    #: receives), the timestamps ``stored()`` gives back are not compared.
    stores_timestamps: ClassVar[bool] = True
    #: Whether the backend stores tags given as a list of strings.
    supports_list_tags: ClassVar[bool] = True
    #: Whether the backend keeps one copy per ``id_`` (re-sent metrics do not duplicate).
    supports_ids: ClassVar[bool] = True
    #: Whether the store keeps every number as a float (InfluxDB fixes a field's type).
    numbers_are_floats: ClassVar[bool] = False
    #: The finest time step the store keeps.
    timestamp_resolution: ClassVar[timedelta] = timedelta(microseconds=1)
    #: Whether what a forked child stores is seen from the parent: True for a server;
    #: False for a store in the test process's own memory (a mock), which the child has
    #: a copy of: the fork test then has the child read its metric back itself.
    store_survives_fork: ClassVar[bool] = True
    #: How many metrics the big-batch test sends in one batch.
    big_batch: ClassVar[int] = 3000

    # -- what a backend's test module provides -----------------------------------

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        """The backend under test, connected to a working store."""
        raise NotImplementedError("override the backend fixture")

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        """The backend configured for a store that is not there (a closed port)."""
        pytest.skip("this backend gives no unreachable_backend fixture (no server to be down)")

    @pytest.fixture
    def backend_at(self) -> Callable[[str, int], Backend]:
        """``backend_at(host, port)``: the backend for a server at that address, with a
        timeout of about 0.3 s. Used to check that a slow server cannot hold a call."""
        pytest.skip("this backend gives no backend_at fixture (no server to be slow)")

    def stored(self, backend: Backend) -> Sequence[Metric]:
        """Every metric the store holds, read back from the store itself."""
        raise NotImplementedError("override stored()")

    def normalize_tags(self, tags: Any) -> Any:
        """Tags as the store gives them back (InfluxDB, for one, keeps strings only)."""
        return tags

    # -- helpers -----------------------------------------------------------------

    @pytest.fixture
    def prefix(self) -> str:
        """A name prefix of this test's own."""
        return f"contract.{uuid.uuid4().hex[:10]}."

    def mine(self, backend: Backend, prefix: str) -> list[Metric]:
        """The stored metrics whose names start with ``prefix``."""
        return [m for m in self.stored(backend) if m.name.startswith(prefix)]

    def report(self, backend: Backend, calls: Any, **options: Any) -> Metrics:
        """Run ``calls(metrics)`` on a batching Metrics over ``backend`` and flush it."""
        metrics = Metrics(backend, **options)
        calls(metrics)
        left = metrics.flush(timeout=30)
        assert left == 0, f"{left} metrics were still queued after 30s"
        return metrics

    def tags(self, tags: dict[str, Any]) -> dict[str, Any]:
        """``tags``, or none for a store that keeps no tags."""
        return tags if self.stores_tags else {}

    def assert_refused(self, backend: Backend, prefix: str, call: Any) -> None:
        """``call(metrics)`` raises InvalidMetric at the call, and nothing is stored."""
        metrics = Metrics(backend)
        with pytest.raises(InvalidMetric):
            call(metrics)
        assert metrics.flush(10) == 0
        assert self.mine(backend, prefix) == []

    def summary(self, metric: Metric) -> tuple[Any, ...]:
        """What must survive the trip: kind, name, value, tags."""
        value = metric.value
        if isinstance(value, dict):
            value = tuple(sorted(value.items()))
        return (metric.kind, metric.name, value, repr(self.normalize_tags(metric.tags)))

    # -- the contract --------------------------------------------------------------

    def test_every_kind_is_stored(self, backend: Backend, prefix: str) -> None:
        """gauge, increment, decrement, timing, event and custom all reach the store.

        (Events and custom metrics only where the store keeps them.)
        """
        tags = self.tags
        expected: list[tuple[str, str, Any, dict[str, Any]]] = [
            ("gauge", prefix + "users", 13, tags({"plan": "free"})),
            ("gauge", prefix + "load", 0.75, {}),
            ("counter", prefix + "views", 1, tags({"page": "home"})),
            ("counter", prefix + "occupation", -1, {}),
            ("timing", prefix + "request_time", 0.25, tags({"route": "/"})),
        ]
        if self.stores_events:
            expected.append(
                ("event", prefix + "signup", "New user registered", tags({"source": "web"}))
            )
        if self.stores_custom:
            expected.append(
                ("query_time", prefix + "search", {"start_time": 120, "end_time": 230}, {})
            )
            expected.append(("share", prefix + "ratio", 0.5, {}))

        def calls(metrics: Metrics) -> None:
            metrics.gauge(prefix + "users", 13, tags=tags({"plan": "free"}))
            metrics.gauge(prefix + "load", 0.75)
            metrics.increment(prefix + "views", tags=tags({"page": "home"}))
            metrics.decrement(prefix + "occupation")
            metrics.timing(prefix + "request_time", 0.25, tags=tags({"route": "/"}))
            if self.stores_events:
                metrics.event(
                    prefix + "signup", "New user registered", tags=tags({"source": "web"})
                )
            if self.stores_custom:
                metrics.custom(
                    prefix + "search", "query_time", {"start_time": 120, "end_time": 230}
                )
                metrics.custom(prefix + "ratio", "share", 0.5)

        stats = self.report(backend, calls).stats()
        stored = self.mine(backend, prefix)
        want = sorted(self.summary(_fake(*row)) for row in expected)
        assert sorted(self.summary(m) for m in stored) == want
        if self.stores_host:
            assert {m.host for m in stored} == {host_name()}
        assert stats.sent == len(expected) and stats.failed == 0

    def test_what_the_store_cannot_keep_is_refused_at_the_call(
        self, backend: Backend, prefix: str
    ) -> None:
        """Events, custom metrics or tags the store does not keep raise InvalidMetric at the
        call, never vanish; those it keeps are accepted."""
        cases: list[tuple[bool, Callable[[Metrics], None]]] = [
            (self.stores_events, lambda m: m.event(prefix + "e", "text")),
            (self.stores_custom, lambda m: m.custom(prefix + "c", "share", 0.5)),
            (self.stores_tags, lambda m: m.gauge(prefix + "t", 1, tags={"a": "b"})),
        ]
        for kept, call in cases:
            if not kept:
                self.assert_refused(backend, prefix, call)
        kept_calls = [call for kept, call in cases if kept]
        metrics = self.report(backend, lambda m: [call(m) for call in kept_calls])
        assert metrics.stats().sent == len(kept_calls)
        assert len(self.mine(backend, prefix)) == len(kept_calls)

    def test_value_types_survive(self, backend: Backend, prefix: str) -> None:
        """Integers stay integers and floats stay floats (or all are floats, if so declared)."""

        def calls(metrics: Metrics) -> None:
            metrics.gauge(prefix + "int", 7)
            metrics.gauge(prefix + "float", 7.5)
            metrics.gauge(prefix + "negative", -3)

        self.report(backend, calls)
        values = {m.name: m.value for m in self.mine(backend, prefix)}
        assert values == {prefix + "int": 7, prefix + "float": 7.5, prefix + "negative": -3}
        if self.numbers_are_floats:
            assert {type(v) for v in values.values()} == {float}
        else:
            assert type(values[prefix + "int"]) is int
            assert type(values[prefix + "float"]) is float

    def test_a_batch_of_thousands(self, backend: Backend, prefix: str) -> None:
        """Thousands of metrics in one batch are all stored, none twice."""
        count = self.big_batch

        def calls(metrics: Metrics) -> None:
            for i in range(count):
                metrics.gauge(prefix + "big", i, tags=self.tags({"shard": str(i % 7)}))

        self.report(backend, calls, batch_size=count, flush_interval=60)
        stored = self.mine(backend, prefix)
        assert len(stored) == count
        assert sorted(m.value for m in stored) == list(range(count))

    def test_dict_tags(self, backend: Backend, prefix: str) -> None:
        """Tags given as a dict are stored with their keys and values (or refused at the call)."""
        tags = {"route": "/users", "code": "200", "region": "eu-west-1"}
        if not self.stores_tags:
            self.assert_refused(backend, prefix, lambda m: m.increment(prefix + "r", tags=tags))
            return
        self.report(backend, lambda m: m.increment(prefix + "requests", tags=tags))
        [metric] = self.mine(backend, prefix)
        assert self.normalize_tags(metric.tags) == self.normalize_tags(tags)

    def test_list_tags(self, backend: Backend, prefix: str) -> None:
        """Tags given as a list are stored, or refused at the call with advice."""
        tags = ["login", "edit_profile"]
        if not (self.supports_list_tags and self.stores_tags):
            self.assert_refused(
                backend, prefix, lambda m: m.timing(prefix + "profile_load_time", 230, tags=tags)
            )
            return
        self.report(backend, lambda m: m.timing(prefix + "profile_load_time", 230, tags=tags))
        [metric] = self.mine(backend, prefix)
        assert list(metric.tags) == tags

    def test_ids_do_not_duplicate(self, backend: Backend, prefix: str) -> None:
        """A metric reported twice with one ``id_`` is stored once, and keeps its id.

        Backends that do not key by id (``supports_ids = False``) store both reports,
        each still carrying the id. A store without custom metrics refuses them.
        """
        if not self.stores_custom:
            self.assert_refused(
                backend, prefix, lambda m: m.custom(prefix + "r", "xml", {"s": 1}, id_="2B75D750")
            )
            return

        def calls(metrics: Metrics) -> None:
            for _ in range(2):
                metrics.custom(prefix + "response", "xml", {"status": "ok"}, id_="2B75D750")
                metrics.flush(10)

        self.report(backend, calls)
        stored = self.mine(backend, prefix)
        copies = 1 if self.supports_ids else 2
        assert [m.id for m in stored] == ["2B75D750"] * copies

    def test_timestamps_are_the_metrics_own(self, backend: Backend, prefix: str) -> None:
        """The stored time is the metric's timestamp, not the time of the write.

        A store that stamps what it receives (``stores_timestamps = False``) must still
        store the metric, once.
        """
        when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone.utc)
        metric = Metric.create(prefix + "past", "gauge", 1, timestamp=when)
        backend.send([metric])
        [stored] = self.mine(backend, prefix)
        assert (stored.name, stored.value) == (prefix + "past", 1)
        if not self.stores_timestamps:
            return
        resolution = self.timestamp_resolution
        assert abs(stored.timestamp - when) < resolution, (stored.timestamp, when)

    def test_timestamps_of_calls(self, backend: Backend, prefix: str) -> None:
        """A call is stamped when it is made, in UTC."""
        before = datetime.now(timezone.utc)
        self.report(backend, lambda m: m.gauge(prefix + "now", 1))
        after = datetime.now(timezone.utc)
        [stored] = self.mine(backend, prefix)
        assert stored.value == 1
        if not self.stores_timestamps:
            return
        slack = self.timestamp_resolution
        assert before - slack <= stored.timestamp <= after + slack

    def test_a_check_given_records_says_what_it_says_of_metrics(
        self, backend: Backend, prefix: str
    ) -> None:
        """A backend that declares ``checks_records`` refuses a record exactly when it
        refuses the Metric made of it, for the same reason; the reporting calls give any
        other backend's check Metrics only."""
        given: list[type] = []
        check = backend.check
        own_check = vars(backend).get("check")  # a backend may set its check per instance

        def spy(metric: Any) -> None:
            given.append(type(metric))
            check(metric)

        backend.check = spy  # type: ignore[method-assign]
        try:
            metrics = Metrics(backend, batch_size=1000, flush_interval=3600)
            metrics.gauge(prefix + "g", 1.5, tags=self.tags({"a": "b"}))
            metrics.increment(prefix + "c", tags=self.tags({"a": "b"}))
            if self.stores_events:
                metrics.event(prefix + "e", "text")
            metrics.close(0)
        finally:
            if own_check is None:
                del backend.check
            else:
                backend.check = own_check  # type: ignore[method-assign]
        if backend.checks_records:
            assert given and set(given) == {tuple}, given
        else:
            assert set(given) <= {Metric}, given
        if not backend.checks_records:
            return
        host = host_name()
        records = [
            (prefix + "g", "gauge", 7, {"a": "b"}, None, host, None, time.time_ns()),
            (prefix + "g", "gauge", 2**70, {}, None, host, None, time.time_ns()),
            (prefix + "l", "counter", 1, ["a", "b"], None, host, None, time.time_ns()),
            (prefix + "h", "gauge", 1, {"host": "x"}, None, host, None, time.time_ns()),
            (prefix + "t", "timing", 0.5, {"k": "v"}, None, host, "id-1", time.time_ns()),
            (prefix + "e", "event", "text", {}, None, host, None, time.time_ns()),
            (prefix + "x", "custom", {"f": 1, "s": "t"}, {}, None, host, None, time.time_ns()),
            (prefix + "n", "custom", {"f": {"nested": 1}}, {}, None, host, None, time.time_ns()),
        ]

        def verdict(metric: Any) -> str | None:
            try:
                backend.check(metric)
            except InvalidMetric as error:
                return str(error)
            return None

        for record in records:
            as_record = verdict(record)
            assert as_record == verdict(tuple.__new__(Metric, record)), record

    def test_a_send_given_records_stores_what_it_stores_of_metrics(
        self, backend: Backend, prefix: str
    ) -> None:
        """A backend whose ``send`` takes records (``sends_records``) is handed what the
        calls queued, and stores a batch of records mixed with Metrics as it stores the
        same Metrics; any other backend's send is given Metrics only."""
        given: list[type] = []
        send = backend.send
        own_send = vars(backend).get("send")

        def spy(batch: Sequence[Any]) -> Any:
            given.extend(type(metric) for metric in batch)
            return send(batch)

        backend.send = spy  # type: ignore[method-assign]
        try:
            tags = self.tags({"a": "b"})
            with filters_set_aside():  # a filter is given Metrics, and so is send then
                self.report(backend, lambda m: m.gauge(prefix + "spied", 1.5, tags=tags))
        finally:
            if own_send is None:
                del backend.send
            else:
                backend.send = own_send  # type: ignore[method-assign]
        takes_records = sends_records(backend)
        assert set(given) == ({tuple} if takes_records else {Metric}), given
        if not takes_records:
            return
        host, now = host_name(), time.time_ns()

        def records(group: str) -> list[tuple[Any, ...]]:
            name = prefix + group
            made: list[tuple[Any, ...]] = [
                (name + "g", "gauge", 7.5, self.tags({"a": "b"}), None, host, None, now),
                (name + "c", "counter", 1, {}, None, host, None, now + 1000),
                (name + "t", "timing", 0.25, self.tags({"k": "v"}), None, host, None, now + 2000),
            ]
            if self.stores_events:
                made.append((name + "e", "event", "text", {}, None, host, None, now + 3000))
            return made

        mixed = [r if n % 2 else tuple.__new__(Metric, r) for n, r in enumerate(records("r."))]
        backend.send(mixed)  # type: ignore[arg-type]  # records: see Backend.sends_records
        backend.send([tuple.__new__(Metric, record) for record in records("m.")])

        def stored_as(group: str) -> list[tuple[Any, ...]]:
            mine = self.mine(backend, prefix + group)
            return sorted(
                (m.kind, m.name[len(prefix + group) :], m.epoch_ns, *self.summary(m)[2:])
                for m in mine
            )

        assert stored_as("r.") == stored_as("m.")
        assert len(stored_as("r.")) == len(mixed)

    def test_close_is_idempotent(self, backend: Backend) -> None:
        """Closing twice is harmless."""
        backend.close()
        backend.close()

    def test_aggregated_points_are_stored(self, backend: Backend, prefix: str) -> None:
        """With ``aggregate=True``: one point per series, sums, last values, timing summaries.

        A store that keeps no dicts (``stores_custom = False``) cannot keep a timing's
        summary: the timing is refused at the call.
        """
        tags = {"route": "/"} if self.stores_tags else None
        if not self.stores_custom:
            with Metrics(backend, aggregate=True) as metrics, pytest.raises(InvalidMetric):
                metrics.timing(f"{prefix}took", 0.5, tags=tags)

        def calls(metrics: Metrics) -> None:
            for _ in range(5):
                metrics.increment(f"{prefix}hits", tags=tags)
            metrics.decrement(f"{prefix}hits", tags=tags)
            for level in (3, 1, 4):
                metrics.gauge(f"{prefix}level", level, tags=tags)
            if self.stores_custom:
                for took in (0.5, 0.25, 1.0, 0.75):
                    metrics.timing(f"{prefix}took", took, tags=tags)

        self.report(backend, calls, aggregate=True)
        stored = {m.name: m for m in self.mine(backend, prefix)}
        assert stored[f"{prefix}hits"].value == 4
        assert stored[f"{prefix}level"].value == 4  # the last
        if not self.stores_custom:
            assert sorted(stored) == [f"{prefix}hits", f"{prefix}level"]
            return
        assert sorted(stored) == [f"{prefix}hits", f"{prefix}level", f"{prefix}took"]
        took = stored[f"{prefix}took"].value
        assert (took["count"], took["sum"], took["min"], took["max"]) == (4, 2.5, 0.25, 1.0)
        assert took["p50"] == 0.5 and took["p99"] == 1.0

    def test_after_a_fork_parent_and_child_each_deliver_on_their_own(
        self, backend: Backend, prefix: str
    ) -> None:
        """A forked child never writes on its parent's connection (``after_fork``)."""
        metrics = Metrics(backend, batching=False)
        metrics.gauge(f"{prefix}before", 1)  # the parent's connection is open now
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                metrics.gauge(f"{prefix}child", 2)
                code = 0 if metrics.stats().sent == 1 else 3
                if code == 0 and not self.store_survives_fork:
                    # An in-memory store: the child's metric is in the child's copy only.
                    seen = {m.name for m in self.mine(backend, prefix)}
                    code = 0 if f"{prefix}child" in seen else 4
            finally:
                os._exit(code)
        metrics.gauge(f"{prefix}parent", 3)  # while the child writes, perhaps
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child could not deliver its metric"
        expected = {f"{prefix}before", f"{prefix}parent"}
        if self.store_survives_fork:
            expected.add(f"{prefix}child")
        assert expected <= {m.name for m in self.mine(backend, prefix)}
        assert metrics.stats().sent == 2

    def test_a_server_that_answers_a_byte_at_a_time_cannot_hold_a_call(
        self, backend_at: Callable[[str, int], Backend]
    ) -> None:
        """The backend's timeout bounds a whole request, not each read of it."""
        with DripServer() as server:
            metrics = Metrics(backend_at("127.0.0.1", server.port), batching=False)
            started = time.monotonic()
            metrics.gauge("contract.slow", 1)
            took = time.monotonic() - started
            assert took < 3.0, f"one call was held {took:.1f} s by a slow server"
            assert metrics.stats().failed == 1
            metrics.close()

    def test_unreachable_store_fails_loudly_in_send(self, unreachable_backend: Backend) -> None:
        """``send`` raises when the store is not there; it never pretends to have stored."""
        metric = Metric.create("contract.unreachable", "gauge", 1)
        with pytest.raises(Exception) as caught:
            unreachable_backend.send([metric])
        assert unreachable_backend.is_retryable(caught.value) or getattr(
            caught.value, "retryable", False
        ), f"a down server should be retryable, got {caught.value!r}"

    def test_unreachable_store_never_breaks_the_caller(self, unreachable_backend: Backend) -> None:
        """Reporting to a store that is down returns normally and counts the failure."""
        metrics = Metrics(unreachable_backend, batching=False)
        metrics.increment("contract.unreachable")
        metrics.gauge("contract.unreachable", 2)
        stats = metrics.stats()
        assert stats.failed == 2 and stats.sent == 0


@contextlib.contextmanager
def filters_set_aside() -> Iterator[None]:
    """Unregister, for the block, the plugins implementing ``kaneda_filter_metric``.

    A filter is given Metrics, and the backend then too: with one installed (the example
    plugin, say), a backend that takes records (``sends_records``) never gets them. A
    ``Metrics`` made in the block delivers as it would with no filter installed.
    """
    manager = get_plugin_manager()
    aside = [
        (manager.get_name(impl.plugin), impl.plugin)
        for impl in manager.hook.kaneda_filter_metric.get_hookimpls()
    ]
    for _, plugin in aside:
        manager.unregister(plugin)
    try:
        yield
    finally:
        for name, plugin in aside:
            manager.register(plugin, name)


@contextlib.contextmanager
def wall_clock_stepped() -> Iterator[list[int]]:
    """The wall clock calls are stamped with, moved by the offset in the list yielded.

    Set its item (nanoseconds; negative steps back) to step the clock as NTP or a
    resumed virtual machine does: ``with wall_clock_stepped() as offset: ...;
    offset[0] = -3_600 * 10**9``. Afterwards the clock and the last time given are as
    they were before the block.
    """
    from unittest import mock

    from . import metrics, stamps

    offset = [0]
    real = stamps.time_ns

    def stepped_time_ns() -> int:
        return real() + offset[0]

    latest, held = stamps.latest[0], stamps._held
    try:
        with (
            mock.patch.object(stamps, "time_ns", stepped_time_ns),
            mock.patch.object(metrics, "time_ns", stepped_time_ns),
        ):
            yield offset
    finally:
        # The slot stays what the block made it: its lock is the one this process holds.
        stamps.latest[0] = latest
        stamps._held = held


class DripServer:
    """A server on a free loopback port that answers every connection one byte at a time.

    Each byte comes before any sensible read timeout expires, so only a bound on the
    whole request ends it. Use it as a context manager; ``port`` is where it listens.
    """

    def __init__(self, every: float = 0.1, answer: bytes = b"HTTP/1.1 200 OK\r\nX: ") -> None:
        self.every = every
        self.answer = answer + b"z" * 100_000
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="drip-server", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        with client:
            for byte in self.answer:
                if self._closed.wait(self.every):
                    return
                try:
                    client.sendall(bytes([byte]))
                except OSError:
                    return

    def __enter__(self) -> DripServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and end every connection."""
        self._closed.set()
        self.listener.close()


def _fake(kind: str, name: str, value: Any, tags: Any) -> Metric:
    return Metric(name, kind, value, tags, datetime.now(timezone.utc), host_name())
