"""What a process reported is delivered however it ends: SIGTERM, SIGHUP, uWSGI's workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")


def _run(code: str, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_process_ended_by_a_signal_delivers_what_it_queued_and_dies_of_it(
    tmp_path: Path, number: signal.Signals
) -> None:
    """docker stop, systemctl stop, a pod's eviction (SIGTERM) or a closed terminal or SSH
    session (SIGHUP): the default action ended the process without its exit handlers,
    and what was queued was lost, silently."""
    out = tmp_path / "m.jsonl"
    app = _run(
        f"""
        import time
        from kaneda_core import Metrics
        metrics = Metrics("logger://{out}", flush_interval=60)
        for i in range(500):
            metrics.gauge("g", i)
        print("ready", flush=True)
        time.sleep(60)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    app.send_signal(number)
    _, err = app.communicate(timeout=30)
    assert app.returncode == -number, err  # the same status as without Kaneda
    assert len(_lines(out)) == 500, err


@pytest.mark.parametrize("waiting_in", ["flush", "close"])
def test_a_sigterm_while_the_main_thread_waits_in_kaneda_delivers_what_is_queued(
    tmp_path: Path, waiting_in: str
) -> None:
    """A job loop that flushes after each job, or a shutdown in close(), when docker stop
    comes: the handler interrupts Kaneda's own wait. It closed without waiting, and all
    but the batch in flight was lost (40 of 50 here)."""
    out = tmp_path / "m.txt"
    app = _run(
        f"""
        import time
        from kaneda_core import Backend, Metrics

        class Slow(Backend):  # slow, not down: all of it fits in exit_timeout
            def send(self, batch):
                time.sleep(0.3)
                with open({str(out)!r}, "a") as file:
                    file.write("x\\n" * len(batch))

        metrics = Metrics(Slow(), batch_size=10, exit_timeout=10)
        for i in range(50):
            metrics.increment("jobs")
        print("ready", flush=True)
        metrics.{waiting_in}()
        time.sleep(30)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    time.sleep(0.4)  # inside the wait, a batch or two delivered
    app.send_signal(signal.SIGTERM)
    _, err = app.communicate(timeout=30)
    assert app.returncode == -signal.SIGTERM, err
    assert out.read_text().count("x") == 50, err
    assert "not delivered" not in err


@pytest.mark.parametrize(
    "then", ["nothing", "a Metrics in the main thread", "deliver_on_terminate"]
)
def test_a_first_metrics_made_in_another_thread_still_delivers_at_sigterm(
    tmp_path: Path, then: str
) -> None:
    """A lazy global built by a request thread: Python lets only the main thread set a
    signal handler, so SIGTERM ended the process with everything queued, silently."""
    out = tmp_path / "m.jsonl"
    main_thread = {
        "nothing": "",
        "a Metrics in the main thread": f"Metrics('logger://{out}', flush_interval=60)",
        "deliver_on_terminate": "kaneda_core.deliver_on_terminate()",
    }[then]
    app = _run(
        f"""
        import threading, time
        import kaneda_core
        from kaneda_core import Metrics
        made = []
        thread = threading.Thread(
            target=lambda: made.append(Metrics("logger://{out}", flush_interval=60))
        )
        thread.start()
        thread.join()
        {main_thread}
        for i in range(100):
            made[0].increment("jobs")
        print("ready", flush=True)
        time.sleep(30)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    app.send_signal(signal.SIGTERM)
    _, err = app.communicate(timeout=30)
    assert app.returncode == -signal.SIGTERM, err
    if then == "nothing":  # nothing Kaneda may do: it says so, once, and how to fix it
        assert err.count("kaneda_core.deliver_on_terminate()") == 1, err
        assert _lines(out) == []
    else:
        assert len(_lines(out)) == 100, err
        assert "outside the main thread" in err  # said when the first was made


def test_django_metrics_first_used_in_a_request_thread_deliver_at_sigterm(
    tmp_path: Path,
) -> None:
    """django_kaneda.metrics is built on first use, in a request thread: the app's
    ready() (the main thread, django.setup()) installs the handler."""
    pytest.importorskip("django")
    out = tmp_path / "m.jsonl"
    app = _run(
        f"""
        import threading, time
        import django
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["django_kaneda"], KANEDA_URL="logger://{out}")
        django.setup()
        import django_kaneda
        threads = [
            # The attribute read in the thread: the thread builds the metrics.
            threading.Thread(target=lambda: django_kaneda.metrics.increment("requests"))
            for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print("ready", flush=True)
        time.sleep(30)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    app.send_signal(signal.SIGTERM)
    _, err = app.communicate(timeout=30)
    assert app.returncode == -signal.SIGTERM, err
    assert len(_lines(out)) == 20, err


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """Under nohup SIGHUP is ignored: Kaneda leaves it so, and the process lives on."""
    out = tmp_path / "m.jsonl"
    app = _run(
        f"""
        import signal, sys
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does
        from kaneda_core import Metrics
        metrics = Metrics("logger://{out}", flush_interval=60)
        metrics.gauge("g", 1)
        print("ready", flush=True)
        sys.stdin.readline()
        print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, flush=True)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    app.send_signal(signal.SIGHUP)
    output, err = app.communicate("go\n", timeout=30)
    assert app.returncode == 0 and output.strip() == "True", (output, err)
    assert len(_lines(out)) == 1  # delivered at the normal exit


def test_a_sigterm_handler_the_application_sets_later_gets_the_signal_once(
    tmp_path: Path,
) -> None:
    """A server installs its own handler after Kaneda's (uvicorn, gunicorn): it wins, and
    Kaneda's watcher never sends it the signal again."""
    out = tmp_path / "m.jsonl"
    app = _run(
        f"""
        import signal, sys, time
        from kaneda_core import Metrics
        metrics = Metrics("logger://{out}", flush_interval=60)
        calls = []
        signal.signal(signal.SIGTERM, lambda *_: calls.append(time.monotonic()))
        metrics.gauge("g", 1)
        print("ready", flush=True)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            time.sleep(0.05)
        print(len(calls), flush=True)
        """,
        tmp_path,
    )
    assert app.stdout is not None and app.stdout.readline().strip() == "ready"
    app.send_signal(signal.SIGTERM)
    output, err = app.communicate(timeout=30)
    assert app.returncode == 0 and output.strip() == "1", (output, err)
    assert len(_lines(out)) == 1  # delivered at the normal exit


UWSGI_STAND_IN = """
    import ctypes, os, sys, time, types

    # What uWSGI gives the application: a module named uwsgi, whose post_fork_hook it
    # calls in each worker it forks in C (no Python fork callbacks run). A stand-in:
    # the fork below is libc's, as uWSGI's is.
    uwsgi = types.ModuleType("uwsgi")
    earlier = []
    uwsgi.post_fork_hook = lambda: earlier.append(os.getpid())
    sys.modules["uwsgi"] = uwsgi

    from kaneda_core import Metrics
    metrics = Metrics("logger://{out}", flush_interval=0.05)
    metrics.gauge("master", 1)
    metrics.flush(5)
    # PyDLL: the interpreter's lock stays held across the fork, as in uWSGI's master.
    pid = ctypes.PyDLL(None).fork()
    if pid == 0:
        uwsgi.post_fork_hook()  # as uWSGI does in the worker
        for i in range(200):
            metrics.gauge("worker", i)
        time.sleep(1)  # delivered by the worker's own thread, before any exit
        with open("{seen}", "w") as seen:
            seen.write(str(metrics.stats().sent) + " " + str(earlier == [os.getpid()]))
        os._exit(0)
    os.waitpid(pid, 0)
    print("done", flush=True)
"""


def test_a_worker_uwsgi_forks_in_c_delivers_through_the_post_fork_hook(tmp_path: Path) -> None:
    """uWSGI loads the application in its master and forks workers in C: no Python fork
    callback ran, so a worker kept its parent's connections, had no delivery thread and
    delivered nothing while it ran. Kaneda chains uWSGI's post_fork_hook."""
    out, seen = tmp_path / "m.jsonl", tmp_path / "seen"
    app = _run(UWSGI_STAND_IN.format(out=out, seen=seen), tmp_path)
    output, err = app.communicate(timeout=60)
    assert app.returncode == 0 and output.strip() == "done", err
    names = [line["name"] for line in _lines(out)]
    assert names.count("worker") == 200 and names.count("master") == 1, err
    assert seen.read_text() == "200 True"  # the child's own counts; the earlier hook ran


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_metrics_made_in_a_del_at_the_interpreter_s_exit(tmp_path: Path, warm: bool) -> None:
    # Nothing can be imported once the exit cleared sys.modules: Metrics() raised
    # "ImportError: sys.meta_path is None" from an import inside a function.
    code = f"""
        import sys
        from kaneda_core import KanedaError, Metrics, stamps
        from kaneda_core.backends.memory import MemoryBackend
        stamps.SHARED_MEMORY = {str(tmp_path)!r}
        if {warm!r}:
            Metrics(MemoryBackend()).close()

        class Lazy:
            def __del__(self):
                try:
                    metrics = Metrics(MemoryBackend())
                    metrics.increment("z")
                    print("stored", len(metrics.backend.metrics), flush=True)
                except KanedaError as error:
                    print("KanedaError", error, flush=True)

        keep = Lazy()
        """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    if warm:
        assert done.stdout.split() == ["stored", "1"], done.stderr
    else:
        assert done.stdout.startswith("KanedaError cannot "), done.stderr
        assert "while Python shuts down" in done.stdout


UVICORN_SERVED = """
    from kaneda_core import Metrics

    metrics = Metrics("logger://{out}", flush_interval=60)
    for i in range(300):
        metrics.gauge("g", i)


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":  # --lifespan on: startup and shutdown answered
            while True:
                event = (await receive())["type"].rsplit(".", 1)[-1]
                await send({{"type": f"lifespan.{{event}}.complete"}})
                if event == "shutdown":
                    return
        await send({{"type": "http.response.start", "status": 204, "headers": []}})
        await send({{"type": "http.response.body", "body": b""}})
"""


@pytest.mark.parametrize("before", [False, True], ids=["made-while-serving", "one-made-before"])
@pytest.mark.parametrize("lifespan", ["on", "off"])
def test_a_metrics_made_while_uvicorn_holds_sigterm_delivers_when_it_raises_it_again(
    tmp_path: Path, lifespan: str, before: bool
) -> None:
    """A worker of ``uvicorn --workers N`` (or ``--reload``) imports the application while
    uvicorn's handler holds SIGTERM: Kaneda set none, uvicorn put the default back after
    its shutdown and raised the signal again, and the worker died with its queue (300 of
    300 lost here). Ran in-process as the worker runs it: the server imports the app."""
    pytest.importorskip("uvicorn.server")
    out, early = tmp_path / "m.jsonl", tmp_path / "early.jsonl"
    (tmp_path / "served.py").write_text(textwrap.dedent(UVICORN_SERVED.format(out=out)))
    app = _run(
        f"""
        import sys
        import uvicorn
        sys.path.insert(0, {str(tmp_path)!r})
        if {before!r}:  # Kaneda's handler set before the server: uvicorn puts it back
            from kaneda_core import Metrics
            Metrics("logger://{early}", flush_interval=60).gauge("early", 1)
        config = uvicorn.Config(
            "served:app", host="127.0.0.1", port=0, lifespan={lifespan!r}, log_level="info"
        )
        uvicorn.Server(config).run()
        """,
        tmp_path,
    )
    assert app.stderr is not None
    heard = []
    for line in app.stderr:
        heard.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        raise AssertionError("".join(heard))
    app.send_signal(signal.SIGTERM)
    _, err = app.communicate(timeout=60)
    err = "".join(heard) + err
    assert app.returncode == -signal.SIGTERM, err  # as uvicorn ends it without Kaneda
    assert len(_lines(out)) == 300, err
    assert len(_lines(early)) == (1 if before else 0), err


UWSGI_WITHOUT_THREADS = """
    import logging, sys, types

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # uWSGI 2.0.21 (Debian 12's) without --enable-threads, in a worker.
    uwsgi = types.ModuleType("uwsgi")
    uwsgi.has_threads = 0
    uwsgi.opt = {{}}
    uwsgi.worker_id = lambda: 1
    sys.modules["uwsgi"] = uwsgi

    from kaneda_core import Metrics
    for name in ("a", "b"):
        metrics = Metrics("logger://{out}")
        metrics.gauge(name, 1)
        metrics.close()
"""


def test_a_uwsgi_without_threads_is_told_once_that_metrics_wait_while_it_is_idle(
    tmp_path: Path,
) -> None:
    """uWSGI before 2.0.31 runs Python threads only with --enable-threads: 500 metrics
    of 500 requests waited 30 s of idleness, until the stop, with nothing said."""
    script = textwrap.dedent(UWSGI_WITHOUT_THREADS.format(out=tmp_path / "m.jsonl"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("uWSGI runs without --enable-threads") == 1, done.stderr
