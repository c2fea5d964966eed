"""kaneda 1.0's import paths on top of kaneda-core.

Code written for kaneda 1.0 (``from kaneda import Metrics``, ``kaneda.backends``,
``kaneda.utils``, settings modules) runs unchanged. New code can use ``kaneda_core``.
"""

from .base import Metrics

__version__ = "2.0.0"
__all__ = ["Metrics"]

# No NullHandler on the "kaneda" logger (kaneda 1.0 added one): Kaneda reports its
# incidents there (metrics not delivered), and with no handler configured Python's last
# resort prints them on stderr; a NullHandler silenced every loss.
