"""What the plugin remembers per series, bounded in bytes.

A series (measurement and tags) repeats: its checks and its escaped line prefix are
worked out once, then looked up. Tags can be long and series many, so the cache counts
the bytes it holds and starts again empty past ``max_bytes``; ``close()`` empties it.
"""

from __future__ import annotations

from typing import Any

#: The default bound of one backend's cache.
MAX_BYTES = 16 * 1024 * 1024
# What a dict or set entry costs beyond the strings it holds.
_ENTRY = 120


class SeriesCache:
    """Checked series and line prefixes of one backend."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        #: Series (kind, name, tags...) whose checks passed.
        self.checked: set[tuple[Any, ...]] = set()
        #: Series key -> the escaped start of its lines.
        self.prefixes: dict[tuple[Any, ...], str] = {}
        self.bytes = 0

    def remember_checked(self, key: tuple[Any, ...]) -> None:
        """Remember that the series ``key`` passed its checks."""
        self._charge(key_bytes(key))
        self.checked.add(key)

    def remember_prefix(self, key: tuple[Any, ...], prefix: str) -> None:
        """Remember the line prefix of the series ``key``."""
        self._charge(key_bytes(key) + len(prefix))
        self.prefixes[key] = prefix

    def _charge(self, size: int) -> None:
        self.bytes += size + _ENTRY
        if self.bytes > self.max_bytes:
            self.clear()
            self.bytes = size + _ENTRY

    def clear(self) -> None:
        """Forget everything."""
        self.checked.clear()
        self.prefixes.clear()
        self.bytes = 0


def key_bytes(key: tuple[Any, ...]) -> int:
    """About how many bytes the strings of a series key hold."""
    size = 0
    for part in key:
        if type(part) is tuple:
            size += key_bytes(part)
        elif type(part) is str:
            size += len(part)
        else:
            size += 8
    return size
