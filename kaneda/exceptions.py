"""kaneda 1.0's exceptions, each also a :class:`kaneda_core.KanedaError`."""

from kaneda_core.errors import ConfigurationError, ImproperlyConfigured

__all__ = ["ImproperlyConfigured", "SettingsError", "UnexistingKanedaClass"]


class UnexistingKanedaClass(ConfigurationError, ImportError):
    """Kaneda is configured with a backend or queue class that does not exist."""


class SettingsError(ConfigurationError):
    """Kaneda has no settings module, or it lacks a required setting."""
