"""The ``kaneda`` command: list backends, send one metric, run a queue worker, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import KanedaError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kaneda`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="kaneda", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("backends", help="list installed backends and hook plugins")

    send = commands.add_parser("send", help="send one metric and wait until it is stored")
    send.add_argument(
        "url", help="backend URL, e.g. influxdb://localhost:8086/metrics or logger://"
    )
    send.add_argument("kind", help="gauge, counter, timing, event, or a custom metric name")
    send.add_argument("name", help="the metric's name, e.g. requests")
    send.add_argument("value", help="a number; the text of an event; JSON for a custom metric")
    send.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)"
    )
    send.add_argument("--id", dest="id_", default=None, help="the metric's id")

    demo = commands.add_parser("demo", help="report a burst of metrics to the logger backend")
    demo.add_argument(
        "--file", default="kaneda-demo.jsonl", help="where the JSON lines go (default: %(default)s)"
    )
    demo.add_argument("--requests", type=int, default=2000, help="simulated requests")

    _add_worker_command(commands)

    args = parser.parse_args(argv)
    try:
        if args.command == "backends":
            return backends_command()
        if args.command == "send":
            return send_command(args.url, args.kind, args.name, args.value, args.tag, args.id_)
        if args.command == "worker":
            return worker_command(args)
        from .demo import run_demo

        return run_demo(args.file, args.requests)
    except KanedaError as error:
        print(f"kaneda: {error}", file=sys.stderr)
        return 1


def backends_command() -> int:
    """Print the installed backends and the hook plugins."""
    from .plugins import get_plugin_manager
    from .registry import available_backends

    rows = [("NAME", "ALIASES", "CLASS", "DISTRIBUTION", "VERSION", "LOADS")]
    failures = []
    for info in available_backends():
        rows.append(
            (
                info.name,
                ",".join(info.aliases) or "-",
                info.class_path,
                info.distribution or "-",
                info.version or "-",
                "yes" if info.loads else "NO",
            )
        )
        if info.error:
            failures.append(f"{info.name}: {info.error}")
    _print_table(rows)
    for failure in failures:
        print(f"  ! {failure}")

    manager = get_plugin_manager()
    hook_rows = [("HOOK PLUGIN", "DISTRIBUTION", "VERSION", "HOOKS")]
    for plugin, dist in manager.list_plugin_distinfo():
        callers = manager.get_hookcallers(plugin) or []
        hook_rows.append(
            (
                manager.get_name(plugin) or repr(plugin),
                dist.project_name,
                dist.version,
                ",".join(sorted(caller.name for caller in callers)),
            )
        )
    print()
    if len(hook_rows) > 1:
        _print_table(hook_rows)
    else:
        print("No hook plugins installed (entry-point group 'kaneda').")
    return 1 if failures else 0


def send_command(
    url: str, kind: str, name: str, raw_value: str, raw_tags: list[str], id_: str | None
) -> int:
    """Send one metric straight to the backend and report the outcome."""
    from .config import create_backend
    from .model import BUILTIN_KINDS, EVENT, Metric
    from .redact import redact_url

    tags = dict(_parse_tag(tag) for tag in raw_tags)
    value = _parse_value(kind, raw_value)
    metric = Metric.create(name, kind, value, tags, id_ if kind not in BUILTIN_KINDS else None)
    backend = create_backend(url)
    try:
        backend.check(metric)
        backend.send([metric])
    except KanedaError:
        raise
    except Exception as error:  # noqa: BLE001 - reported to the user as a failure
        print(
            f"kaneda: sending to {redact_url(url)} failed: "
            f"{backend.redact(f'{type(error).__name__}: {error}')}",
            file=sys.stderr,
        )
        return 1
    finally:
        backend.close()
    shown = value if kind != EVENT else repr(value)
    print(f"sent {kind} {name}={shown} to {redact_url(url)}")
    return 0


def _add_worker_command(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="deliver the metrics that arrive on a queue to a backend",
        description="Take batches off a queue (rq://, celery+redis://, celery+amqp://, "
        "zmq+tcp://) and deliver them to a backend until SIGTERM or SIGINT. A message is "
        "acknowledged once the backend has its metrics (with --buffer-path: once they "
        "are on disk).",
    )
    worker.add_argument("queue_url", help="the queue, e.g. rq://localhost:6379/0?queue_name=kaneda")
    worker.add_argument(
        "--to", required=True, metavar="BACKEND_URL", help="e.g. influxdb://localhost:8086/metrics"
    )
    worker.add_argument("--batch-size", type=int, default=1000, help="default: %(default)s")
    worker.add_argument(
        "--flush-interval", type=float, default=1.0, help="seconds (default: %(default)s)"
    )
    worker.add_argument(
        "--max-buffer", type=int, default=100_000, help="metrics (default: %(default)s)"
    )
    worker.add_argument("--buffer-path", default=None, help="a SQLite file to buffer metrics in")


def worker_command(args: argparse.Namespace) -> int:
    """Run ``kaneda worker``: log to stderr, deliver until stopped, print the stats."""
    import logging

    from .worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stats = run_worker(
        args.queue_url,
        args.to,
        batch_size=args.batch_size,
        flush_interval=args.flush_interval,
        max_buffer=args.max_buffer,
        buffer_path=args.buffer_path,
    )
    print(json.dumps(stats.as_dict()))
    return 0


def _parse_tag(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise KanedaError(f"--tag must look like KEY=VALUE, got {raw!r}")
    return key, value


def _parse_value(kind: str, raw: str) -> object:
    from .model import COUNTER, EVENT, GAUGE, TIMING

    if kind == EVENT:
        return raw
    if kind in (GAUGE, COUNTER, TIMING):
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                raise KanedaError(f"the value of a {kind} must be a number, got {raw!r}") from None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


if __name__ == "__main__":
    sys.exit(main())
