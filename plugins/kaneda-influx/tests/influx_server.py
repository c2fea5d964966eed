"""A throwaway InfluxDB 1.x server for the tests and benchmarks (Debian's ``influxd``).

Importable from the tests (``conftest.py`` puts this folder on ``sys.path``) and from
``bench/``. The server binds loopback ports of its own, keeps its data in a temporary
folder, and can be stopped and started again on the same port and data (the fault tests
do). ``auth_enabled=True`` turns on authentication with an admin user; ``tls=True`` serves
HTTPS with the self-signed certificate in ``tls/``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kaneda_core import Metric

ADMIN = ("admin", "admin-s3cret")
TLS_FILES = Path(__file__).parent / "tls"


class InfluxServer:
    """One ``influxd`` process with its own config, ports and data folder."""

    def __init__(
        self,
        *,
        auth_enabled: bool = False,
        tls: bool = False,
        max_body_size: int = 0,
        root: Path | None = None,
    ) -> None:
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError(
                "influxd is not installed; the kaneda-influx tests need InfluxDB 1.x: "
                "apt-get install influxdb (scripts/test.sh does it when run as root)"
            )
        self.binary = binary
        self.auth_enabled = auth_enabled
        self.tls = tls
        self.max_body_size = max_body_size
        self.root = root or Path(tempfile.mkdtemp(prefix="kaneda-influxd-"))
        self.port = free_port()
        self.rpc_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.config = self.root / "influxdb.conf"
        if tls:
            self._copy_certificate()
        self.config.write_text(self._config_text())

    def _copy_certificate(self) -> None:
        # A self-signed pair made once for the tests (valid for a century), so the tests
        # need no openssl: openssl req -x509 -newkey rsa:2048 -nodes -days 36500
        # -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1
        for name in ("cert.pem", "key.pem"):
            shutil.copy(TLS_FILES / name, self.root / name)

    def _config_text(self) -> str:
        return f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.root}/meta"
[data]
  dir = "{self.root}/data"
  wal-dir = "{self.root}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[coordinator]
  write-timeout = "10s"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if self.auth_enabled else "false"}
  log-enabled = false
  max-body-size = {self.max_body_size}
  https-enabled = {"true" if self.tls else "false"}
  https-certificate = "{self.root}/cert.pem"
  https-private-key = "{self.root}/key.pem"
[logging]
  level = "error"
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _open(self, request: urllib.request.Request | str, timeout: float) -> Any:
        context = None
        if self.tls:  # the certificate is self-signed: the tests trust it blindly
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return urllib.request.urlopen(request, timeout=timeout, context=context)

    def start(self, timeout: float = 30) -> None:
        """Start influxd and wait until it answers /ping."""
        log = open(self.root / "influxd.log", "ab")  # noqa: SIM115 - handed to the process
        self.process = subprocess.Popen(
            [self.binary, "-config", str(self.config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"influxd exited with {self.process.returncode}: "
                    + (self.root / "influxd.log").read_text()[-2000:]
                )
            try:
                self._open(f"{self.url}/ping", timeout=1).close()
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
                continue
            if self.auth_enabled:
                self._create_admin()
            return
        raise RuntimeError(f"influxd did not answer on {self.url} within {timeout}s")

    def _create_admin(self) -> None:
        user, password = ADMIN
        try:
            self.query(f"CREATE USER {user} WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
        except urllib.error.HTTPError as error:
            if error.code != 401:  # already created before a restart: auth now required
                raise

    def stop(self) -> None:
        """Stop influxd (the data stays for the next start)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def destroy(self) -> None:
        """Stop and delete the data."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, q: str, db: str | None = None, *, auth: tuple[str, str] | None = None) -> dict:  # type: ignore[type-arg]
        """Run InfluxQL over HTTP (POST /query), as an admin when auth is on."""
        import base64
        import json

        params = {"q": q, "epoch": "u"}
        if db:
            params["db"] = db
        request = urllib.request.Request(
            f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        credentials = auth or (ADMIN if self.auth_enabled else None)
        if credentials:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with self._open(request, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stored_metrics(server: InfluxServer, database: str) -> list[Metric]:
    """Every point of ``database`` read back as a Metric (kind, name, value, tags, time, id)."""
    answer = server.query("SELECT * FROM /.*/ GROUP BY *", db=database)
    result = answer["results"][0]
    if "error" in result:
        if "database not found" in result["error"]:
            return []
        raise AssertionError(result["error"])
    metrics = []
    for series in result.get("series", []):
        tags = {k: v for k, v in series["tags"].items() if v != ""}
        name = tags.pop("name", None)  # None: kaneda 1.0's layout, a field
        host = tags.pop("host")
        for row in series["values"]:
            fields = {
                column: value
                for column, value in zip(series["columns"], row, strict=True)
                if value is not None
            }
            timestamp = datetime.fromtimestamp(fields.pop("time") / 1e6, timezone.utc)
            id_ = fields.pop("id", None)
            if name is None:
                metrics.append(kaneda1_metric(series["name"], fields, tags, timestamp, host))
                continue
            # The schema stores numbers as floats; JSON prints 7.0 as 7, so restore them.
            fields = {k: float(v) if type(v) is int else v for k, v in fields.items()}
            if "value" in fields:
                value = fields["value"]
            elif "text" in fields:
                value = fields["text"]
            else:
                value = fields
            metrics.append(Metric(name, series["name"], value, tags, timestamp, host, id_))
    return metrics


def kaneda1_metric(
    kind: str, fields: dict[str, Any], tags: dict[str, str], timestamp: datetime, host: str
) -> Metric:
    """A point of kaneda 1.0's layout as a Metric: ``name`` is a field, numbers as stored
    (JSON prints a float 7.0 as 7: ask SHOW FIELD KEYS for the types)."""
    name = fields.pop("name")
    value = fields["value"] if set(fields) == {"value"} else fields
    return Metric(name, kind, value, tags, timestamp, host)
