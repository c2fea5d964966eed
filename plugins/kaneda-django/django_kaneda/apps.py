"""The Django app: at start-up, in the main thread, what a stop must not lose is seen to."""

from __future__ import annotations

from django.apps import AppConfig


class KanedaConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """``django_kaneda`` in ``INSTALLED_APPS``.

    ``django_kaneda.metrics`` is built on first use, most often in a request thread,
    where Python sets no signal handler: SIGTERM (``docker stop``) would then end the
    process with the metrics of its last requests queued. ``ready()`` runs in the main
    thread (``django.setup()``), and installs Kaneda's SIGTERM handler there when the
    settings deliver through a background worker.
    """

    name = "django_kaneda"

    def ready(self) -> None:
        from kaneda_core import ConfigurationError, deliver_on_terminate

        from .conf import read_configuration

        try:
            batching = read_configuration().batching
        except ConfigurationError:
            return  # said when the metrics are first used, naming the setting
        if batching:
            deliver_on_terminate()
