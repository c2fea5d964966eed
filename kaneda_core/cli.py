"""The ``kaneda`` command: list backends, send one metric, run a queue worker, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import KanedaError

DESCRIPTION = """\
Kaneda reports metrics and events to the storage backend you choose.
This command lists the installed backends, sends one metric, runs a demo,
and runs the worker that delivers what a queue carries."""

EXAMPLES = """\
examples:
  kaneda backends
  kaneda send logger:///tmp/metrics.jsonl gauge queue.depth 12 --tag worker=w1
  kaneda send influxdb://localhost:8086/metrics counter http.requests 1
  kaneda send memory:// custom:query_time search '{"start": 120, "end": 230}'
  kaneda demo --file /tmp/kaneda-demo.jsonl

Run "kaneda COMMAND --help" for a command's arguments."""

#: What ``kaneda send`` takes as KIND, for its help and its errors.
SEND_KINDS = "gauge, counter, timing, event, or custom:METRIC (e.g. custom:query_time)"

#: Words of the Python API (and of StatsD) that mean a kind by another name.
KIND_SYNONYMS = {
    "increment": "counter",
    "decrement": "counter",
    "incr": "counter",
    "decr": "counter",
    "count": "counter",
    "timer": "timing",
    "timed": "timing",
    "time": "timing",
    "timings": "timing",
}

