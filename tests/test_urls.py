"""Backend URLs: parsed safely, redacted whatever they look like, read by Backend.from_url."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaneda_core import Backend, ConfigurationError, connect, create_backend
from kaneda_core.cli import main
from kaneda_core.redact import MASK, redact_text, redact_url
from kaneda_core.urls import parse_url

# Password pieces: rare letters and digits, so no piece can be found by chance in the
# fixed words of a message (hosts, option names, advice), joined by the characters that
# break naive URL parsing.
PIECE = st.text(alphabet="jkqvxz23456789", min_size=5, max_size=9)
RESERVED = st.sampled_from([*"/?#@:%&=+;[] ", "//", "@@", "%2F", "%40"])


@st.composite
def passwords(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A password and the pieces of it that must never be shown."""
    pieces = draw(st.lists(PIECE, min_size=1, max_size=4))
    glue = [draw(RESERVED) for _ in pieces[1:]]
    password = pieces[0] + "".join(g + p for g, p in zip(glue, pieces[1:], strict=True))
    if draw(st.booleans()):
        password = draw(RESERVED) + password
    return password, pieces


def assert_hidden(text: str, pieces: list[str]) -> None:
    for piece in pieces:
        assert piece not in text, f"{piece!r} of the password shown in: {text}"


@given(passwords(), st.booleans(), st.sampled_from(["", ":8086", ":80x"]))
def test_redact_url_never_shows_a_password(
    password: tuple[str, list[str]], escape: bool, port: str
) -> None:
    secret, pieces = password
    written = quote(secret, safe="") if escape else secret
    urls = [
        f"influxdb://app:{written}@db.example{port}/metrics?timeout=1",
        f"influxdb://db.example{port}/metrics?user=app&password={written}",
        f"elasticsearch://db.example{port}/?api_key={written}&index_name=k",
    ]
    if not written.startswith("//"):  # "app://..." would be a URL whose user is "app"
        urls.append(f"app:{written}@db.example{port}")  # the scheme forgotten
    for url in urls:
        assert_hidden(redact_url(url), pieces)


def test_redact_url_keeps_what_is_not_secret() -> None:
    url = "influxdb://app:s3cr3t@db.example:8086/metrics?timeout=1&password=pw9"
    assert (
        redact_url(url)
        == f"influxdb://app:{MASK}@db.example:8086/metrics?timeout=1&password={MASK}"
    )
    assert redact_url("logger:///var/log/a@b.jsonl") == "logger:///var/log/a@b.jsonl"
    assert redact_url("memory://") == "memory://"


def test_redact_text_masks_a_secret_escaped_and_not() -> None:
    text = "refused p@ss/w0rd, p%40ss%2Fw0rd"
    assert redact_text(text, "p@ss/w0rd") == f"refused {MASK}, {MASK}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("influxdb://app:pa/ssw0rd@h:8086/db", "escape them with %"),
        ("influxdb://app:pa#ssw0rd@h:8086/db", "escape them with %"),
        ("influxdb://app:pa?ssw0rd@h:8086/db", "escape them with %"),
        ("influxdb://h:80x86/db", "not a number from 1 to 65535 (got '80x86')"),
        ("influxdb://h:99999/db", "not a number from 1 to 65535 (got '99999')"),
        ("influxdb://h:0/db", "not a number from 1 to 65535 (got '0')"),
        ("influxdb://[::1/db", "not a valid URL"),
    ],
)
def test_parse_url_refuses_with_advice(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=r"For example|escape") as caught:
        parse_url(url, "influxdb://localhost:8086/metrics")
    assert message in str(caught.value)
    assert "ssw0rd" not in str(caught.value)


def test_parse_url_unescapes_credentials_and_path() -> None:
    parsed = parse_url("x://us%40er:p%2Fw%3A@[::1]:8086/my%20db?a=1&b=")
    assert (parsed.user, parsed.password, parsed.host, parsed.port) == (
        "us@er",
        "p/w:",
        "::1",
        8086,
    )
    assert parsed.path == "/my db" and parsed.query == [("a", "1"), ("b", "")]


