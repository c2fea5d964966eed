"""kaneda 1.0's import paths on top of kaneda-core.

Code written for kaneda 1.0 (``from kaneda import Metrics``, ``kaneda.backends``,
``kaneda.utils``, settings modules) runs unchanged. New code can use ``kaneda_core``.
"""

import logging

from .base import Metrics

__version__ = "2.0.0"
__all__ = ["Metrics"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
