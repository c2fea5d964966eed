"""Looking up installed plugins in a process that may have no file descriptor left.

Python's ``importlib.metadata`` reads a folder it cannot open, for want of a descriptor
(EMFILE: the process has its limit open; ENFILE: the host has), as an empty folder, and
keeps that answer while the folder is unchanged: for the rest of the process, every
installed distribution, Kaneda's built-in backends included, looks uninstalled. So
Kaneda checks for a spare descriptor before it scans entry points, and raises
:class:`ConfigurationError` naming the cause instead of scanning; a scan that misses
Kaneda's own distribution is not kept, and Python's record of it is forgotten, so a
later ``Metrics()`` looks again.

Also what a lazy import that cannot be made says: for want of a descriptor, or at the
interpreter's exit.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigurationError, KanedaError

if TYPE_CHECKING:
    from collections.abc import Iterator

F = TypeVar("F", bound=Callable[..., Any])

#: Out of descriptors: this process (EMFILE), the host (ENFILE).
_EXHAUSTED = (errno.EMFILE, errno.ENFILE)


def exhausted() -> OSError | None:
    """The error opening a file gives now if no descriptor is left, else None."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as error:
        return error if error.errno in _EXHAUSTED else None
    os.close(fd)
    return None


def check(what: str, cause: BaseException | None = None) -> None:
    """Raise ConfigurationError ("cannot ``what``") if no descriptor is left now."""
    error = exhausted()
    if error is None:
        return
    forget_scans()
    code = error.errno or errno.EMFILE
    raise ConfigurationError(
        f"cannot {what}: {os.strerror(code).lower()} ({errno.errorcode[code]}). Close "
        "files this process no longer needs or raise its limit (ulimit -n); a later "
        "Metrics() looks again"
    ) from cause or error


@contextlib.contextmanager
def importing(what: str) -> Iterator[None]:
    """Around a lazy import: one that fails for want of a descriptor raises as check does.

    Python raises OSError for a module's file it cannot open, ImportError for an
    extension module's. Nor can anything be imported once the interpreter's exit has
    cleared its modules (a first ``Metrics()`` made in a ``__del__`` then): said too.
    """
    try:
        yield
    except (ImportError, OSError) as error:
        if isinstance(error, ImportError) and sys.meta_path is None:
            raise KanedaError(
                f"cannot {what} while Python shuts down: nothing can be imported any more, "
                "and this process has not used Kaneda yet. Make the Metrics before the "
                "interpreter's exit (a module global, made at import)"
            ) from error
        check(what, error)
        raise


def explained(what: str) -> Callable[[F], F]:
    """Decorate a function whose lazy imports may fail for want of a descriptor (see
    importing): ``Metrics()`` and ``connect()``, which import what they use on first use.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def explaining(*args: Any, **kwargs: Any) -> Any:
            with importing(what):
                return function(*args, **kwargs)

        return explaining  # type: ignore[return-value]

    return decorate


def forget_scans() -> None:
    """Forget what ``importlib.metadata`` read of the folders on ``sys.path``."""
    for name in ("importlib.metadata", "importlib_metadata"):
        fast_path = getattr(sys.modules.get(name), "FastPath", None)
        clear = getattr(getattr(fast_path, "__new__", None), "cache_clear", None)
        if clear is not None:
            clear()
