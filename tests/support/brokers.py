"""Throwaway brokers for the tests and benchmarks: Debian's redis-server and rabbitmq-server.

Each server binds free loopback ports, keeps its data in a temporary folder, and can be
stopped and started again on the same ports (the outage tests do). Nothing is shared
with a system-wide server: RabbitMQ gets its own node name, Erlang distribution port,
EPMD port, cookie and folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Wait until something accepts connections on ``port``; fail if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode}: {log.read_text()[-3000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"nothing listens on port {port} after {timeout}s: {log.read_text()[-3000:]}"
    )


def require(binary: str, package: str) -> str:
    """The path of ``binary``, or an error saying which Debian package provides it."""
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        raise RuntimeError(
            f"{binary} is not installed; the queue tests need it: apt-get install {package} "
            "(scripts/test.sh does it when run as root)"
        )
    return path


class RedisServer:
    """One ``redis-server`` on a free loopback port, its data in a temporary folder."""

    def __init__(self, *, persistent: bool = False, password: str | None = None) -> None:
        self.binary = require("redis-server", "redis-server")
        self.root = Path(tempfile.mkdtemp(prefix="kaneda-redis-"))
        self.port = free_port()
        self.persistent = persistent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (with the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _options(self) -> dict[str, str]:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.root),
            "save": "",
            # persistent: every write is on disk before Redis answers, so a restart keeps
            # the queue (as a production Redis holding a queue would).
            "appendonly": "yes" if self.persistent else "no",
            "appendfsync": "always",
            "protected-mode": "no",
            "daemonize": "no",
        }
        if self.password:
            options["requirepass"] = self.password
        return options

    def start(self, timeout: float = 20) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        log_path = self.root / "redis.log"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the process
        arguments = [item for key, value in self._options().items() for item in (f"--{key}", value)]
        self.process = subprocess.Popen(
            [self.binary, *arguments],
            stdout=log,
            stderr=log,
        )
        wait_for_port(self.port, self.process, timeout, log_path)

    def stop(self) -> None:
        """Stop the server (its queue survives only when ``persistent``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def destroy(self) -> None:
        """Stop and delete the folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RabbitMQServer:
    """One RabbitMQ node of its own: free AMQP, distribution and EPMD ports, its own folders.

    Starting takes a few seconds (Erlang boots the node), so the tests share one per
    session. ``guest``/``guest`` may connect from loopback.
    """

    def __init__(self) -> None:
        self.binary = require("rabbitmq-server", "rabbitmq-server")
        server = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if server.exists():  # Debian's /usr/sbin wrapper would switch to the rabbitmq user
            self.binary = str(server)
        self.root = Path(tempfile.mkdtemp(prefix="kaneda-rabbitmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"kaneda{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "vm_memory_high_watermark.relative = 0.2\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "env.conf").write_text("")
        (self.root / ".erlang.cookie").write_text("kaneda-tests-cookie")
        (self.root / ".erlang.cookie").chmod(0o400)

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>//``."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def environment(self) -> dict[str, str]:
        """The environment that points rabbitmq-server at this node's own ports and folders."""
        root = str(self.root)
        return {
            **os.environ,
            "HOME": root,
            "RABBITMQ_CONF_ENV_FILE": f"{root}/env.conf",
            "RABBITMQ_CONFIG_FILE": f"{root}/rabbitmq",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{root}/enabled_plugins",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": f"{root}/mnesia",
            "RABBITMQ_LOG_BASE": f"{root}/log",
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": f"{root}/rabbitmq.pid",
            "RABBITMQ_PLUGINS_EXPAND_DIR": f"{root}/plugins-expand",
            # One scheduler and no busy waiting: the machine is shared.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none",
        }

    def start(self, timeout: float = 90) -> None:
        """Boot the node (again, on the same ports and data) and wait for its AMQP port."""
        log_path = self.root / "rabbitmq.log"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the process
        self.process = subprocess.Popen(
            [self.binary],
            env=self.environment(),
            cwd=self.root,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, timeout, log_path)

    def stop(self) -> None:
        """Stop the node (messages in durable queues stay for the next start)."""
        if self.process is not None and self.process.poll() is None:
            # The node's processes share the session the server was started in.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def destroy(self) -> None:
        """Stop the node, its EPMD, and delete the folder."""
        self.stop()
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run(
                [epmd, "-kill"],
                env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
