"""Keeping secrets out of reprs, logs and error messages.

A URL is redacted from its raw text, not from what a URL parser makes of it: a password
holding an unescaped ``/``, ``?``, ``#`` or ``@`` fools every parser into reading part
of it as a path, a query or a fragment, and the part outside the "password" would leak.
So everything between the first ``:`` after ``scheme://`` and the last ``@`` is masked,
and everything after a secret query option (``?password=``), which never shows too
little and at worst hides a little more than the password.

A slash too many (``influxdb:///user:pw@host/db``) moves the credentials into the path,
where no parser looks for them: after a network scheme, the leading slashes are skipped
and the same rule applies. Only the schemes whose path is a file's or a socket's
(``logger:///var/log/a@b.jsonl``, ``zmq+ipc:///tmp/kaneda:1.sock``) keep a path with an
``@`` or a ``:`` readable; there too a ``name:secret@`` is masked.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"

#: Words in the name of an option or parameter whose value is a secret: ``password``,
#: ``api_key``, ``auth_key``, ``access_key``, ``token``, ``sig`` (a signed URL's). Any
#: ``key``: a name that hides a little too much costs less than a key shown. ``sig`` only
#: as a word of its own (``assign_ids`` holds no secret).
_SECRET_WORDS = r"pass|pwd|secret|token|key|credential|signature|(?<![a-z])sig(?![a-z])"
#: A query option whose value is a secret (``?password=``, ``?api_key=``, ``?token=``).
_SECRET_OPTION = re.compile(rf"[?&;][^=&;#]*(?:{_SECRET_WORDS})[^=&;#]*=", re.IGNORECASE)
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a parameter or option called ``name`` holds a secret (``password``, ``token``)."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """``url`` with its password and its secret query options replaced by ``***``.

    Works on any text, well-formed URL or not: ``user:pw@host`` (no scheme) and
    ``influxdb://user:pa/ss@host`` (an unescaped ``/``) are masked too. A user name
    alone before the ``@`` (``https://TOKEN@host``) is masked as well: it often is a
    token.
    """
    hidden = [*_userinfo_span(url), *_secret_options_span(url)]
    if not hidden:
        return url
    # Mask the union of the spans, each run of hidden characters as one MASK.
    out: list[str] = []
    position = 0
    for start, end in sorted(hidden):
        if start > position:
            out.append(url[position:start])
            out.append(MASK)
        elif not out or out[-1] != MASK:
            out.append(MASK)
        position = max(position, end)
    out.append(url[position:])
    return "".join(out)


#: The parts of a scheme (``zmq+ipc``, ``rq+unix``) that make what follows ``:///`` a
#: file's or a socket's path, which may hold ``@`` and ``:`` of its own.
_PATH_SCHEMES = frozenset(("logger", "file", "ipc", "unix", "socket"))
#: The scheme in front of ``://``, in a URL or in a message quoting one.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _userinfo_span(text: str) -> list[tuple[int, int]]:
    """Where the password is (or the user name, when alone): first ':' to the last '@'.

    After ``scheme:///`` the slashes are skipped (a slash too many). For a file's or a
    socket's path (``logger:///var/log/a@b.jsonl``), only a ``name:secret@`` is masked.
    """
    found = _SCHEME.search(text)
    start = found.end() if found else 0
    in_path = text.startswith("/", start)
    while text.startswith("/", start):
        start += 1
    at = text.rfind("@")
    if at <= start:
        return []  # no '@' after the scheme
    colon = text.find(":", start, at)
    if colon < 0 and in_path and found and _is_path_scheme(found[1]):
        return []  # a path with an '@' (logger:///var/log/a@b.jsonl)
    return [(colon + 1 if colon >= 0 else start, at)]


def _is_path_scheme(scheme: str) -> bool:
    """Whether ``scheme:///...`` names a file or a socket (``logger``, ``zmq+ipc``)."""
    return not _PATH_SCHEMES.isdisjoint(scheme.lower().split("+"))


def _secret_options_span(text: str) -> list[tuple[int, int]]:
    """From the first secret option's value to the end: a password holding an unescaped
    & or # would run on into what looks like further options or a fragment."""
    query = text.find("?")
    found = _SECRET_OPTION.search(text, query) if query >= 0 else None
    return [(found.end(), len(text))] if found else []


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced by ``***``.

    Each secret is also masked as a URL would escape it (``p@ss`` as ``p%40ss``) and as
    a URL's escapes read back (``p%40ss`` as ``p@ss``), so it is caught in both forms.
    """
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update((secret, quote(secret, safe=""), unquote(secret)))
    # Longest first: a secret that contains another is masked whole.
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return text
