"""What the plugin remembers per series, bounded in bytes.

A series (measurement and tags) repeats: its checks and its escaped line prefix are
worked out once, then looked up. Tags can be long and series many, so the cache counts
the bytes it holds and starts again empty past ``max_bytes``; ``close()`` empties it.

Looking a series up means building a key from its tags, which costs more than the check
itself. So one series per name (the first with tags seen since the cache last started
empty) is also kept with a metric's own tags dict: a metric of that name whose tags
compare equal (two small dicts, no key built) is that series. A name with many series
pays for one failed comparison on the others. Only series whose tag values are all
strings are kept there: ``1 == 1.0 == True``, yet their tags read differently. Those
entries are charged to the bound too.
"""

from __future__ import annotations

from typing import Any

#: The default bound of one backend's cache.
MAX_BYTES = 32 * 1024 * 1024
# What a dict entry costs beyond the objects it holds.
_ENTRY = 120
# CPython's sizes beyond the characters and items: a tuple's header and each of its
# slots, a dict's header and each of its entries. A string is charged its characters
# wherever it is held, though several keys share it (a tag's name, the metric's name):
# that makes up for its header (checked with tracemalloc: the bound holds within 1.0x).
_TUPLE = 40
_SLOT = 8
_DICT = 64
_DICT_ITEM = 40


class SeriesCache:
    """Checked series and line prefixes of one backend."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        #: Series (kind, name, tags...) whose checks passed -> whether their tag values
        #: are all strings.
        self.checked: dict[tuple[Any, ...], bool] = {}
        #: Series key -> the escaped start of its lines.
        self.prefixes: dict[tuple[Any, ...], str] = {}
        #: Name -> (kind, tags) of one series of that name whose checks passed.
        self.checked_by_name: dict[str, tuple[str, dict[str, Any]]] = {}
        #: Name -> (kind, host, tags, line prefix) of one series of that name.
        self.prefix_by_name: dict[str, tuple[str, str, dict[str, Any], str]] = {}
        self.bytes = 0

    def remember_checked(self, key: tuple[Any, ...], plain: bool) -> None:
        """Remember that the series ``key`` passed its checks (``plain``: string tags)."""
        self._charge(key_bytes(key))
        self.checked[key] = plain

    def remember_prefix(self, key: tuple[Any, ...], prefix: str) -> None:
        """Remember the line prefix of the series ``key``."""
        self._charge(key_bytes(key) + len(prefix))
        self.prefixes[key] = prefix

    def remember_checked_by_name(self, name: str, kind: str, tags: dict[str, Any]) -> None:
        """Remember ``(kind, tags)`` as the series of ``name`` looked at first."""
        if name not in self.checked_by_name:
            self._charge(len(name) + _TUPLE + 2 * _SLOT + dict_bytes(tags))
        self.checked_by_name[name] = (kind, tags)

    def remember_prefix_by_name(
        self, name: str, kind: str, host: str, tags: dict[str, Any], prefix: str
    ) -> None:
        """Remember the line prefix of the series of ``name`` looked at first."""
        if name not in self.prefix_by_name:
            size = len(name) + _TUPLE + 4 * _SLOT + dict_bytes(tags)
            self._charge(size + len(prefix))
        self.prefix_by_name[name] = (kind, host, tags, prefix)

    def _charge(self, size: int) -> None:
        self.bytes += size + _ENTRY
        if self.bytes > self.max_bytes:
            self.clear()
            self.bytes = size + _ENTRY

    def clear(self) -> None:
        """Forget everything."""
        self.checked.clear()
        self.prefixes.clear()
        self.checked_by_name.clear()
        self.prefix_by_name.clear()
        self.bytes = 0


def key_bytes(key: tuple[Any, ...]) -> int:
    """About how many bytes a series key takes: the tuples and their strings."""
    size = _TUPLE + _SLOT * len(key)
    for part in key:
        if type(part) is tuple:
            size += key_bytes(part)
        elif type(part) is str:
            size += len(part)
        else:
            size += 32  # a number, None
    return size


def dict_bytes(tags: dict[str, Any]) -> int:
    """About how many bytes a metric's tags dict kept by the cache takes (its strings are
    the metric's, charged as if they were the cache's alone)."""
    size = _DICT + _DICT_ITEM * len(tags)
    for key, value in tags.items():
        size += len(key) + (len(value) if type(value) is str else 32)
    return size