# -- every backend's from_url, whatever the password looks like ------------------------

SHAPES = {
    "influxdb": "influxdb://app:{pw}@db.example{port}/metrics",
    "https+influxdb": "https+influxdb://app:{pw}@db.example{port}/metrics?timeout=2",
    "influx-query": "influxdb://db.example{port}/metrics?username=app&password={pw}",
    "elasticsearch": "elasticsearch+https://app:{pw}@db.example{port}/?index_name=k&app_name=web",
    "elasticsearch-query": "elasticsearch://db.example{port}/?index_name=k&app_name=w&password={pw}",
    "mongodb": "mongodb://app:{pw}@db.example{port}/metrics?collection_name=m",
    "mongodb-query": "mongodb://db.example{port}/metrics?collection_name=m&password={pw}",
    "rethinkdb": "rethinkdb://app:{pw}@db.example{port}/metrics",
    "rethinkdb-query": "rethinkdb://db.example{port}/metrics?password={pw}",
    "logger": "logger://app:{pw}@db.example{port}/tmp/m.jsonl",
    "memory": "memory://app:{pw}@db.example{port}",
    "csv": "csv://app:{pw}@db.example{port}/tmp/m.csv",
    "rethinkdb-auth_key": "rethinkdb://db.example{port}/metrics?auth_key={pw}",
    "influx-access_key": "influxdb://db.example{port}/metrics?access_key={pw}",
    "rq": "rq://app:{pw}@db.example{port}/0",
    "celery+redis": "celery+redis://app:{pw}@db.example{port}/0",
    "celery+amqp": "celery+amqp://app:{pw}@db.example{port}//",
    "zmq+tcp": "zmq+tcp://app:{pw}@db.example{port}",
}


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


def build(url: str) -> Backend | ConfigurationError:
    """The backend ``url`` makes, or the ConfigurationError it raises (nothing else)."""
    try:
        return create_backend(url)
    except ConfigurationError as error:
        return error


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(deadline=None)  # the first example imports the plugin and its client library
@given(
    password=passwords(),
    escape=st.booleans(),
    port=st.sampled_from(["", ":9999", ":99x"]),
)
def test_no_backend_shows_a_password_from_its_url(
    shape: str,
    password: tuple[str, list[str]],
    escape: bool,
    port: str,
) -> None:
    secret, pieces = password
    written = quote(secret, safe="") if escape else secret
    url = SHAPES[shape].format(pw=written, port=port)
    with capture_logs() as logged:
        result = build(url)
    shown = [str(result), repr(result), logged.getvalue()]
    if isinstance(result, Backend):
        result.close()
    for text in shown:
        assert_hidden(text, pieces)


@pytest.mark.parametrize(
    "url",
    [
        "celery+redis://app:qz7;xk9@127.0.0.1:1/0",  # Celery reads ';' as two broker URLs
        "celery+amqp://app:qz7;xk9@127.0.0.1:1//",
        "zmq+tcp://app:qz7xk9@127.0.0.1:1",  # ZeroMQ quotes an endpoint in its errors
        "zmq+tcp://app:qz7?xk9@127.0.0.1:1",
        "zmq+tcp://app:qz7,xk9@127.0.0.1:1",
        "rethinkdb://127.0.0.1:1/metrics?auth_key=qz7xk9",
    ],
)
def test_urls_a_client_would_misread_are_refused_without_showing_the_secret(url: str) -> None:
    with capture_logs() as logged, pytest.raises(ConfigurationError) as caught:
        connect(url, batching=False).gauge("g", 1)
    for text in (str(caught.value), logged.getvalue()):
        assert "qz7" not in text and "xk9" not in text, text


