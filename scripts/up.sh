#!/usr/bin/env bash
# One command on a fresh machine: set up, then run the whole local mesh (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/predmesh up "$@"
