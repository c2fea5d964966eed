"""Starting, watching and stopping the processes of the queue tests (workers, producers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def kaneda(*arguments: str) -> list[str]:
    """The ``kaneda`` command line of this interpreter."""
    return [sys.executable, "-m", "kaneda_core", *arguments]


class Process:
    """A child process whose output goes to a log file (read it when a test fails)."""

    def __init__(
        self,
        command: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.log_path = log
        handle = open(log, "ab")  # noqa: SIM115 - handed to the process
        self.popen = subprocess.Popen(
            self.command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        handle.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def last_json(self) -> Any:
        """The last line of its output that is a JSON object (a script's final stats; log
        lines, such as those at its exit, may follow it)."""
        for line in reversed(self.log().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"no JSON line in the output:\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` appears in the output; fail if the process exits first."""
        wait_until(
            lambda: text in self.log(),
            timeout,
            lambda: f"{text!r} not in the output of {self.command}:\n{self.log()[-4000:]}",
            alive=self,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig``, wait for the exit (SIGKILL after ``timeout``); returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)

    def kill(self) -> None:
        """SIGKILL: no chance to flush, acknowledge or say goodbye."""
        self.stop(signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    message: Callable[[], str] | str = "condition not met",
    *,
    interval: float = 0.1,
    alive: Process | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None and not alive.alive():
            text = message() if callable(message) else message
            raise AssertionError(f"process exited ({alive.popen.returncode}): {text}")
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


class Processes:
    """The processes a test started; whatever is still running at its end is killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Process] = []

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str] | None = None
    ) -> Process:
        process = Process(
            command, self.folder / f"{name}-{len(self.started)}.log", env, self.folder
        )
        self.started.append(process)
        return process

    def worker(
        self, queue_url: str, to: str, *options: str, env: dict[str, str] | None = None
    ) -> Process:
        """``kaneda worker QUEUE_URL --to BACKEND_URL`` as a process of its own."""
        return self.start("worker", kaneda("worker", queue_url, "--to", to, *options), env)

    def python(
        self, name: str, code: str, *args: str, env: dict[str, str] | None = None
    ) -> Process:
        """This interpreter running ``code`` (a script written to the test's folder)."""
        script = self.folder / f"{name}-{len(self.started)}.py"
        script.write_text(code)
        return self.start(name, [sys.executable, str(script), *args], env)

    def stop_all(self) -> None:
        for process in self.started:
            if process.alive():
                process.stop(signal.SIGKILL)
