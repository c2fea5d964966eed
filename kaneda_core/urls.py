"""Reading a backend URL: credentials, host, port, path and options, with errors that advise.

Every error names the URL with its password masked, and never quotes a piece of the
URL that could be part of a password.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigurationError
from .redact import redact_url

ESCAPES = "escape them with %: / is %2F, ? is %3F, # is %23, @ is %40, : is %3A"


class URL(NamedTuple):
    """The parts of a backend URL, unescaped."""

    scheme: str
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    path: str
    query: list[tuple[str, str]]


def parse_url(url: str, example: str | None = None, *, several_hosts: bool = False) -> URL:
    """Split ``url`` into its parts, or raise :class:`ConfigurationError` with advice.

    Refused: a port that is not a number from 1 to 65535, and an ``@`` after the host
    part, which is what a password holding an unescaped ``/``, ``?``, ``#`` or ``@``
    looks like (``influxdb://app:pa/ss@host``), a path shaped like credentials after
    ``scheme:///`` (``csv:///app:pw@host/m.csv``), and a ``#fragment``. ``example`` is a
    URL that works, shown in the advice. With ``several_hosts``, the host part may list
    ``host:port,host:port`` (MongoDB); each port is checked, and ``host`` and ``port``
    are then None.
    """
    shown = redact_url(url)
    advice = f" For example: {example}" if example else ""
    _, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"{shown!r} is not a URL: expected scheme://host:port/path.{advice}"
        )
    check_credentials_escaped(url)
    if rest.startswith("/"):  # no host part: a name:secret@ in the path is misplaced
        check_path_credentials(url)
    host_end = _host_end(rest)
    hosts = rest[:host_end].rpartition("@")[2]
    for host_port in hosts.split(","):
        if host_port.startswith("[") and host_port.partition("]")[2][:1] not in ("", ":"):
            raise ConfigurationError(
                f"{shown} is not a valid URL: an IPv6 address in brackets is followed by "
                f"':port' or nothing, as in [::1]:8086.{advice}"
            )
    try:
        parts = urlsplit(url)
        if several_hosts and "," in hosts:
            for host_port in hosts.split(","):
                urlsplit(f"//{host_port}").port  # noqa: B018 - raises for a bad port
            port = None
        else:
            port = parts.port
    except ValueError as error:
        if "port" not in str(error).lower():
            # Python's message quotes the host part, which may hold a piece of a password.
            raise ConfigurationError(
                f"{shown} is not a valid URL: its host part cannot be read (brackets are for "
                f"IPv6 addresses, as in [::1]:8086). If a password holds [ or ], escape them "
                f"with %: [ is %5B, ] is %5D.{advice}"
            ) from None
        bad = [
            raw
            for raw in (item.rpartition("]")[2].partition(":")[2] for item in hosts.split(","))
            if not (raw.isdigit() and 0 < int(raw) < 65536) and raw
        ]
        raise ConfigurationError(
            f"The port of {shown} is not a number from 1 to 65535 "
            f"(got {bad[0] if bad else ''!r}).{advice}"
        ) from None
    if "#" in rest:
        raise ConfigurationError(
            f"{shown} has a '#', and a Kaneda URL takes no #fragment. If a password holds "
            f"#, {ESCAPES}."
        )
    if port == 0:
        raise ConfigurationError(
            f"The port of {shown} is not a number from 1 to 65535 (got '0').{advice}"
        )
    return URL(
        scheme=parts.scheme.lower(),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=None if several_hosts and "," in hosts else parts.hostname or None,
        port=port,
        path=unquote(parts.path),
        query=parse_qsl(parts.query, keep_blank_values=True),
    )


def check_credentials_escaped(url: str) -> None:
    """Refuse an ``@`` after the host part: a password with an unescaped ``/ ? # @``.

    For URLs parsed by a client library (several hosts, a driver's own options), call
    this before handing the URL over, so the library never misreads, and quotes, a
    piece of the password.
    """
    _, sep, rest = url.partition("://")
    if sep and not rest.startswith("/") and "@" in rest[_host_end(rest) :]:
        raise ConfigurationError(
            f"{redact_url(url)} has an '@' after its host part. If the user name or password "
            f"holds /, ?, # or @, {ESCAPES}; an @ elsewhere in the URL is written %40 too."
        )


def check_host(url: str, example: str | None = None, *, default: str | None = None) -> None:
    """Refuse a URL that names no host, saying so and showing it redacted.

    A slash too many (``influxdb:///user:pw@host:8086/db``) leaves the host empty and
    moves the credentials, host and port into the path, where they would become, say, a
    database's name: it is refused with the URL it meant, whatever ``default``. A URL
    with no host and a plain path (``influxdb:///metrics``) is taken when the backend
    reads no host as its ``default`` (documented, say ``"localhost"``), refused otherwise.
    Call it first in a network backend's ``from_url``. Each host of ``h1,h2`` is checked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return  # not a URL: parse_url says so
    host_end = _host_end(rest)
    hosts = rest[:host_end].rpartition("@")[2]
    if all(_host_of(host_port) for host_port in hosts.split(",")):
        return
    shown = redact_url(url)
    path = rest[host_end:].partition("?")[0].partition("#")[0]
    # An '@' anywhere: a password's unescaped ? or # ends the path before it.
    if not rest[:host_end] and ("@" in rest or ":" in path):
        meant = redact_url(f"{scheme}://{rest.lstrip('/')}")
        raise ConfigurationError(f"{shown} has no host: did you mean {meant}?")
    if default is not None and "," not in hosts:
        return
    advice = f", for example {example}" if example else ""
    raise ConfigurationError(
        f"{shown} has no host: write the server's host (and port) after {scheme}://{advice}"
    )


def check_path_credentials(url: str, constructor: str = "the backend's constructor") -> None:
    """Refuse a file's or a socket's path shaped like credentials (``/tmp/app:pw@h.sock``).

    Anything after the scheme counts (the query too), which at worst refuses a path
    holding a ``:`` and a query holding an ``@``.

    For backends that show their path in full (reprs, write errors): such a path is what
    a user and password in the wrong place look like, so it is refused from a URL.
    ``constructor`` says how to give such a path all the same.
    """
    scheme, sep, rest = url.partition("://")
    colon = rest.find(":")  # in the query too: a password's unescaped ? ends the path
    if sep and colon >= 0 and "@" in rest[colon:]:
        raise ConfigurationError(
            f"{redact_url(url)} holds a user and password (name:secret@) in its path, "
            f"and a {scheme}:// URL takes none. If it is the path's own name, pass it to "
            f"{constructor} instead."
        )


def _host_of(host_port: str) -> str:
    """The host of ``host:port`` or ``[::1]:port`` ("" when there is none)."""
    if host_port.startswith("["):
        return host_port.partition("]")[0][1:]
    return host_port.partition(":")[0]


def url_password(url: str) -> str | None:
    """The password of ``url``, unescaped, read from its text (None if it has none)."""
    _, sep, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if not sep or not at:
        return None
    _, colon, password = userinfo.partition(":")
    return unquote(password) if colon else None


def _host_end(rest: str) -> int:
    """Where the host part of ``rest`` (a URL after ``://``) ends."""
    return min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
