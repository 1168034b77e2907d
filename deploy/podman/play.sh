#!/usr/bin/env bash
# Run the Kubernetes manifests on this machine with `podman kube play` (as root; see docs/deploy.md "One host:
# podman kube play"): renders a kustomization (default deploy/podman, an overlay of deploy/k8s), then
#   deploy/podman/play.sh up   [DIR]   # podman secrets from the Secrets, `podman kube play` of the rest
#   deploy/podman/play.sh down [DIR]   # `podman kube down`, the secrets removed; add --volumes to drop the PVCs'
#                                      # named volumes too (the model store and the spool: records not yet stored)
# Needs kubectl (kustomize; KUBECTL names another), python3 with PyYAML, podman + runc, and the image
# deploy/build-image.sh builds (localhost/predmesh:local).
# Why the Secrets are not played: podman 4.3 stores a played Secret as YAML but reads a secretKeyRef as JSON
# ("secret ... is not valid JSON"), so each Secret becomes `podman secret create NAME` of {"key": base64} instead.
# Podman settings as in deploy/build-image.sh (TOOLCHAIN §13): runtime runc, no default ulimits; the pods use the
# host network (hostNetwork: true in the overlay).
set -euo pipefail
usage() { echo "usage: $0 up|down [--volumes] [KUSTOMIZATION_DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
action=$1; shift
volumes=0
if [ "${1:-}" = "--volumes" ]; then volumes=1; shift; fi
dir=${1:-$(dirname "$0")}
case $action in up|down) ;; *) usage ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$work/containers.conf}
podman() { command podman --runtime runc "$@"; }

"${KUBECTL:-kubectl}" kustomize "$dir" > "$work/rendered.yaml"
podman volume ls --format '{{.Name}}' > "$work/existing"
# split: the Secrets (one JSON file per Secret, {"key": base64(value)}) and everything else (played), less the PVCs
# whose named volume exists already (podman 4.3 refuses to play a PVC over an existing volume: "volume already
# exists"; the pods mount the existing one by its name, so the model store and the spool survive down and up)
python3 - "$work" <<'EOF'
import base64, json, sys, yaml
work = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{work}/rendered.yaml")) if d]
existing = set(open(f"{work}/existing").read().split())
played, secrets, volumes = [], [], []
for doc in docs:
    name = doc["metadata"]["name"]
    if doc["kind"] == "Secret":
        data = dict(doc.get("data") or {})
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in (doc.get("stringData") or {}).items()})
        with open(f"{work}/secret-{len(secrets)}.json", "w") as out:
            json.dump(data, out)
        secrets.append(name)
        continue
    if doc["kind"] == "PersistentVolumeClaim":
        volumes.append(name)
        if name in existing:
            continue
    played.append(doc)
with open(f"{work}/played.yaml", "w") as out:
    yaml.safe_dump_all(played, out, sort_keys=False)
# each pod on its own, for `down`: `podman kube down` of the whole file stops at the first pod that is not there
# (a play that failed half way)
for i, doc in enumerate(d for d in played if d["kind"] in ("Deployment", "Pod")):
    with open(f"{work}/workload-{i}.yaml", "w") as out:
        yaml.safe_dump(doc, out, sort_keys=False)
with open(f"{work}/secrets", "w") as out:
    out.write("".join(f"{n}\n" for n in secrets))
with open(f"{work}/volumes", "w") as out:
    out.write("".join(f"{n}\n" for n in volumes))
EOF
mapfile -t secrets < "$work/secrets"
mapfile -t pvcs < "$work/volumes"

if [ "$action" = up ]; then
  for i in "${!secrets[@]}"; do
    podman secret rm "${secrets[$i]}" >/dev/null 2>&1 || true   # a stale one from an earlier run
    podman secret create "${secrets[$i]}" "$work/secret-$i.json" >/dev/null
  done
  podman kube play "$work/played.yaml"
else
  status=0
  for file in "$work"/workload-*.yaml; do
    if ! podman kube down "$file" 2> "$work/err"; then
      grep -q "no such pod" "$work/err" || { cat "$work/err" >&2; status=1; }
    fi
  done
  for name in "${secrets[@]}"; do podman secret rm "$name" >/dev/null 2>&1 || true; done
  if [ "$volumes" = 1 ]; then
    for name in "${pvcs[@]}"; do podman volume rm -f "$name" >/dev/null 2>&1 || true; done
  fi
  exit $status
fi
