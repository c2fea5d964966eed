"""ZeroMQ queue for Kaneda: ``connect("zmq+tcp://127.0.0.1:5555")``, ``kaneda worker zmq+tcp://...``."""

from .backend import WorkerUnavailable, ZMQBackend
from .legacy import ZMQQueue, zmq_task
from .worker import ZMQWorker

__all__ = ["WorkerUnavailable", "ZMQBackend", "ZMQQueue", "ZMQWorker", "zmq_task"]
