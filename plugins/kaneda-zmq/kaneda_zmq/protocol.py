"""What travels between a producer's DEALER socket and a worker's ROUTER socket.

A producer sends ``[message_id, batch]`` (the batch as :mod:`kaneda_core.message`
text). The worker answers ``[message_id, verdict, reason]`` once it is done with the
batch: ``stored`` (the backend has it), ``retry`` (send it again later) or ``poison``
(never send it again). A producer that hears nothing within its timeout sends the batch
again, to whichever worker is there: delivery is at least once.

URLs: ``zmq+tcp://host:port`` (several workers: ``zmq+tcp://h1:5555,h2:5555``) and
``zmq+ipc:///path/to/socket``, with options in the query string.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from kaneda_core.backend import option_twice
from kaneda_core.errors import ConfigurationError
from kaneda_core.redact import redact_url
from kaneda_core.urls import check_host, check_path_credentials

STORED, RETRY, POISON = b"stored", b"retry", b"poison"
VERDICTS = frozenset((STORED, RETRY, POISON))
#: How much of a reason travels back to the producer.
MAX_REASON = 2000

#: The largest frame a worker takes (ZMQ_MAXMSGSIZE: libzmq drops the connection of a
#: peer that sends a larger one, before it holds the frame), and the largest batch
#: message a producer sends, by default: 16 MiB. Kaneda bounds neither ``batch_size``
#: nor the size of a metric, so no largest batch follows from its limits: a producer
#: sends a batch over the bound in parts, and what the bound caps is one metric, which
#: is refused at the reporting call if it could not travel alone. A gauge with two tags,
#: its host and its id takes about 150 bytes of a message: a batch of 1,000 metrics (the
#: default ``batch_size``) is about 150 KB, one of 5,000 (the largest docs/scaling-out.md
#: advises) about 760 KB; 16 MiB holds about 110,000 of them, or one event of 16 million
#: ASCII characters. What a worker holds follows from it: per connection, at most
#: RECEIVE_QUEUE + 1 such frames in libzmq; in the round of messages it delivers
#: together, less than twice this (it takes no more once it holds this much).
MAX_MESSAGE_BYTES = 16 * 2**20
#: The smallest bound a worker or producer takes: an envelope and a small metric.
MIN_MESSAGE_BYTES = 1024
#: Complete messages libzmq keeps waiting per connection for the worker (ZMQ_RCVHWM;
#: libzmq's default is 1,000). A producer has one message at a time on its connection,
#: waiting for its answer.
RECEIVE_QUEUE = 2


def check_message_bytes(value: object, where: str) -> int:
    """``value`` as a message bound, or ConfigurationError naming ``where`` it was given."""
    if type(value) is not int or value < MIN_MESSAGE_BYTES:
        raise ConfigurationError(
            f"{where}: max_message_bytes must be a whole number of bytes of at least "
            f"{MIN_MESSAGE_BYTES}, got {value!r} (the default is {MAX_MESSAGE_BYTES}, 16 MiB)"
        )
    return value


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The connection URL and options of ``zmq+tcp://h1:5555,h2:5555?timeout=5``."""
    scheme, sep, rest = url.partition("://")
    transport = scheme.lower().removeprefix("zmq+")
    if not sep or transport not in ("tcp", "ipc") or not scheme.lower().startswith("zmq+"):
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a ZeroMQ queue URL: expected zmq+tcp://host:port "
            "(several: zmq+tcp://h1:5555,h2:5555) or zmq+ipc:///path"
        )
    if transport == "tcp":
        check_host(url, "zmq+tcp://127.0.0.1:5555")  # before the '@' check: says more
    else:  # ZeroMQ, and the backend's repr, show an ipc path in full
        check_path_credentials(url, "ZMQBackend(connection_url='ipc:///...')")
    if transport == "tcp" and "@" in rest:
        # A user or password, which ZeroMQ would quote in its errors (and any piece of
        # the URL an unescaped one would fall into).
        raise ConfigurationError(
            f"{redact_url(url)!r} holds a user or password (before '@'); a ZeroMQ tcp "
            "endpoint takes none: zmq+tcp://host:port"
        )
    address, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in options:  # which one was meant? Neither wins silently.
            raise option_twice(url, key, options[key], raw)
        options[key] = raw
    connection_url = f"{transport}://{address}"
    endpoints(connection_url)  # refuse a bad one now
    return connection_url, options


def endpoints(connection_url: str) -> list[str]:
    """``tcp://h1:5555,h2:5555`` (or ``tcp://h1:5555,tcp://h2:5555``) as a list, each checked."""
    found: list[str] = []
    transport = ""
    shown = redact_url(connection_url)
    for part in connection_url.split(","):
        part = part.strip()
        if "://" in part:
            transport, _, address = part.partition("://")
        else:
            address = part
        if transport not in ("tcp", "ipc"):
            raise ConfigurationError(
                f"connection_url must be tcp://host:port or ipc:///path, got {shown!r}"
            )
        if transport == "tcp":
            if "@" in address:  # a user or password, which ZeroMQ would quote in its errors
                raise ConfigurationError(
                    f"{shown!r} holds a user or password (before '@'); a ZeroMQ tcp endpoint "
                    "takes none: tcp://host:port"
                )
            host, colon, port = address.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigurationError(
                    f"a ZeroMQ tcp endpoint needs host:port, got {redact_url(address)!r} "
                    f"in {shown!r}"
                )
        elif not address:
            raise ConfigurationError(f"an ipc endpoint needs a path, got {shown!r}")
        found.append(f"{transport}://{address}")
    return found
