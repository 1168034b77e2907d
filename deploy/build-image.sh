#!/usr/bin/env bash
# Build the predmesh image with podman from the package registries only (Debian packages and PyPI): a bookworm base
# made with mmdebstrap (imported once as BASE_IMAGE), then deploy/Dockerfile on it. Run as root from anywhere:
#   deploy/build-image.sh                      # -> localhost/predmesh:local
# Settings (environment): IMAGE (the tag to build), BASE_IMAGE (the base; made when absent).
# Podman settings this needs on a machine without a systemd cgroup manager or registry access (TOOLCHAIN §13):
# runtime runc, no default ulimits, host network for the build's RUN steps.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/predmesh:local}
BASE_IMAGE=${BASE_IMAGE:-localhost/predmesh-base:bookworm}
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
printf '[containers]\ndefault_ulimits = []\n' > "$conf"
export CONTAINERS_CONF=$conf
podman() { command podman --runtime runc "$@"; }

if ! podman image exists "$BASE_IMAGE"; then
  work=$(mktemp -d)
  echo "build-image: making $BASE_IMAGE with mmdebstrap (Debian bookworm, Python 3.11)" >&2
  mmdebstrap --variant=apt --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
    bookworm "$work/base.tar"
  podman import "$work/base.tar" "$BASE_IMAGE"
  rm -rf "$work"
fi
# pip inside the build trusts this machine's CA bundle (HOST_CA; e.g. a TLS-inspecting proxy's CA), through a
# pip.conf mounted for the build's RUN steps only: neither file ends up in the image.
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
printf '[global]\ncert = /run/host-ca.crt\n' > "$conf.pip"
trap 'rm -f "$conf" "$conf.pip"' EXIT
podman build --network host --build-arg BASE="$BASE_IMAGE" \
  -v "$HOST_CA:/run/host-ca.crt:ro" -v "$conf.pip:/etc/pip.conf:ro" \
  -f deploy/Dockerfile -t "$IMAGE" .
echo "build-image: built $IMAGE" >&2
