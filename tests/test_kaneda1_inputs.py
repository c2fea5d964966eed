"""Input kaneda 1.0 stored and kaneda_core refuses: the ``kaneda`` face stores what 1.0 did.

kaneda 1.0 handed its clients whatever it was given. InfluxDB's client (5.x
``make_lines``) wrote ``str()`` of a tag value (bytes decoded, a NaN as ``nan``),
``repr(float(v))`` of a number that is neither int nor float (Decimal, Fraction), and
bytes in a field as their decoded text. The face converts such input to what 1.0 stored
(for every backend: see the migration guide) and only then, where it still would not do,
refuses it; ``kaneda_core.Metrics`` keeps refusing all of it.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kaneda
import kaneda_core
from kaneda.backends import BaseBackend
from kaneda_core import InvalidMetric

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "kaneda1"))
sys.path.insert(0, str(HERE.parent / "plugins" / "kaneda-influx" / "tests"))

from genuine import run_kaneda1  # noqa: E402
from influx_server import InfluxServer  # noqa: E402
from influx_snapshot import snapshot  # noqa: E402

ID = "6f1c2b3a-0d4e-4f5a-8b6c-7d8e9f0a1b2c"

#: Calls as Python source, evaluated the same way by genuine kaneda 1.0 and by the face
#: (their arguments are no JSON). Gauges and timings are floats: 1.0 wrote a Decimal as one,
#: and an integer field would refuse it.
CALLS = f"""[
    ("gauge", ["orders.open", 3.5], {{"tags": {{"request": uuid.UUID({ID!r})}}}}),
    ("gauge", ["price", 1.5], {{"tags": {{"band": decimal.Decimal("1.10")}}}}),
    ("increment", ["signups"], {{"tags": {{"day": datetime.date(2026, 11, 25)}}}}),
    ("increment", ["logins"], {{"tags": {{"at": datetime.datetime(2026, 11, 25, 10, 0, 5)}}}}),
    ("decrement", ["credits"], {{"tags": {{"b": b"xy"}}}}),
    ("timing", ["query", 2.5], {{"tags": {{"ratio": float("nan"), "top": float("-inf")}}}}),
    ("gauge", ["share", 0.5], {{"tags": {{"part": fractions.Fraction(1, 3), "big": 2**1100}}}}),
    ("event", ["deploy", "done"], {{"tags": {{"build": uuid.UUID({ID!r}), "ok": True}}}}),
    ("gauge", ["balance", decimal.Decimal("12.50")], {{}}),
    ("gauge", ["whole", decimal.Decimal("4")], {{}}),
    ("timing", ["third", fractions.Fraction(1, 3)],
        {{"tags": {{"day": datetime.date(2026, 1, 2)}}}}),
    ("custom", ["order"], {{"metric": "order", "value": {{"total": decimal.Decimal("9.99"),
        "items": 3, "code": b"ab", "paid": False}}}}),
    ("custom", ["amount"], {{"metric": "amount", "value": decimal.Decimal("0.1")}}),
    ("custom", ["raw"], {{"metric": "raw", "value": b"bytes text"}}),
    ("event", ["note"], {{"text": b"from bytes"}}),
    ("custom", ["beat"], {{"metric": "heartbeat", "value": {{}}}}),
    ("custom", ["beat.tagged"], {{"metric": "heartbeat", "value": {{}}, "tags": {{"zone": "a"}}}}),
    ("gauge", ["no.tags.list", 5.5], {{"tags": []}}),
    ("increment", ["no.tags.tuple"], {{"tags": ()}}),
]"""
IMPORTS = "import datetime, decimal, fractions, uuid\n"


def calls() -> list[tuple[str, list[Any], dict[str, Any]]]:
    return eval(
        CALLS, {"datetime": datetime, "decimal": decimal, "fractions": fractions, "uuid": uuid}
    )  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def influx_server() -> Iterator[InfluxServer]:
    """A throwaway influxd on free loopback ports, deleted afterwards."""
    server = InfluxServer()
    server.start()
    yield server
    server.destroy()


def fresh() -> str:
    return f"k1_{uuid.uuid4().hex[:10]}"


def test_the_face_stores_what_kaneda_1_0_stored_for_input_kaneda_core_refuses(
    influx_server: InfluxServer,
) -> None:
    theirs, ours = fresh(), fresh()
    run_kaneda1(
        f"""
        import json
        {IMPORTS}
        from kaneda import Metrics
        from kaneda.backends import InfluxBackend

        backend = InfluxBackend({theirs!r}, host="127.0.0.1", port={influx_server.port}, timeout=10)
        metrics = Metrics(backend=backend)
        for method, args, kwargs in eval({CALLS!r}):
            getattr(metrics, method)(*args, **kwargs)
        print(json.dumps(None))
        """
    )
    backend = kaneda.backends.InfluxBackend(
        ours, host="127.0.0.1", port=influx_server.port, timeout=10
    )
    metrics = kaneda.Metrics(backend=backend)
    answers = [getattr(metrics, method)(*args, **kwargs) for method, args, kwargs in calls()]
    assert answers == [True] * len(answers)
    expected = snapshot(influx_server, theirs)
    assert len(expected["points"]) == len(answers)  # 1.0 stored every one of them
    # What 1.0's client wrote, spelled out for a few (str() of a tag; float() of a number).
    tags_of = {dict(p[2]).get("name"): dict(p[1]) for p in expected["points"]}
    assert tags_of["orders.open"]["request"] == ID
    assert tags_of["credits"]["b"] == "xy"
    assert tags_of["query"] == {"host": tags_of["query"]["host"], "ratio": "nan", "top": "-inf"}
    assert tags_of["logins"]["at"] == "2026-11-25 10:00:05"
    assert expected["fields"]["heartbeat"] == {"name": "string"}
    assert expected["fields"]["order"]["total"] == "float"
    assert snapshot(influx_server, ours) == expected
    metrics.close()


class Recording(BaseBackend):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
        self.calls.append((name, metric, value, tags))


@pytest.mark.parametrize(
    ("tag", "text"),
    [
        (uuid.UUID(ID), ID),
        (decimal.Decimal("1.10"), "1.10"),
        (fractions.Fraction(1, 3), "1/3"),
        (datetime.date(2026, 11, 25), "2026-11-25"),
        (datetime.datetime(2026, 11, 25, 10, 0), "2026-11-25 10:00:00"),
        (datetime.time(10, 30), "10:30:00"),
        (b"xy", "xy"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (2**1100, str(2**1100)),
    ],
)
def test_a_tag_1_0_stored_as_text_reaches_every_backend_as_that_text(
    tag: object, text: str
) -> None:
    backend = Recording()
    metrics = kaneda.Metrics(backend=backend)
    metrics.gauge("g", 1, tags={"t": tag, "plain": "p"})
    metrics.timing("t", 0.5, tags={"t": tag})
    metrics.increment("i", tags={"t": tag})
    metrics.decrement("d", tags={"t": tag})
    metrics.event("e", "text", tags={"t": tag})
    metrics.custom("c", "kind", {"a": 1}, tags={"t": tag})
    with metrics.timed("block", tags={"t": tag}):
        pass
    assert [call[3] for call in backend.calls] == [{"t": text, "plain": "p"}] + [{"t": text}] * 6
    # kaneda_core's own API keeps refusing them.
    core = kaneda_core.Metrics(Recording(), batching=False)
    with pytest.raises(InvalidMetric, match=r"tags\['t'\]"):
        core.gauge("g", 1, tags={"t": tag})
    with pytest.raises(InvalidMetric, match=r"tags\['t'\]"):
        core.timed("block", tags={"t": tag})


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (decimal.Decimal("12.50"), 12.5),
        (decimal.Decimal("4"), 4.0),
        (fractions.Fraction(1, 4), 0.25),
    ],
)
def test_a_number_neither_int_nor_float_is_stored_as_the_float_1_0_wrote(
    value: object, stored: float
) -> None:
    backend = Recording()
    metrics = kaneda.Metrics(backend=backend)
    metrics.gauge("g", value)  # type: ignore[arg-type]
    metrics.timing("t", value)  # type: ignore[arg-type]
    metrics.custom("c", "kind", value)
    metrics.custom("d", "kind", {"v": value, "list": [value], "b": b"x"})
    assert [call[2] for call in backend.calls] == [
        stored,
        stored,
        stored,
        {"v": stored, "list": [stored], "b": "x"},
    ]
    assert all(type(v) is float for v in (c[2] for c in backend.calls[:3]))
    core = kaneda_core.Metrics(Recording(), batching=False)
    with pytest.raises(InvalidMetric, match="must be a number"):
        core.gauge("g", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidMetric, match="must be a number"):
        core.custom("c", "kind", {"v": value})


def test_bytes_1_0_stored_as_their_text() -> None:
    backend = Recording()
    metrics = kaneda.Metrics(backend=backend)
    metrics.event("e", b"deployed")  # type: ignore[arg-type]
    metrics.custom("c", "kind", b"text")
    assert [call[2] for call in backend.calls] == ["deployed", "text"]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "message"),
    [
        # 1.0 lost these (its client or the server refused them): still refused.
        ("gauge", ["g", decimal.Decimal("NaN")], {}, "finite"),
        ("gauge", ["g", decimal.Decimal("1e400")], {}, "finite"),
        ("gauge", ["g", b"12"], {}, "must be a number"),
        ("custom", ["c", "kind", {"id": uuid.UUID(ID)}], {}, r"value\['id'\] must be"),
        ("gauge", ["g", 1], {"tags": {"b": b"\xff"}}, r"tags\['b'\] must be"),
        ("gauge", ["g", 1], {"tags": {"o": object()}}, r"tags\['o'\] must be"),
        ("gauge", ["g", 1], {"tags": {"l": [1]}}, r"tags\['l'\] must be"),
        # As documented: None is refused, and the converted input meets every other check.
        ("gauge", ["g", 1], {"tags": {"u": uuid.UUID(ID), "n": None}}, r"tags\['n'\] must be"),
        ("gauge", ["", decimal.Decimal(1)], {}, "name must be a non-empty string"),
    ],
)
def test_what_1_0_lost_stays_refused(
    method: str, args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    backend = Recording()
    with pytest.raises(InvalidMetric, match=message):
        getattr(kaneda.Metrics(backend=backend), method)(*args, **kwargs)
    assert backend.calls == []


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        (
            "gauge",
            ["g", decimal.Decimal("1E+400")],
            "value must be a finite number, got Decimal('1E+400')",
        ),
        (
            "timing",
            ["t", decimal.Decimal("NaN")],
            "value must be a finite number, got Decimal('NaN')",
        ),
        ("gauge", ["g", decimal.Decimal("-Infinity")], "got Decimal('-Infinity')"),
        (
            "custom",
            ["c", "kind", {"a": [decimal.Decimal("Infinity")]}],
            "value['a'][0] must be a finite number, got Decimal('Infinity')",
        ),
        (
            "custom",
            ["c", "kind", decimal.Decimal("1E+400")],
            "value must be a finite number, got Decimal",
        ),
    ],
)
def test_a_refused_number_is_named_as_given_not_as_the_float_it_became(
    method: str, args: list[Any], message: str
) -> None:
    backend = Recording()
    with pytest.raises(InvalidMetric) as caught:
        getattr(kaneda.Metrics(backend=backend), method)(*args)
    assert message in str(caught.value), str(caught.value)
    assert not str(caught.value).endswith((" inf", " -inf", " nan"))
    assert backend.calls == []


def test_a_tag_converted_to_empty_text_is_refused_by_influxdb_as_documented() -> None:
    backend = kaneda.backends.InfluxBackend("db", host="127.0.0.1", port=1)
    with pytest.raises(InvalidMetric, match="is empty"):
        kaneda.Metrics(backend=backend, batching=True).gauge("g", 1, tags={"b": b""})


def test_the_callers_objects_are_left_alone() -> None:
    tags = {"id": uuid.UUID(ID)}
    value = {"total": decimal.Decimal("1.5")}
    backend = Recording()
    kaneda.Metrics(backend=backend).custom("c", "kind", value, tags=tags)
    assert tags == {"id": uuid.UUID(ID)} and value == {"total": decimal.Decimal("1.5")}
    assert backend.calls == [("c", "kind", {"total": 1.5}, {"id": ID})]
