"""Keeping secrets out of reprs, logs and error messages.

A URL is redacted from its raw text, not from what a URL parser makes of it: a password
holding an unescaped ``/``, ``?``, ``#`` or ``@`` fools every parser into reading part
of it as a path, a query or a fragment, and the part outside the "password" would leak.
So everything between the first ``:`` after ``scheme://`` and the last ``@`` is masked,
and everything after a secret query option (``?password=``), which never shows too
little and at worst hides a little more than the password.
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


def _userinfo_span(text: str) -> list[tuple[int, int]]:
    """Where the password is (or the user name, when alone): first ':' to the last '@'."""
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = text.rfind("@")
    if at <= start or text.startswith("/", start):
        return []  # no '@', or no host part at all (logger:///var/log/a@b.jsonl)
    colon = text.find(":", start, at)
    return [(colon + 1 if colon >= 0 else start, at)]


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
