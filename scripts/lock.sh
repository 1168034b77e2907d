#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml (the project's dependencies and every extra), with hashes.
# Run it after changing a dependency in pyproject.toml, then run scripts/test.sh and commit both files.
# `scripts/lock.sh --upgrade` moves every pin to the newest release that pyproject.toml allows;
# `scripts/lock.sh --upgrade-package NAME` moves one.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
[ -x "$uv" ] || { python3 -m venv .venv && .venv/bin/pip install -q uv; }
exec "$uv" pip compile pyproject.toml --all-extras --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_36 --custom-compile-command scripts/lock.sh -o requirements.lock "$@"
