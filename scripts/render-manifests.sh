#!/usr/bin/env bash
# Renders manifests/install.yaml from the kubeadm overlay.
set -euo pipefail
cd "$(dirname "$0")/.."
{ echo "# Rendered from kustomize/overlays/kubeadm by scripts/render-manifests.sh; CI fails when it is stale."
  kubectl kustomize kustomize/overlays/kubeadm; } > manifests/install.yaml
