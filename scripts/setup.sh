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
# pyproject.toml), then the project itself without resolving anything again.
log "installing the locked dependencies and predmesh into .venv"
if ! { .venv/bin/pip install -q --require-hashes --no-deps -r requirements.lock &&
       .venv/bin/pip install -q --no-deps --no-build-isolation -e . ; } > .venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2; log "pip install failed"; exit 1
fi
.venv/bin/python -c "import predmesh, inference" || { log "install failed"; exit 1; }
log "ready"
