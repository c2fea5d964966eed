#!/usr/bin/env bash
# kaneda 1.0's own test suite, run against this project with a real InfluxDB and Redis.
# Arguments go to pytest. See tests/kaneda1/suite/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 tests/kaneda1/suite/run.py "$@"