def test_a_user_alone_in_a_url_is_not_shown_by_the_backend(closed_port: int) -> None:
    # influxdb://TOKEN@host: a user name alone is often a token; redact_url hides it too.
    with capture_logs() as logged:
        metrics = connect(f"influxdb://qz7xk9@127.0.0.1:{closed_port}/m", batching=False)
        metrics.gauge("g", 1)
        shown = [repr(metrics.backend), logged.getvalue()]
        metrics.close()
    assert metrics.stats().failed == 1
    for text in shown:
        assert "qz7xk9" not in text, text


def test_a_password_given_twice_is_refused_without_showing_either() -> None:
    with pytest.raises(ConfigurationError, match="twice") as caught:
        create_backend("rethinkdb://app:frst9x@h/db?password=scnd7z")
    assert "frst9x" not in str(caught.value) and "scnd7z" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "option", "values"),
    [
        (
            "elasticsearch://127.0.0.1:9/?index_name=i&app_name=a&index_name=j",
            "index_name",
            "'i' and 'j'",
        ),
        ("rq://127.0.0.1:9/0?queue_name=a&queue_name=b", "queue_name", "'a' and 'b'"),
        ("influxdb://h/db?timeout=5&timeout=7", "timeout", "'5' and '7'"),
        ("memory://?aggregate=true&aggregate=false", "aggregate", "'true' and 'false'"),
        ("memory://?aggregate=true&percentiles=50&percentiles=90", "percentiles", "'50' and '90'"),
        ("zmq+tcp://127.0.0.1:9?timeout=1&timeout=2", "timeout", "'1' and '2'"),
    ],
)
def test_an_option_given_twice_is_refused_naming_it_and_both_values(
    url: str, option: str, values: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect(url).close()
    message = str(caught.value)
    assert f"{option} twice" in message and values in message, message


def test_a_secret_option_given_twice_is_refused_without_showing_either() -> None:
    url = "rethinkdb://h/db?table_name=m&password=qz7a&password=xk9b"
    with pytest.raises(ConfigurationError, match="twice") as caught:
        create_backend(url)
    assert "qz7a" not in str(caught.value) and "xk9b" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("influxdb://h/metrics?username=app&password=p%40w", ("app", "p@w")),
        ("rethinkdb://h/metrics?user=app&password=p%40w", ("app", "p@w")),
    ],
)
def test_credentials_in_the_query_are_used_not_ignored(url: str, expected: tuple[str, str]) -> None:
    backend: Any = create_backend(url)
    if hasattr(backend, "client"):
        assert (backend.client._username, backend.client._password) == expected
    else:
        assert (backend.user, backend._password) == expected


def test_mongodb_credentials_in_the_query_are_refused_with_advice() -> None:
    with pytest.raises(ConfigurationError, match="credentials before the host") as caught:
        create_backend("mongodb://h/db?collection_name=m&password=qwrtz9")
    assert "qwrtz9" not in str(caught.value)


def test_elasticsearch_password_without_user_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="without a user") as caught:
        create_backend("elasticsearch://h:9200/?index_name=k&app_name=w&password=qwrtz9")
    assert "qwrtz9" not in str(caught.value)


# -- Backend.from_url's default ----------------------------------------------------------


class StatsdLike(Backend):
    """A backend whose constructor takes a host and a port, like the guide's StatsD."""

    def __init__(self, host: str = "localhost", port: int = 8125, prefix: str = "") -> None:
        self.host, self.port, self.prefix = host, port, prefix

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class Everything(Backend):
    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        path: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.seen = (host, port, username, password, path, timeout)

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


def test_from_url_passes_host_and_port() -> None:
    backend = StatsdLike.from_url("statsd://127.0.0.1:9999?prefix=app")
    assert (backend.host, backend.port, backend.prefix) == ("127.0.0.1", 9999, "app")


def test_from_url_passes_user_password_and_path_unescaped() -> None:
    backend = Everything.from_url("x://us%40er:p%2Fw@h:1234/var/m%20x.db?timeout=2.5")
    assert backend.seen == ("h", 1234, "us@er", "p/w", "/var/m x.db", 2.5)


