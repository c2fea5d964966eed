#!/usr/bin/env bash
# The full test suite: installs the workspace (core, every plugin, the example plugin)
# and the InfluxDB server the kaneda-influx tests start, then lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Installing the core, every plugin and the test tools (requirements-dev.txt)"
# One line per package pip fetches, builds or installs: progress, without pip's ~100 lines
# of detail.
python3 -m pip install --disable-pip-version-check --progress-bar off -r requirements-dev.txt \
  | sed -un -E -e '/finished with status/d' \
      -e 's/^ *((Obtaining|Collecting|Downloading|Building|Installing collected|Successfully installed).*)$/  \1/p'

if ! command -v influxd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing InfluxDB 1.x (Debian's influxdb) for the kaneda-influx tests..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null
  else
    echo "The kaneda-influx tests need InfluxDB 1.x: sudo apt-get install influxdb" >&2
    exit 1
  fi
fi

if ! command -v redis-server >/dev/null 2>&1 || [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing redis-server and rabbitmq-server for the queue plugins' tests..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server rabbitmq-server >/dev/null
  else
    echo "The queue plugins' tests need: sudo apt-get install redis-server rabbitmq-server" >&2
    exit 1
  fi
fi

step "Installing uWSGI for the uWSGI tests (it builds with the C compiler, about 40 s)"
# Apart from requirements-dev.txt: a machine that cannot build it still runs the rest.
python3 -m pip install --disable-pip-version-check --progress-bar off "uwsgi>=2.0.21" \
  | sed -un -E 's/^ *((Collecting|Building|Successfully installed).*)$/  \1/p' \
  || echo "uWSGI could not be built here: the uWSGI tests are skipped"

step "ruff check"
python3 -m ruff check .
step "ruff format --check"
python3 -m ruff format --check .
step "mypy"
python3 -m mypy
step "pytest (skipped tests are listed at the end, with what they need)"
# Two processes, a test file to each at a time (most of the time is spent waiting on
# servers and subprocesses); each starts its own throwaway servers. -n 0: one process.
python3 -m pytest -n 2 --dist loadfile "$@"
