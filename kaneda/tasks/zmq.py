"""kaneda 1.0's ZeroMQ worker: ``zmqworker --connection_url tcp://127.0.0.1:5555``."""

from kaneda.queues import plugin_module

zmq_task = plugin_module("kaneda_zmq.legacy", "zmq", "kaneda.tasks.zmq").zmq_task

__all__ = ["zmq_task"]