COMMANDS = ("backends", "send", "demo", "worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kaneda`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="kaneda",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "backends",
        help="list installed backends and hook plugins",
        description="List the installed backends (name, aliases, class, distribution, "
        "version, whether each loads) and the hook plugins with the hooks they implement.",
    )

    send = commands.add_parser(
        "send",
        help="send one metric and wait until it is stored",
        description="Send one metric straight to a backend, in this process, and say "
        "whether it was stored. Exits non-zero when it was not.",
    )
    send.add_argument(
        "url", help="backend URL, e.g. influxdb://localhost:8086/metrics or logger://"
    )
    send.add_argument("kind", help=SEND_KINDS)
    send.add_argument("name", help="the metric's name, e.g. requests")
    send.add_argument(
        "value",
        help="a number (gauge, counter, timing); the text of an event; JSON for custom: "
        "12, true, '\"text\"' or '{\"start\": 1}'",
    )
    send.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)"
    )
    send.add_argument(
        "--id", dest="id_", default=None, metavar="ID", help="the id of a custom metric"
    )

    demo = commands.add_parser(
        "demo",
        help="report a burst of metrics to the logger backend",
        description="Report a simulated web shop's metrics (requests, timings, events, "
        "orders) to the built-in logger backend, then summarize the JSON lines written.",
    )
    demo.add_argument(
        "--file", default="kaneda-demo.jsonl", help="where the JSON lines go (default: %(default)s)"
    )
    demo.add_argument(
        "--requests",
        type=_at_least_one,
        default=2000,
        help="simulated requests, a whole number of at least 1 (default: %(default)s)",
    )

    _add_worker_command(commands)

    args = parser.parse_args(_command_in_lower_case(sys.argv[1:] if argv is None else argv))
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
    except KeyboardInterrupt:
        print("kaneda: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (kaneda backends | head): stop quietly, as other tools do,
        # and keep the interpreter's final flush from raising again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _command_in_lower_case(argv: Sequence[str]) -> list[str]:
    """``argv`` with its command in lower case: ``kaneda Send`` is ``kaneda send``."""
    argv = list(argv)
    for index, word in enumerate(argv):
        if not word.startswith("-"):
            if word.lower() in COMMANDS:
                argv[index] = word.lower()
            break
    return argv


def _at_least_one(raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {raw!r}")
    return number


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
    from .errors import DeliveryError
    from .metrics import hooks_default_tags
    from .model import BUILTIN_KINDS, EVENT, Metric
    from .redact import redact_text, redact_url
    from .urls import url_password

    kind = _parse_kind(kind)
    if id_ is not None and kind in BUILTIN_KINDS:
        raise KanedaError(
            f"--id is for custom metrics (custom:METRIC), which keep an id; a {kind} has none. "
            f"Leave --id out, or send custom:{kind}"
        )
    tags = _parse_tags(raw_tags)
    value = _parse_value(kind, raw_value)
    metric = Metric.create(name, kind, value, tags, id_)
    backend = create_backend(url)
    password = url_password(url)
    # The metric a reporting call would store: the hook plugins' default tags, the
    # call's own winning, and their filters' say.
    defaults = hooks_default_tags(backend)
    if defaults:
        metric = Metric.create(name, kind, value, {**defaults, **tags}, id_)
    dropped_by = _filtered_by(metric)
    if dropped_by is not None:
        backend.close()
        print(
            f"kaneda: not sent: the kaneda_filter_metric hook of plugin {dropped_by!r} drops "
            "this metric (as it would a reporting call's)",
            file=sys.stderr,
        )
        return 1

    def masked(error: BaseException) -> str:
        # The backend's own redaction, and the URL's password wherever it is quoted.
        text = f"{type(error).__name__}: {error}"
        try:
            text = backend.redact(text)
        except Exception:  # noqa: BLE001 - a broken redact must not show the text whole
            text = type(error).__name__
        return redact_text(text, password)

    try:
        backend.check(metric)
        backend.send([metric])
    except DeliveryError as error:
        print(f"kaneda: sending to {redact_url(url)} failed: {masked(error)}", file=sys.stderr)
        return 1
    except KanedaError:
        raise
    except Exception as error:  # noqa: BLE001 - reported to the user as a failure
        print(f"kaneda: sending to {redact_url(url)} failed: {masked(error)}", file=sys.stderr)
        return 1
    finally:
        try:
            backend.close()
        except Exception as error:  # noqa: BLE001 - the metric was sent: say so, go on
            print(f"kaneda: closing the backend failed: {masked(error)}", file=sys.stderr)
    shown = value if kind != EVENT else repr(value)
    _print_safely(f"sent {kind} {name}={shown} to {redact_url(url)}")
    return 0


def _filtered_by(metric: Any) -> str | None:
    """The plugin whose ``kaneda_filter_metric`` hook drops ``metric``, if one does.

    As delivery does: only ``False`` drops, and a hook that raises keeps the metric.
    """
    from . import plugins

    for plugin, function, arguments in plugins.implementations("kaneda_filter_metric"):
        try:
            verdict = function(metric=metric) if "metric" in arguments else function()
        except Exception as error:  # noqa: BLE001 - said, and the metric is kept
            print(
                f"kaneda: the kaneda_filter_metric hook of plugin {plugin!r} raised "
                f"{type(error).__name__}: {error}; the metric is kept",
                file=sys.stderr,
            )
            continue
        if verdict is False:
            return plugin
    return None


def _print_safely(text: str) -> None:
    """Print ``text``, with escapes for what the terminal's encoding cannot show."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def _parse_kind(raw: str) -> str:
    """The metric kind ``raw`` names: a built-in kind, or ``custom:METRIC``'s METRIC."""
    from difflib import get_close_matches

    from .model import BUILTIN_KINDS

    if raw in BUILTIN_KINDS:
        return raw
    prefix, sep, custom = raw.partition(":")
    if sep and prefix == "custom" and custom:
        return custom
    spelt = next((mark for mark in ":=/." if mark in raw), "")
    prefix, _, custom = raw.partition(spelt) if spelt else (raw, "", "")
    close = get_close_matches(raw.lower(), sorted(BUILTIN_KINDS), n=1, cutoff=0.6)
    if raw.lower() in KIND_SYNONYMS:
        hint = f" Did you mean {KIND_SYNONYMS[raw.lower()]!r}?"
    elif custom and prefix.lower() == "custom":
        hint = f" Did you mean 'custom:{custom}'?"
    elif close:
        hint = f" Did you mean {close[0]!r}?"
    elif raw and not sep:
        hint = f" For a custom metric, write custom:{raw}."
    else:
        hint = ""
    raise KanedaError(f"KIND must be {SEND_KINDS}; got {raw!r}.{hint}")


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
    # stevedore warns of a name it cannot find; the error that follows says more, once.
    logging.getLogger("stevedore").setLevel(logging.ERROR)
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


def _parse_tags(raw_tags: list[str]) -> dict[str, str]:
    """The ``--tag KEY=VALUE`` options as a dict; a key given twice is refused, not overwritten."""
    tags: dict[str, str] = {}
    for raw in raw_tags:
        key, value = _parse_tag(raw)
        if key in tags:
            raise KanedaError(
                f"--tag {key} is given twice ({_shown(tags[key])} and {_shown(value)}): "
                "give each tag once"
            )
        tags[key] = value
    return tags


def _parse_tag(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise KanedaError(f"--tag must look like KEY=VALUE, got {_shown(raw)}")
    return key, value


#: Beyond a double's range (|value| < 2**1023): what no metric holds, said with the limit.
_METRIC_DIGITS = "a metric's numbers are below 2**1023, about 308 digits"


def _parse_value(kind: str, raw: str) -> object:
    from .model import COUNTER, EVENT, GAUGE, TIMING

    if kind == EVENT:
        return raw
    if kind in (GAUGE, COUNTER, TIMING):
        return _parse_number(kind, raw)
    try:
        return json.loads(raw, parse_float=_json_float)
    except json.JSONDecodeError:
        raise KanedaError(
            f"the value of a custom metric is JSON: a number (12), true or false, a string "
            f"in quotes ('\"text\"') or an object ('{{\"start\": 1}}'); got {_shown(raw)}"
        ) from None
    except ValueError:  # valid JSON, but an integer longer than int() reads from text
        raise KanedaError(
            f"the value of a custom metric holds an integer of more than "
            f"{sys.get_int_max_str_digits()} digits, more than Python reads from text, "
            f"and {_METRIC_DIGITS}; got {_shown(raw)}"
        ) from None


def _json_float(text: str) -> float:
    """A JSON number as a float; one beyond a float's range is refused as written, not as inf."""
    import math

    number = float(text)
    if math.isinf(number):
        raise KanedaError(
            f"the value of a custom metric holds {_shown(text)}, beyond a float's range "
            f"({_METRIC_DIGITS})"
        )
    return number


def _parse_number(kind: str, raw: str) -> int | float:
    import math
    import re

    try:
        return int(raw)
    except ValueError:
        if re.fullmatch(r"\s*[+-]?[0-9_]+\s*", raw):  # an integer, too long for int()
            raise KanedaError(
                f"the value of a {kind} is an integer of more than "
                f"{sys.get_int_max_str_digits()} digits, more than Python reads from text, "
                f"and {_METRIC_DIGITS}; got {_shown(raw)}"
            ) from None
    try:
        number = float(raw)
    except ValueError:
        raise KanedaError(f"the value of a {kind} must be a number, got {_shown(raw)}") from None
    if math.isinf(number) and "inf" not in raw.lower():  # 1e400: said as written, not as inf
        raise KanedaError(
            f"the value of a {kind} is beyond a float's range ({_METRIC_DIGITS}); got {_shown(raw)}"
        )
    return number


def _shown(raw: str, limit: int = 60) -> str:
    """``raw`` quoted for a message; cut, with its length, when longer than ``limit``."""
    if len(raw) <= limit:
        return repr(raw)
    return f"{raw[: limit - 20]!r}...{raw[-10:]!r} ({len(raw)} characters)"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


if __name__ == "__main__":
    sys.exit(main())
