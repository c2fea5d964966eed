"""Any calls: the ``kaneda`` face's MongoDB documents and log lines are genuine kaneda 1.0's.

Hypothesis draws calls of every kind, with the values kaneda 1.0 took (ints of any sign
and size MongoDB holds, floats, bools, text, custom dicts and lists, tags as a dict, a
list or none, ids); the calls the face refuses at the call are left out (the migration
guide lists them). Both sides write through the same payload as the other document
stores; the log line shows every value's own ``repr``, so it is compared char for char.
"""

from __future__ import annotations

import ast
import json
import os
import re
import string
from pathlib import Path
from typing import Any

import mongomock
import pytest
from genuine import run_kaneda1
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kaneda
import kaneda.backends
from kaneda_core import InvalidMetric

Call = tuple[str, list[Any], dict[str, Any]]

# Keys have no "." (MongoDB keys refuse it at the call); names and kinds may.
TEXT = st.text(string.ascii_letters + string.digits + " _-'\"é☃", min_size=1, max_size=10)
NAMES = st.text(string.ascii_letters + string.digits + " ._-'é", min_size=1, max_size=12)
INTS = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
NUMBERS = st.one_of(INTS, FLOATS, st.booleans())
SCALARS = st.one_of(NUMBERS, TEXT)
TAGS = st.one_of(
    st.none(),
    st.dictionaries(TEXT, st.one_of(TEXT, st.integers(-5, 5), st.booleans()), max_size=3),
    st.lists(TEXT, max_size=3),
)
CUSTOM = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(TEXT, SCALARS, max_size=4),
)
IDS = st.one_of(st.none(), TEXT, st.integers(0, 10**6))


@st.composite
def calls(draw: Any) -> list[Call]:
    made: list[Call] = []
    for _ in range(draw(st.integers(1, 6))):
        name, tags = draw(NAMES), draw(TAGS)
        kind = draw(st.sampled_from(["gauge", "timing", "increment", "decrement", "event"]))
        kind = draw(st.sampled_from([kind, "custom"]))
        if kind in ("gauge", "timing"):
            made.append((kind, [name, draw(NUMBERS)], {"tags": tags}))
        elif kind in ("increment", "decrement"):
            made.append((kind, [name], {"tags": tags}))
        elif kind == "event":
            made.append(("event", [name, draw(TEXT)], {"tags": tags}))
        else:
            kwargs = {"metric": draw(NAMES), "value": draw(CUSTOM), "tags": tags}
            made.append(("custom", [name], {**kwargs, "id_": draw(IDS)}))
    # As JSON carries them to kaneda 1.0 (tuples become lists): both sides get the same.
    return json.loads(json.dumps(made))  # type: ignore[no-any-return]


LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - kaneda\.backends\.logger - (.*)")


def kaneda1_stores(made: list[Call], log_file: Path) -> dict[str, Any]:
    return run_kaneda1(  # type: ignore[no-any-return]
        f"""
        import json, mongomock
        from kaneda import Metrics
        from kaneda.backends import LoggerBackend, MongoBackend

        mongo = MongoBackend("app", "metrics", connection_url="mongodb://127.0.0.1:1/")
        mongo.collection = mongomock.MongoClient()["app"]["metrics"]
        logger = LoggerBackend(filename={str(log_file)!r})
        for backend in (mongo, logger):
            metrics = Metrics(backend=backend)
            for method, args, kwargs in json.loads({json.dumps(made)!r}):
                getattr(metrics, method)(*args, **kwargs)
        documents = []
        for document in mongo.collection.find():
            document.pop("timestamp")
            if not isinstance(document["_id"], (str, int)):
                document.pop("_id")
            documents.append(repr(document))
        print(json.dumps(documents))
        """
    )


class Discard(kaneda.backends.BaseBackend):  # type: ignore[misc]
    def report(self, name: Any, metric: Any, value: Any, tags: Any, id_: Any = None) -> bool:
        return True


def accepted(call: Call) -> bool:
    """Whether the face takes ``call`` (the migration guide lists what it refuses)."""
    method, args, kwargs = call
    try:
        getattr(kaneda.Metrics(backend=Discard()), method)(*args, **kwargs)
    except InvalidMetric:
        return False
    return True


@settings(
    max_examples=int(os.environ.get("K1_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(made=calls())
def test_any_calls_store_kaneda_1_0s_documents_and_log_lines(
    made: list[Call], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [call for call in made if accepted(call)]
    assume(made)
    folder = tmp_path_factory.mktemp("logs")
    theirs = kaneda1_stores(made, folder / "theirs.log")

    from kaneda_mongo import backend as plugin

    monkeypatch.setattr(plugin, "MongoClient", mongomock.MongoClient)
    mongo = kaneda.backends.MongoBackend("app", "metrics", connection_url="mongodb://x:1/")
    logger = kaneda.backends.LoggerBackend(filename=str(folder / "ours.log"))
    for backend in (mongo, logger):
        metrics = kaneda.Metrics(backend=backend)
        for method, args, kwargs in made:
            assert getattr(metrics, method)(*args, **kwargs) is not None
        assert metrics.stats().failed == 0
    logger.close()
    ours = []
    for document in mongo.collection.find():
        document.pop("timestamp")
        if not isinstance(document["_id"], (str, int)):
            document.pop("_id")
        ours.append(repr(document))
    assert ours == theirs  # keys, order, values and their types
    their_lines = (folder / "theirs.log").read_text().splitlines()
    our_lines = (folder / "ours.log").read_text().splitlines()
    assert len(our_lines) == len(their_lines) == len(made)
    for line, their_line in zip(our_lines, their_lines, strict=True):
        ours_match, theirs_match = LINE.fullmatch(line), LINE.fullmatch(their_line)
        assert ours_match and theirs_match
        assert ours_match.group(1) == theirs_match.group(1)
        assert isinstance(ast.literal_eval(ours_match.group(1)), dict)
