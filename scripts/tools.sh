#!/usr/bin/env bash
# Extracts the Debian binaries the tests use without installing their packages (which would start
# daemons): promtool (package prometheus), the Pushgateway (prometheus-pushgateway) and the age
# CLI (age: the reference implementation, for interop). Prints the directory that holds them.
# Idempotent.
set -euo pipefail
dir=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-tools}
if [ ! -x "$dir/promtool" ] || [ ! -x "$dir/prometheus-pushgateway" ] || [ ! -x "$dir/age" ]; then
  mkdir -p "$dir"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download prometheus prometheus-pushgateway age >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$work" && apt-get download prometheus prometheus-pushgateway age >/dev/null)
  }
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  cp "$work/root/usr/bin/promtool" "$work/root/usr/bin/prometheus-pushgateway" \
    "$work/root/usr/bin/age" "$work/root/usr/bin/age-keygen" "$dir/"
fi
echo "$dir"
