"""A backend written the kaneda 1.0 way: subclass BaseBackend, implement report."""

import threading

from kaneda.backends import BaseBackend


class RecordingBackend(BaseBackend):
    """Keeps every report's payload, and the thread that reported it."""

    settings_namespace = "RECORDING"
    reported = []

    def __init__(self, label="default"):
        self.label = label

    def report(self, name, metric, value, tags, id_=None):
        payload = self._get_payload(name, value, tags)
        payload["metric"] = metric
        if id_:
            payload["_id"] = id_
        self.reported.append((threading.current_thread().name, payload))
