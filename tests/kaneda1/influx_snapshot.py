"""What an InfluxDB database holds, in a form two databases can be compared by."""

from __future__ import annotations

from typing import Any

from influx_server import InfluxServer


def snapshot(server: InfluxServer, database: str) -> dict[str, Any]:
    """Measurements, their tag keys, field keys with types, and every point but its time.

    Points are (measurement, tags, fields) with sorted items, in a sorted list: two
    databases written with the same calls at other times compare equal.
    """
    fields: dict[str, dict[str, str]] = {}
    for series in _series(server, database, "SHOW FIELD KEYS"):
        fields[series["name"]] = dict(series["values"])
    tags: dict[str, list[str]] = {}
    for series in _series(server, database, "SHOW TAG KEYS"):
        tags[series["name"]] = sorted(value[0] for value in series["values"])
    points = []
    for series in _series(server, database, "SELECT * FROM /.*/ GROUP BY *"):
        series_tags = tuple(sorted((k, v) for k, v in series["tags"].items() if v != ""))
        for row in series["values"]:
            values = dict(zip(series["columns"], row, strict=True))
            values.pop("time")
            point_fields = tuple(sorted((k, v) for k, v in values.items() if v is not None))
            points.append((series["name"], series_tags, point_fields))
    return {"fields": fields, "tags": tags, "points": sorted(points, key=repr)}


def _series(server: InfluxServer, database: str, query: str) -> list[dict[str, Any]]:
    result = server.query(query, db=database)["results"][0]
    if "error" in result:
        raise AssertionError(result["error"])
    return result.get("series", [])  # type: ignore[no-any-return]
