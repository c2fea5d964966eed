"""The only changes made to kaneda 1.0's test suite before running it here.

Each is a fixture or a helper that today's pytest or today's client libraries break;
no test function is touched. Every ``old`` text must occur exactly once, so a suite
that differs from kaneda 1.0's fails loudly instead of being half-adapted.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Adaptation(NamedTuple):
    path: str
    why: str
    old: str
    new: str


def _undecorated(settings: str, *fixtures: str) -> str:
    """Lines that turn fixtures into the plain functions 1.0's helpers called."""
    lines = [f"    {settings} = {settings}.__wrapped__\n"]
    lines += [f'    {name} = globals()["{name}"].__wrapped__\n' for name in fixtures]
    return "".join(lines)


ADAPTATIONS = [
    Adaptation(
        "tests/unit/test_utils.py",
        "pytest 4 forbade calling fixtures directly; this module imports the fixture "
        "empty_settings and calls it in a parametrize list: it imports the function under "
        "the fixture instead (its test functions are unchanged)",
        "from .conftest import empty_settings\n",
        "from .conftest import empty_settings\nempty_settings = empty_settings.__wrapped__\n",
    ),
    Adaptation(
        "tests/integration/benchmarks/__init__.py",
        "pytest 5 removed the pytest.config global; a skipif condition string gets the same config",
        'mark_benchmark = pytest.mark.skipif(not pytest.config.getoption("--run-benchmark"),',
        "mark_benchmark = pytest.mark.skipif('not config.getoption(\"--run-benchmark\")',",
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "rethinkdb 2.4 moved the driver's module-level API (r.connect ...) to rethinkdb.r",
        "import rethinkdb as r\n",
        "from rethinkdb import r\n",
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "elasticsearch 8 dropped port=, http_auth= and timeout= (and wants a URL per "
        "node); this fixture builds its client while the tests are collected",
        "    client = Elasticsearch([elastic_settings.ELASTIC_HOST], "
        "port=elastic_settings.ELASTIC_PORT,\n"
        "                           http_auth=(elastic_settings.ELASTIC_USER, "
        "elastic_settings.ELASTIC_PASSWORD),\n"
        "                           timeout=elastic_settings.ELASTIC_TIMEOUT)\n",
        "    client = Elasticsearch(['http://{}:{}'.format(elastic_settings.ELASTIC_HOST, "
        "elastic_settings.ELASTIC_PORT)],\n"
        "                           basic_auth=(elastic_settings.ELASTIC_USER, "
        "elastic_settings.ELASTIC_PASSWORD),\n"
        "                           request_timeout=elastic_settings.ELASTIC_TIMEOUT)\n",
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "pytest 4 forbade calling fixtures directly, which the *_clients() helpers do "
        "while the tests are collected: they call the functions under the fixtures",
        "    from tests.conftest import elastic_settings\n",
        "    from tests.conftest import elastic_settings\n"
        + _undecorated(
            "elastic_settings",
            "elasticsearch_backend",
            "elasticsearch_backend_client",
            "elasticsearch_backend_url",
        ),
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "the same (pytest 4: fixtures are not called directly)",
        "    from tests.conftest import mongo_settings\n",
        "    from tests.conftest import mongo_settings\n"
        + _undecorated(
            "mongo_settings", "mongo_backend", "mongo_backend_client", "mongo_backend_url"
        ),
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "the same (pytest 4), and: this helper connects to RethinkDB while the tests are "
        "collected, so without a RethinkDB server the whole module (InfluxDB tests "
        "included) failed to collect; a failed connection now fails the RethinkDB test "
        "that uses it",
        "    from tests.conftest import rethink_settings\n"
        "    return [rethink_backend(rethink_settings()).connection, "
        "rethink_backend_connection(rethink_settings()).connection]\n",
        "    from tests.conftest import rethink_settings\n"
        + _undecorated("rethink_settings", "rethink_backend", "rethink_backend_connection")
        + "    try:\n"
        "        connected = rethink_backend_connection(rethink_settings()).connection\n"
        "    except Exception as error:\n"
        "        connected = _NotConnected(error)\n"
        "    return [rethink_backend(rethink_settings()).connection, connected]\n"
        "\n"
        "\n"
        "class _NotConnected(object):\n"
        "    def __init__(self, error):\n"
        "        self.error = error\n"
        "\n"
        "    def is_open(self):\n"
        "        raise self.error\n",
    ),
    Adaptation(
        "tests/integration/conftest.py",
        "the same (pytest 4: fixtures are not called directly)",
        "    from tests.conftest import influx_settings\n",
        "    from tests.conftest import influx_settings\n"
        + _undecorated(
            "influx_settings", "influx_backend", "influx_backend_client", "influx_backend_url"
        ),
    ),
]


def adapt(root: Path) -> list[Adaptation]:
    """Apply :data:`ADAPTATIONS` to the suite copied under ``root``; what was applied."""
    for adaptation in ADAPTATIONS:
        path = root / adaptation.path
        text = path.read_text()
        found = text.count(adaptation.old)
        if found != 1:
            raise RuntimeError(
                f"{adaptation.path}: expected the text to adapt once, found it {found} times:\n"
                f"{adaptation.old}"
            )
        path.write_text(text.replace(adaptation.old, adaptation.new))
    return ADAPTATIONS