def test_from_url_converts_query_options_by_annotation() -> None:
    assert Everything.from_url("x://h?port=99").seen[1] == 99


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("statsd://app:qwrtz9@127.0.0.1:9999", "user"),
        ("statsd://127.0.0.1:9999/some/path", "path"),
        ("memory://localhost", "host"),
    ],
)
def test_from_url_refuses_parts_the_backend_cannot_take(url: str, part: str) -> None:
    cls: Any = StatsdLike if url.startswith("statsd") else create_backend("memory").__class__
    with pytest.raises(ConfigurationError, match=f"gives a {part}") as caught:
        cls.from_url(url)
    assert "qwrtz9" not in str(caught.value)
    assert "Leave the" in str(caught.value)


def test_from_url_refuses_a_bad_port_with_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="got '80x'"):
        StatsdLike.from_url("statsd://127.0.0.1:80x")


class PositionalOnly(Backend):
    def __init__(self, host: str = "localhost", port: int = 8125, /, prefix: str = "") -> None:
        self.seen = (host, port, prefix)

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class KeywordOnly(Backend):
    def __init__(self, *, host: str = "localhost", port: int = 8125, rate: float = 1.0) -> None:
        self.seen = (host, port, rate)

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class AnyKeywords(Backend):
    def __init__(self, **options: Any) -> None:
        self.seen = options

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class HostName(Backend):
    def __init__(self, hostname: str = "localhost", port: int = 8125) -> None:
        self.seen = (hostname, port)

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class NoConstructor(Backend):
    """Takes no arguments at all: Backend.__new__ accepts any, object.__init__ ignores them."""

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


class NeedsPrefix(Backend):
    def __init__(self, prefix: str, host: str = "localhost", port: int = 8125) -> None:
        self.seen = (host, port, prefix)

    def send(self, batch: Any) -> None:  # pragma: no cover - never sent
        raise NotImplementedError


@pytest.mark.parametrize(
    ("cls", "url", "seen"),
    [
        (PositionalOnly, "statsd://127.0.0.1:9999?prefix=app", ("127.0.0.1", 9999, "app")),
        (PositionalOnly, "statsd://:9999", ("localhost", 9999, "")),
        (KeywordOnly, "statsd://127.0.0.1:9999?rate=0.5", ("127.0.0.1", 9999, 0.5)),
        (
            AnyKeywords,
            "statsd://u:pw@127.0.0.1:9999/p?rate=0.5",
            {
                "host": "127.0.0.1",
                "port": 9999,
                "user": "u",
                "password": "pw",
                "path": "/p",
                "rate": "0.5",
            },
        ),
        (HostName, "statsd://[::1]:9999", ("::1", 9999)),
    ],
)
def test_from_url_passes_the_address_whatever_the_signature(
    cls: Any, url: str, seen: object
) -> None:
    assert cls.from_url(url).seen == seen


