"""The kaneda-influx tests' throwaway InfluxDB server, for the queue tests and benchmarks.

Imported from ``plugins/kaneda-influx/tests/influx_server.py`` by path, so both use one
helper; points are counted with InfluxQL.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_HELPERS = ROOT / "plugins" / "kaneda-influx" / "tests"
if str(_HELPERS) not in sys.path:
    sys.path.insert(0, str(_HELPERS))

from influx_server import InfluxServer, stored_metrics  # noqa: E402

__all__ = ["InfluxServer", "count_points", "stored_metrics"]


def count_points(server: InfluxServer, database: str, measurement: str = "/.*/") -> int:
    """How many points ``database`` holds (0 if it does not exist yet)."""
    answer = server.query(f"SELECT count(*) FROM {measurement}", db=database)
    result = answer["results"][0]
    if "error" in result:
        if "database not found" in result["error"]:
            return 0
        raise AssertionError(result["error"])
    total = 0
    for series in result.get("series", []):
        counts = [value for value in series["values"][0][1:] if isinstance(value, int)]
        total += max(counts, default=0)
    return total
