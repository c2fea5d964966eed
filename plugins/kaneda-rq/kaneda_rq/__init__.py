"""RQ queue for Kaneda: ``connect("rq://localhost:6379/0?queue_name=kaneda")``.

Deliver with ``kaneda worker rq://... --to BACKEND_URL`` or ``rq worker kaneda``.
"""

from .backend import RQBackend
from .jobs import BatchNotStored, PoisonMessage
from .legacy import RQQueue

__all__ = ["BatchNotStored", "PoisonMessage", "RQBackend", "RQQueue"]