@pytest.mark.parametrize("url", ["statsd://127.0.0.1:9999", "statsd://?rate=2"])
def test_from_url_refuses_what_a_backend_without_parameters_would_ignore(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        NoConstructor.from_url(url)
    assert "NoConstructor" in str(caught.value)
    assert NoConstructor.from_url("statsd://") is not None


def test_from_url_without_a_required_option_says_how_to_put_it_in_the_url() -> None:
    with pytest.raises(ConfigurationError) as caught:
        NeedsPrefix.from_url("statsd://127.0.0.1:9999")
    message = str(caught.value)
    assert "needs prefix" in message and "?prefix=" in message
    assert NeedsPrefix.from_url("statsd://127.0.0.1:9999?prefix=app").seen == (
        "127.0.0.1",
        9999,
        "app",
    )


def test_logger_url_with_a_host_is_refused_rather_than_written_to_stderr() -> None:
    with pytest.raises(ConfigurationError, match="three slashes"):
        create_backend("logger://metrics.jsonl")


# -- kaneda send, to servers that are not there ------------------------------------------


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SEND_SHAPES = {
    "influxdb": "influxdb://app:{pw}@127.0.0.1:{port}/metrics?timeout=0.5",
    "influx-query": "influxdb://127.0.0.1:{port}/metrics?username=app&password={pw}",
    "elasticsearch": "elasticsearch://app:{pw}@127.0.0.1:{port}/?index_name=k&app_name=web",
    "mongodb": "mongodb://app:{pw}@127.0.0.1:{port}/metrics?collection_name=m&timeout=30",
    "rethinkdb": "rethinkdb://app:{pw}@127.0.0.1:{port}/metrics",
    "memory": "memory://app:{pw}@127.0.0.1:{port}",
}


@pytest.mark.parametrize("shape", sorted(SEND_SHAPES))
@settings(max_examples=15, deadline=None)
@given(password=passwords(), escape=st.booleans())
def test_kaneda_send_never_shows_a_password(
    shape: str, password: tuple[str, list[str]], escape: bool, closed_port: int
) -> None:
    secret, pieces = password
    written = quote(secret, safe="") if escape else secret
    url = SEND_SHAPES[shape].format(pw=written, port=closed_port)
    out, err = io.StringIO(), io.StringIO()
    with capture_logs() as logged, redirect_stdout(out), redirect_stderr(err):
        status = main(["send", url, "gauge", "queue.depth", "12"])
    assert status == 1, "nothing listens there: the send must fail"
    assert err.getvalue().startswith("kaneda: ")
    for text in (out.getvalue(), err.getvalue(), logged.getvalue()):
        assert_hidden(text, pieces)


def test_kaneda_send_says_where_it_failed_with_the_password_masked(closed_port: int) -> None:
    url = f"influxdb://app:qz7%2Fxk9@127.0.0.1:{closed_port}/metrics"
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["send", url, "gauge", "g", "1"]) == 1
    assert f"app:***@127.0.0.1:{closed_port}" in err.getvalue()
    assert "qz7" not in err.getvalue() and "xk9" not in err.getvalue()


@pytest.mark.parametrize("shape", sorted(set(SEND_SHAPES) - {"memory"}))
@settings(max_examples=10, deadline=None)
@given(password=passwords(), escape=st.booleans())
def test_delivery_log_lines_never_show_a_password(
    shape: str, password: tuple[str, list[str]], escape: bool, closed_port: int
) -> None:
    secret, pieces = password
    written = quote(secret, safe="") if escape else secret
    url = SEND_SHAPES[shape].format(pw=written, port=closed_port)
    with capture_logs() as logged:
        try:
            metrics = connect(url, batching=False)
        except ConfigurationError as error:
            assert_hidden(str(error), pieces)
            return
        metrics.gauge("queue.depth", 12)
        shown = [repr(metrics), repr(metrics.backend), str(metrics.stats())]
        metrics.close()
    assert "not delivered" in logged.getvalue()
    for text in [*shown, logged.getvalue()]:
        assert_hidden(text, pieces)


def test_an_option_is_secret_by_its_words_not_by_letters_inside_another_word() -> None:
    from kaneda_core.redact import redact_url

    assert redact_url("rq://h:6379/0?assign_ids=false") == "rq://h:6379/0?assign_ids=false"
    assert redact_url("rq://h:6379/0?assign_ids=false&sig=abc") == (
        "rq://h:6379/0?assign_ids=false&sig=***"
    )


@pytest.mark.parametrize("url", ["influxdb://user:pw@[::1]x:1/db", "mongodb://[::1]:1,[::2]y:2/db"])
def test_text_after_a_bracketed_ipv6_address_is_refused_not_dropped(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"followed by ':port' or nothing") as caught:
        parse_url(url, several_hosts=True)
    assert "pw" not in str(caught.value)
