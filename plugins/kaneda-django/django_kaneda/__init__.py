"""Kaneda for Django: kaneda 1.0's ``django_kaneda``, and request metrics.

>>> from django_kaneda import metrics          # configured from settings.py, on first use
>>> metrics.increment("user_profile.views")    # doctest: +SKIP

``metrics`` is built from Django's settings the first time it is used (see
:mod:`django_kaneda.conf`): ``KANEDA_BACKEND`` or ``KANEDA_QUEUE`` (a class path, kaneda
1.0's way, delivering in the caller's thread), ``KANEDA_URL`` (a backend URL, delivering
from a background worker), ``KANEDA_DEBUG`` (the logger backend), and
``KANEDA_OPTIONS`` (``Metrics`` options). Request metrics:
``django_kaneda.middleware.MetricsMiddleware``.
"""

from __future__ import annotations

from typing import Any

from django.utils.functional import LazyObject, empty

from .reporting import add_request_tags

__version__ = "2.0.0"


class LazyMetrics(LazyObject):  # type: ignore[misc]  # Django ships no type hints
    """A ``Metrics`` built from Django's settings when first used, as in kaneda 1.0."""

    def _setup(self) -> None:
        from .conf import read_configuration

        self._wrapped = read_configuration().build_metrics()

    def __repr__(self) -> str:
        if self._wrapped is empty:
            return "<LazyMetrics (built from the settings on first use)>"
        return f"<LazyMetrics {self._wrapped!r}>"

    def _wrapped_metrics(self) -> Any:
        """The ``Metrics`` itself (built now if it was not yet)."""
        if self._wrapped is empty:
            self._setup()
        return self._wrapped


metrics = LazyMetrics()

__all__ = ["LazyMetrics", "add_request_tags", "metrics"]
