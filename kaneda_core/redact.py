"""Keeping secrets out of reprs, logs and error messages.

A URL is redacted from its raw text, not from what a URL parser makes of it: a password
holding an unescaped ``/``, ``?``, ``#`` or ``@`` fools every parser into reading part
of it as a path, a query or a fragment, and the part outside the "password" would leak.
So everything between the first ``:`` after ``scheme://`` and the last ``@`` is masked,
which never shows too little and at worst hides a little more than the password.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"

#: Query option names whose values are secrets (``?password=``, ``?api_key=``, ``?token=``).
_SECRET_OPTION = re.compile(
    r"(?P<key>(?:^|[?&;])[^=&;#]*(?:pass|pwd|secret|token|api_?key|credential|signature)"
    r"[^=&;#]*=)[^&;#]*",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|api_?key|credential|signature|auth_?key", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter or option called ``name`` holds a secret (``password``, ``token``)."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """``url`` with its password and its secret query options replaced by ``***``.

    Works on any text, well-formed URL or not: ``user:pw@host`` (no scheme) and
    ``influxdb://user:pa/ss@host`` (an unescaped ``/``) are masked too.
    """
    return _mask_secret_options(_mask_userinfo(url))


def _mask_userinfo(text: str) -> str:
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = text.rfind("@")
    if at < start:
        return text
    colon = text.find(":", start, at)
    if colon < 0:
        return text  # a user name and no password
    return text[: colon + 1] + MASK + text[at:]


def _mask_secret_options(text: str) -> str:
    query = text.find("?")
    if query < 0:
        return text
    return text[:query] + _SECRET_OPTION.sub(rf"\g<key>{MASK}", text[query:])


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
