"""Programs tests and benchmarks run as processes of their own: producers, a pausing worker,
a process on a coarse clock."""

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

#: ``python thread_imports.py URL [OPTIONS_JSON]``: reports one metric of each kind,
#: flushes and closes (a short retry policy: the store may be down), and prints as JSON
#: the stats and the modules Kaneda's own threads imported, inside the fork gate (in a
#: backend or a hook, which a fork waits for) and outside it. A module a thread imports
#: while the process forks stays locked in the child, whose own import of it waits for
#: ever: outside the gate, Kaneda's threads import nothing.
THREAD_IMPORTS = """
import json, sys, threading

imported = {"inside": [], "outside": []}

def record(event, args):
    if event == "import" and threading.current_thread().name.startswith("kaneda"):
        imported["inside" if gate.entered() else "outside"].append(args[0])

from kaneda_core import RetryPolicy, connect
from kaneda_core.fork_gate import gate

sys.addaudithook(record)

url = sys.argv[1]
options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
options.setdefault("retry", RetryPolicy(attempts=2, initial_delay=0.05))
metrics = connect(url, **options)
metrics.increment("probe.count", tags={"a": "b"})
metrics.gauge("probe.gauge", 1.5)
metrics.timing("probe.timing", 2.0)
metrics.event("probe.event", "text")
metrics.increment("probe.count", tags={"a": "b"})
left = metrics.flush(10)
metrics.close(10)
imported = {where: sorted(set(modules)) for where, modules in imported.items()}
print(json.dumps({"imported": imported, "left": left, **metrics.stats().as_dict()}))
"""


#: ``python -c COARSE_CLOCK_REPORTER URL``: a process whose clock reads in steps of
#: STEP_NS (macOS's in microseconds, Windows' in milliseconds), reporting CALLS
#: increments of one series as fast as it can; exits 0 when close() left none.
COARSE_CLOCK_REPORTER = """
import os, sys, time
step = int(os.environ["STEP_NS"])
real = time.time_ns
time.time_ns = lambda: real() // step * step  # before Kaneda reads the clock
from kaneda_core import connect
metrics = connect(sys.argv[1], batch_size=5000)
for _ in range(int(os.environ["CALLS"])):
    metrics.increment("requests", tags={"route": "/"})
sys.exit(1 if metrics.close(60) else 0)
"""


#: ``python -c FLEET_MEMBER PATH OUT NUMBER CALLS``: one of a fleet of processes sharing
#: the disk buffer PATH; CALLS increments (tags ``worker`` = NUMBER, ``i``) into a log file
#: OUT; prints the slowest call in seconds and its stats as JSON.
FLEET_MEMBER = """
import json, sys, time
from kaneda_core import Metrics
from kaneda_core.backends import LoggerBackend

path, out, number, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
metrics = Metrics(LoggerBackend(filename=out), buffer_path=path)
slowest = 0.0
for i in range(calls):
    started = time.perf_counter()
    metrics.increment("requests", tags={"worker": number, "i": str(i)})
    slowest = max(slowest, time.perf_counter() - started)
left = metrics.close(60)
stats = metrics.stats()
print(json.dumps({
    "left": left, "slowest": slowest, "sent": stats.sent, "queued": stats.queued,
    "failed": stats.failed,
}))
"""
