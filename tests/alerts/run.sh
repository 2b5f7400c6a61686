#!/usr/bin/env bash
# Checks the alert rules of kustomize/components/monitoring with promtool (Debian's prometheus
# package, extracted by scripts/tools.sh): `check rules`, then `test rules` against
# tests/alerts/rules.test.yaml.
set -euo pipefail
cd "$(dirname "$0")"
tools=$(bash ../../scripts/tools.sh)
python=${PYTHON:-python3}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The PrometheusRule's spec is a Prometheus rules file.
"$python" -c 'import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["spec"]))' \
  ../../kustomize/components/monitoring/prometheusrule.yaml > "$work/rules.yaml"
cp rules.test.yaml "$work/"
"$tools/promtool" check rules "$work/rules.yaml"
(cd "$work" && "$tools/promtool" test rules rules.test.yaml)
