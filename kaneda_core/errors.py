"""The exceptions Kaneda raises. Every one is a :class:`KanedaError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Metric


class KanedaError(Exception):
    """Base class of every error raised by Kaneda."""


class InvalidMetric(KanedaError, ValueError):
    """A metric was given a bad name, value or tags.

    Raised at the call that reported it; the message names the field and the value.
    """


class ConfigurationError(KanedaError):
    """Kaneda was configured with something it cannot use (a URL, an option, a setting)."""


class ImproperlyConfigured(ConfigurationError, ImportError):
    """A backend was given arguments it cannot use, such as a client of the wrong class.

    Kept from kaneda 1.0 (``kaneda.exceptions.ImproperlyConfigured`` is this class), so
    code that caught it there keeps catching it.
    """


class BackendNotFound(ConfigurationError, LookupError):
    """No backend is installed under the requested name."""


class BackendLoadError(ConfigurationError, ImportError):
    """A backend is installed but its plugin failed to import."""


class PluginLoadError(ConfigurationError, ImportError):
    """A hook plugin is installed (on the ``kaneda`` entry points) but failed to load."""


class DeliveryError(KanedaError):
    """A backend could not store a batch, or part of one.

    ``retryable`` says whether sending the same metrics again may succeed (the server
    was down, timed out, or asked to slow down). ``metrics`` holds the metrics that were
    not stored when only part of a batch failed; ``None`` means the whole batch.
    ``rejected`` holds metrics of the same batch that failed for good even though the
    others may be retried (a bulk response with both a refused document and a 429).
    ``isolate`` says the store refused the whole request for what some metrics in it
    hold (a point it cannot parse) without saying which: Kaneda then sends it in halves,
    so the good metrics are stored and only the bad ones fail.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        metrics: Sequence[Metric] | None = None,
        rejected: Sequence[Metric] = (),
        isolate: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.metrics = metrics
        self.rejected = rejected
        self.isolate = isolate
