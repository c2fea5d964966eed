"""A stable identity for each reported metric, for backends that key documents by id.

A store that makes up a new id on every write (Elasticsearch's generated ``_id``,
MongoDB's ObjectId, RethinkDB's UUID) stores a batch twice when it is sent again after
its answer was lost. A backend that keys a metric without ``id_`` by
:func:`metric_digest` instead meets its own documents on the second send.
"""

from __future__ import annotations

import hashlib
import json

from kaneda_core.model import Metric

DIGEST_SIZE = 16
"""Bytes in a digest: 128 bits, no collision to fear in any one store."""

_PARTS = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=repr)


def metric_digest(metric: Metric) -> bytes:
    """16 bytes that identify ``metric``: the same on every send of it, and of nothing else.

    A BLAKE2b hash of what makes a metric unique: its host and nanosecond stamp (no two
    calls of one host share one), and its kind, name and tags (the aggregated points of
    every series carry one stamp). The value is left out: a later value sent for the same
    point is the same point. The parts are hashed as JSON, so no two lists of parts read
    alike (``"ab", "c"`` is not ``"a", "bc"``), with dict tags in key order.
    """
    parts = [metric.host, metric.epoch_ns, metric.kind, metric.name, metric.tags]
    return hashlib.blake2b(_PARTS.encode(parts).encode(), digest_size=DIGEST_SIZE).digest()
