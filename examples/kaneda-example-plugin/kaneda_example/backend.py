"""``csv``: one row per metric appended to a CSV file."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any

from kaneda_core import Backend, Metric
from kaneda_core.arguments import check_arguments
from kaneda_core.backend import url_options
from kaneda_core.urls import parse_url

COLUMNS = ["timestamp", "metric", "name", "value", "tags", "host", "id"]


class CsvBackend(Backend):
    """Appends each metric to ``path`` as a CSV row (values and tags as JSON)."""

    settings_namespace = "CSV"
    example_url = "csv:///var/log/metrics.csv"

    def __init__(self, path: str, write_header: bool = True) -> None:
        check_arguments(CsvBackend, locals())  # path=3 fails here, naming path
        self.path = path
        self.write_header = write_header
        self._file: Any = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> CsvBackend:
        """``csv:///var/log/metrics.csv``: the URL's path is the file."""
        path = parse_url(url, cls.example_url).path or None
        return cls(**{**url_options(cls, url, path=path), **overrides})

    def send(self, batch: Sequence[Metric]) -> None:
        """Append one row per metric and flush, so a batch is on disk when this returns."""
        if self._file is None:
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            if self.write_header and self._file.tell() == 0:
                csv.writer(self._file).writerow(COLUMNS)
        writer = csv.writer(self._file)
        for m in batch:
            writer.writerow(
                [
                    m.timestamp.isoformat(),
                    m.kind,
                    m.name,
                    json.dumps(m.value),
                    json.dumps(m.tags),
                    m.host,
                    "" if m.id is None else m.id,
                ]
            )
        self._file.flush()

    def close(self) -> None:
        """Close the file (reopened on the next send)."""
        if self._file is not None:
            self._file.close()
            self._file = None
