"""Programs the queue tests run as processes of their own: producers and a pausing worker."""

from __future__ import annotations

#: ``python producer.py URL COUNT NAME [OPTIONS_JSON]``: reports COUNT gauges named NAME
#: (value and tag ``n`` = 0..COUNT-1, tag ``pid``), flushes, prints its stats as JSON.
#: OPTIONS_JSON holds Metrics options; ``retry`` is a dict of RetryPolicy fields.
#: With PRODUCE_SECONDS in the environment, the reports are spread over that long.
PRODUCER = """
import json, os, sys, time
from kaneda_core import RetryPolicy, connect

url, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
if "retry" in options:
    options["retry"] = RetryPolicy(**options["retry"])
metrics = connect(url, **options)
pause = float(os.environ.get("PRODUCE_SECONDS", "0")) / count
for n in range(count):
    metrics.gauge(name, n, tags={"n": n, "pid": os.getpid()})
    if pause:
        time.sleep(pause)
left = metrics.flush(float(os.environ.get("FLUSH_TIMEOUT", "120")))
print(json.dumps({"left": left, **metrics.stats().as_dict()}), flush=True)
metrics.close()
"""

#: ``python pausing_worker.py MARKER QUEUE_URL --to BACKEND_URL ...``: ``kaneda worker``
#: that, at its first delivery, writes MARKER and hangs there (for a test to kill it
#: while it holds messages it has not acknowledged).
PAUSING_WORKER = """
import pathlib, sys, time
from kaneda_core.cli import main
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager

marker = pathlib.Path(sys.argv[1])

class PauseAtFirstDelivery:
    @hookimpl
    def kaneda_filter_metric(self, metric):
        if not marker.exists():
            marker.write_text("delivering")
            time.sleep(600)
        return True

get_plugin_manager().register(PauseAtFirstDelivery())
sys.exit(main(["worker", *sys.argv[2:]]))
"""
