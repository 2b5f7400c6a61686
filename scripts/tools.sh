#!/usr/bin/env bash
# Extracts the Debian binaries the tests use without installing their packages (which would start
# daemons): promtool (package prometheus), the Pushgateway (prometheus-pushgateway), the age
# CLI (age: the reference implementation, for interop) and etcd 3.4 (etcd-server, etcd-client:
# Debian's 3.4.23, kept as etcd-3.4 and etcdctl-3.4). Prints the directory that holds them.
# Idempotent.
set -euo pipefail
dir=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-tools}
pkgs="prometheus prometheus-pushgateway age etcd-server etcd-client"
if [ ! -x "$dir/promtool" ] || [ ! -x "$dir/prometheus-pushgateway" ] || [ ! -x "$dir/age" ] ||
  [ ! -x "$dir/etcd-3.4" ]; then
  mkdir -p "$dir"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  # shellcheck disable=SC2086
  (cd "$work" && apt-get download $pkgs >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$work" && apt-get download $pkgs >/dev/null)
  }
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  cp "$work/root/usr/bin/promtool" "$work/root/usr/bin/prometheus-pushgateway" \
    "$work/root/usr/bin/age" "$work/root/usr/bin/age-keygen" "$dir/"
  cp "$work/root/usr/bin/etcd" "$dir/etcd-3.4"
  cp "$work/root/usr/bin/etcdctl" "$dir/etcdctl-3.4"
fi
echo "$dir"
