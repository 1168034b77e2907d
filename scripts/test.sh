#!/usr/bin/env bash
# The test command: set up the machine (idempotent), then run the whole suite against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PREDMESH_TEST_PG_URL="${PREDMESH_TEST_PG_URL:-postgresql://predmesh:predmesh@127.0.0.1:5432/predmesh_test}"
export PREDMESH_TEST_AMQP_URL="${PREDMESH_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}"
# Without a path among the arguments, the whole suite (plain `pytest` alone runs only tests/unit).
for arg in "$@"; do [ -e "${arg%%::*}" ] && exec .venv/bin/python -m pytest "$@"; done
# The whole suite on three workers (pytest-xdist), a test file per worker: most tests wait on real services and
# processes (the suite keeps ~1.5 of the 2 cores busy on two workers), so a third worker fills the idle share: on a
# slow 2-core machine two workers took 20:20 for the suite, three 17:16. `-n 0` in the arguments runs it serially. Files go in
# collection order (--no-loadscope-reorder), which tests/conftest.py starts with the longest ones.
exec .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@" tests
