"""Credentials in backend URLs of any shape: never shown, and a URL with no host refused.

A slash too many (``influxdb:///user:pw@host/db``) moves the credentials into the path,
where no URL parser finds them: the password used to become the database's name, shown in
the backend's repr and in every delivery error. Network backends now refuse a URL with no
host (unless they document a default host for it), and the redaction masks a
``name:secret@`` wherever it stands after the scheme.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import string
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaneda_core import Backend, ConfigurationError, KanedaError, connect, create_backend
from kaneda_core.redact import MASK, redact_url
from kaneda_core.registry import installed_names

# -- passwords -------------------------------------------------------------------------

#: A password's core: rare letters, so it is found in a message only if it leaked.
CORE = st.text(alphabet="jkqvxz", min_size=6, max_size=9)
#: Printable characters around it, those that break URL parsing included.
PRINTABLE = st.text(alphabet=string.printable.strip(), max_size=6)


@st.composite
def passwords(draw: st.DrawFn) -> str:
    """Any printable password holding a rare core (``p@ss:jqkvxz/w#``)."""
    return draw(PRINTABLE) + draw(CORE) + draw(PRINTABLE)


#: How a password is written in the URL: escaped whole, escaped where a URL needs it
#: (the delimiters / ? # @ and %, and space), or as it is (refused, or misread by parsers).
WRITINGS = {
    "escaped": lambda pw: quote(pw, safe=""),
    "where needed": lambda pw: quote(pw, safe="!$&'()*+,;=:[]~"),
    "as it is": lambda pw: pw,
}


def core_of(password: str) -> str:
    """The longest run of rare letters in ``password``: its core, at least."""
    runs = "".join(c if c in "jkqvxz" else " " for c in password).split()
    return max(runs, key=len)


def assert_hidden(text: str, password: str, written: str) -> None:
    for form in {password, written, unquote(written), core_of(password)}:
        if len(form) >= 6:  # shorter forms are pieces of the fixed words around them
            assert form not in text, f"{form!r} of the password shown in: {text}"


# -- the URL shapes of every installed backend -----------------------------------------

#: A closed loopback port: a connection to it is refused at once.
HOST = "127.0.0.1:1"

#: Per registered name, the URLs its backend takes, ``{auth}`` standing for
#: ``app:PASSWORD@``. Each is also tried with a slash too many (``scheme:///app:...``)
#: and with no host (``scheme://app:...@/path``).
SHAPES: dict[str, list[str]] = {
    "influxdb": [
        "influxdb://{auth}{host}/metrics",
        "https+influxdb://{auth}{host}/metrics?timeout=2",
    ],
    "influx": ["influx://{auth}{host}/metrics"],
    "elasticsearch": [
        "elasticsearch://{auth}{host}/?index_name=k&app_name=w",
        "elasticsearch+https://{auth}{host}/?index_name=k&app_name=w",
    ],
    "mongodb": [
        "mongodb://{auth}{host}/metrics?collection_name=m&timeout=0.2",
        "mongodb+srv://{auth}{host}/metrics?collection_name=m",
    ],
    "mongo": ["mongo://{auth}{host}/metrics?collection_name=m&timeout=0.2"],
    "rethinkdb": ["rethinkdb://{auth}{host}/metrics"],
    "rethink": ["rethink://{auth}{host}/metrics"],
    "rq": ["rq://{auth}{host}/0", "rq+tls://{auth}{host}/0"],
    "celery": ["celery+redis://{auth}{host}/0", "celery+amqp://{auth}{host}//"],
    "zmq": ["zmq+tcp://{auth}{host}", "zmq+ipc:///tmp/{auth}kaneda.sock"],
    "logger": ["logger://{auth}{host}/tmp/m.jsonl", "logger:///tmp/{auth}m.jsonl"],
    "memory": ["memory://{auth}{host}"],
    "csv": ["csv://{auth}{host}/tmp/m.csv"],
    "recording": ["recording://{auth}{host}"],
}

#: The backends that speak to a server over the network: a URL's host is where.
NETWORK = ("influxdb", "influx", "elasticsearch", "mongodb", "mongo", "rethinkdb", "rethink")
NETWORK_QUEUES = ("rq", "celery", "zmq")


def variants(template: str) -> list[str]:
    """``template`` as written, with a slash too many, and with the host left out."""
    scheme, _, rest = template.partition("://")
    found = [template]
    if rest.startswith("{auth}"):
        found.append(f"{scheme}:///{rest}")
        found.append(f"{scheme}://{rest.replace('{host}', '')}")
    return found


ALL_URLS = sorted({url for name in SHAPES for t in SHAPES[name] for url in variants(t)})


def test_every_installed_backend_has_its_url_shapes_here() -> None:
    # A backend installed later gets its shapes added here, and is proved like the others.
    assert set(installed_names()) <= set(SHAPES), set(installed_names()) - set(SHAPES)


@contextlib.contextmanager
def capture_logs() -> Iterator[io.StringIO]:
    """Everything logged (any logger, any level) while the block runs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("template", ALL_URLS)
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords(), writing=st.sampled_from(sorted(WRITINGS)))
def test_no_url_shape_shows_its_password(template: str, password: str, writing: str) -> None:
    written = WRITINGS[writing](password)
    url = template.format(auth=f"app:{written}@", host=HOST)
    shown: list[str] = []
    with capture_logs() as logged:
        try:
            backend = create_backend(url)
        except KanedaError as error:
            shown.append(str(error))
        else:
            shown.append(repr(backend))
            backend.close()
        try:
            connect(url, batching=False).close()
        except KanedaError as error:
            shown.append(str(error))
    shown.append(logged.getvalue())
    for text in shown:
        assert_hidden(text, password, written)


# -- the three-slash typo, and no host -------------------------------------------------


def test_the_reported_url_is_refused_and_shown_redacted() -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect("influxdb:///user:S3cret@127.0.0.1:1/db")
    assert str(caught.value) == (
        f"influxdb:///user:{MASK}@127.0.0.1:1/db has no host: did you mean "
        f"influxdb://user:{MASK}@127.0.0.1:1/db?"
    )


@pytest.mark.parametrize(
    "url",
    [
        "influxdb:///user:S3cret@127.0.0.1:1/db",
        "https+influxdb:///user:S3cret@h:8086/db",
        "influxdb:////user:S3cret@h:8086/db",
        "influxdb:///S3cretToken@h:8086/db",
        "influxdb:///h:8086/db",
        "elasticsearch:///user:S3cret@h:9200/?index_name=k&app_name=w",
        "mongodb:///user:S3cret@h:27017/db?collection_name=m",
        "mongodb+srv:///user:S3cret@cluster.example/db?collection_name=m",
        "rethinkdb:///user:S3cret@h:28015/db",
        "rq:///:S3cret@h:6379/0",
        "rq:///user:S3cret@h:6379/0",
        "rq+tls:///:S3cret@h:6379/0",
        "celery+redis:///user:S3cret@h:6379/0",
        "celery+amqp:///user:S3cret@h:5672//",
        "zmq+tcp:///user:S3cret@h:5555",
        "zmq+tcp:///h:5555",
    ],
)
def test_a_slash_too_many_is_refused_with_the_url_it_meant(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_backend(url)
    message = str(caught.value)
    scheme, _, rest = url.partition("://")
    meant = redact_url(f"{scheme}://{rest.lstrip('/')}")
    assert f"{redact_url(url)} has no host: did you mean {meant}?" in message
    assert "S3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "elasticsearch:///?index_name=k&app_name=w",
        "elasticsearch://user:S3cret@/?index_name=k&app_name=w",
        "mongodb:///db?collection_name=m",
        "mongodb://user:S3cret@/db?collection_name=m",
        "zmq+tcp://",
    ],
)
def test_a_backend_without_a_default_host_refuses_none(url: str) -> None:
    with pytest.raises(ConfigurationError, match="has no host") as caught:
        create_backend(url)
    assert "S3cret" not in str(caught.value)
    assert "for example" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # InfluxDB and RethinkDB default to localhost (kaneda 1.0 did; their READMEs say so).
        ("influxdb:///metrics", "<InfluxBackend localhost:8086/metrics>"),
        ("influxdb://:8087/metrics", "<InfluxBackend localhost:8087/metrics>"),
        ("rethinkdb:///metrics", "<RethinkBackend localhost:28015/metrics>"),
        # RQ and Celery: the constructor's default server, localhost.
        ("rq://", "<RQBackend redis://localhost:6379/0 queue='kaneda'>"),
        ("celery+redis://", "<CeleryBackend redis:// queue='kaneda'>"),
    ],
)
def test_a_documented_default_host_is_kept(url: str, shown: str) -> None:
    backend = create_backend(url)
    try:
        assert repr(backend) == shown
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("logger:///var/log/a@b.jsonl", "logger:///var/log/a@b.jsonl"),
        ("logger:///tmp/x:y.jsonl", "logger:///tmp/x:y.jsonl"),
        ("zmq+ipc:///tmp/kaneda:1.sock", "zmq+ipc:///tmp/kaneda:1.sock"),
        ("zmq+ipc:///tmp/a@b.sock", "zmq+ipc:///tmp/a@b.sock"),
        ("rq+unix:///run/redis@6.sock", "rq+unix:///run/redis@6.sock"),
        ("influxdb:///metrics", "influxdb:///metrics"),
        ("influxdb://h:8086/db", "influxdb://h:8086/db"),
    ],
)
def test_paths_that_may_hold_at_or_colon_stay_readable(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "influxdb:///user:S3cret@127.0.0.1:1/db",
            f"influxdb:///user:{MASK}@127.0.0.1:1/db",
        ),
        ("influxdb:///S3cret@h/db", f"influxdb:///{MASK}@h/db"),  # a token alone
        ("influxdb:///user:S3/cr#et@h/db", f"influxdb:///user:{MASK}@h/db"),
        ("redis:///:S3cret@h:6379/0", f"redis:///:{MASK}@h:6379/0"),
        ("logger:///tmp/user:S3cret@h.jsonl", f"logger:///tmp/user:{MASK}@h.jsonl"),
        ("zmq+ipc:///tmp/user:S3cret@h.sock", f"zmq+ipc:///tmp/user:{MASK}@h.sock"),
        ("cannot use influxdb:///u:S3cret@h/db: no", f"cannot use influxdb:///u:{MASK}@h/db: no"),
    ],
)
def test_a_name_secret_at_is_masked_wherever_it_stands(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url", ["logger:///tmp/user:S3cret@h.jsonl", "zmq+ipc:///tmp/user:S3cret@h.sock"]
)
def test_a_file_path_holding_a_user_and_password_is_refused(url: str) -> None:
    # These backends show their path in full (repr, write errors): a path shaped like
    # credentials is refused at the call, with advice.
    with pytest.raises(ConfigurationError, match="user and password") as caught:
        create_backend(url)
    assert "S3cret" not in str(caught.value)


# -- a failed delivery -----------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Network backends that fail fast against a closed port, with their URL.
DELIVERIES = {
    "influxdb": "influxdb://app:{pw}@127.0.0.1:{port}/metrics?timeout=1",
    "elasticsearch": "elasticsearch://app:{pw}@127.0.0.1:{port}/?index_name=k&app_name=w",
    "mongodb": "mongodb://app:{pw}@127.0.0.1:{port}/metrics?collection_name=m&timeout=0.2",
    "rethinkdb": "rethinkdb://app:{pw}@127.0.0.1:{port}/metrics?timeout=1",
    "rq": "rq://:{pw}@127.0.0.1:{port}/0?timeout=1",
    "celery": "celery+redis://:{pw}@127.0.0.1:{port}/0?timeout=1",
}


@pytest.mark.parametrize("name", sorted(DELIVERIES))
@settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords(), writing=st.sampled_from(["escaped", "where needed"]))
def test_a_failed_delivery_logs_no_password(name: str, password: str, writing: str) -> None:
    written = WRITINGS[writing](password)
    url = DELIVERIES[name].format(pw=written, port=closed_port())
    with capture_logs() as logged:
        try:
            metrics = connect(url, batching=False)
        except ConfigurationError as error:  # a password the client cannot take
            shown = [str(error)]
        else:
            metrics.gauge("g", 1)
            shown = [repr(metrics.backend)]
            metrics.close()
            assert metrics.stats().failed == 1
    shown.append(logged.getvalue())
    for text in shown:
        assert_hidden(text, password, written)


def test_the_reported_url_never_reaches_a_delivery() -> None:
    with capture_logs() as logged, pytest.raises(ConfigurationError):
        connect("influxdb:///user:S3cret@127.0.0.1:1/db", batching=False)
    assert "S3cret" not in logged.getvalue()


def test_a_backend_made_from_a_correct_url_shows_no_password() -> None:
    backend = create_backend("influxdb://user:S3cret@127.0.0.1:1/db")
    assert isinstance(backend, Backend)
    assert "S3cret" not in repr(backend)


# -- a URL given as another type ---------------------------------------------------------

SECRET = "Sx9qTopSecret"


@pytest.mark.parametrize(
    "make",
    [
        lambda: create_backend(
            "elasticsearch", index_name="i", app_name="a",
            connection_url=[f"https://u:{SECRET}@es1:9200", 9200],
        ),
        lambda: create_backend(
            "elasticsearch", index_name="i", app_name="a",
            connection_url=f"https://u:{SECRET}@es1:9200".encode(),
        ),
        lambda: create_backend(
            "influxdb", database="db", connection_url=f"influxdb://u:{SECRET}@h:8086/db".encode()
        ),
        lambda: create_backend(
            "mongodb", db_name="db", collection_name="c",
            connection_url=(f"mongodb://u:{SECRET}@h:27017/", None),
        ),
    ],
    ids=["a list with a bad item", "es bytes", "influxdb bytes", "mongodb tuple"],
)  # fmt: skip
def test_a_url_of_the_wrong_type_is_refused_without_its_password(make: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        make()  # type: ignore[operator]
    assert SECRET not in str(refused.value) and MASK in str(refused.value)
    assert "connection_url" in str(refused.value)


def test_elasticsearch_takes_a_tuple_of_urls_as_kaneda_1_did() -> None:
    backend = create_backend(
        "elasticsearch", index_name="i", app_name="a",
        connection_url=(f"https://u:{SECRET}@es1:9200", "https://es2:9200"),
    )  # fmt: skip
    assert SECRET not in repr(backend)
    backend.close()
