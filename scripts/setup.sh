#!/usr/bin/env bash
# Idempotent setup of everything predmesh needs on a Debian 12 machine: system packages, PostgreSQL and
# RabbitMQ running on loopback, the test database, and the virtualenv with the project installed.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages (only what is missing) ------------------------------------------------------------------
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL ------------------------------------------------------------------------------------------------
if ! pg_lsclusters -h 2>/dev/null | grep -q online; then
  ver=$(ls /etc/postgresql | sort -n | tail -1)
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
psql_su() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "psql -qAtX -c \"$1\""; else psql -qAtX -U postgres -h 127.0.0.1 -c "$1"; fi; }
if [ "$(psql_su "SELECT 1 FROM pg_roles WHERE rolname='predmesh'")" != "1" ]; then
  psql_su "CREATE ROLE predmesh LOGIN PASSWORD 'predmesh' CREATEDB"
fi
if [ "$(psql_su "SELECT 1 FROM pg_database WHERE datname='predmesh_test'")" != "1" ]; then
  psql_su "CREATE DATABASE predmesh_test OWNER predmesh"
fi

# A PostgreSQL with autovacuum off (as on the machines this was built on) keeps the dead catalog rows of every
# schema the tests create and drop (tens of thousands per run), and each run after is slower for them: vacuum the
# test database first (seconds).
if [ "$(id -u)" -eq 0 ]; then su postgres -c "psql -qAtX -d predmesh_test -c VACUUM"
else psql -qAtX -U postgres -h 127.0.0.1 -d predmesh_test -c VACUUM; fi

# --- RabbitMQ --------------------------------------------------------------------------------------------------
amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! amqp_up; then
  log "starting RabbitMQ"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 150); do amqp_up && break; sleep 0.2; done
  amqp_up || { log "RabbitMQ did not come up"; exit 1; }
fi

# --- Python ----------------------------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# Every Python package at the version and hash requirements.lock pins (scripts/lock.sh makes it from
# pyproject.toml), then the project itself without resolving anything again. The installer is uv, itself taken
# from the lock with its hashes: it installs the ~150 pinned wheels in parallel (about 30 s on a new machine
# where pip took over 90 s). --compile-bytecode writes the .pyc files at install, as pip does: where
# PYTHONDONTWRITEBYTECODE=1 is set (as on these machines) nothing else writes them, and every process would
# compile scikit-learn, SciPy and pandas from source again (2.2 s of CPU to import sklearn.base instead of ~0.5).
log "installing the locked dependencies and predmesh into .venv"
export UV_LINK_MODE=copy UV_NO_PROGRESS=1
uv_pin() { awk '/^uv==/{p=1} p{print} p&&!/\\$/{exit}' requirements.lock; }
if ! { { [ -x .venv/bin/uv ] || .venv/bin/pip install -q --require-hashes --no-deps -r <(uv_pin); } &&
       .venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode --require-hashes --no-deps \
         -r requirements.lock &&
       .venv/bin/uv pip install -q --python .venv/bin/python --no-deps --no-build-isolation -e . ; } \
       > .venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2; log "install failed"; exit 1
fi
.venv/bin/python -c "import predmesh, inference" || { log "install failed"; exit 1; }
log "ready"
