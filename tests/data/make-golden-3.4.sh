#!/usr/bin/env bash
# Regenerates the etcd 3.4 golden snapshots in tests/data from a real etcd 3.4.23 (Debian's
# etcd-server and etcd-client, which scripts/tools.sh extracts), run on loopback. Each snapshot
# comes with etcdctl 3.4's own `snapshot status` (3.4 has no etcdutl) and the member's
# `endpoint hashkv` at the snapshot's revision, taken before anything else was written.
# Not run by CI (the files are checked in).
set -euo pipefail
cd "$(dirname "$0")"
tools=$(bash ../../scripts/tools.sh)
ctl="$tools/etcdctl-3.4"
data=$(mktemp -d)
port=23795
"$tools/etcd-3.4" --data-dir "$data/d" --listen-client-urls http://127.0.0.1:$port \
  --advertise-client-urls http://127.0.0.1:$port --listen-peer-urls http://127.0.0.1:23805 \
  --initial-advertise-peer-urls http://127.0.0.1:23805 \
  --initial-cluster default=http://127.0.0.1:23805 >"$data/log" 2>&1 &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=http://127.0.0.1:$port
for _ in $(seq 50); do "$ctl" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

save() { # save NAME: the snapshot, etcdctl's status of it, and the member's HashKV at its revision
  "$ctl" snapshot save "$1.db" >/dev/null 2>&1
  "$ctl" snapshot status "$1.db" -w json > "$1.status.json"
  rev=$(grep -o '"revision":[0-9]*' "$1.status.json" | cut -d: -f2)
  "$ctl" endpoint hashkv --rev="$rev" -w json > "$1.hashkv.json"
  echo "$1: $(cat "$1.status.json") $(cat "$1.hashkv.json")"
}

lease=$("$ctl" lease grant 3600 | awk '{print $2}')
for i in $(seq 1 200); do
  "$ctl" put --lease="$lease" "/registry/events/default/e$i" "event $i" >/dev/null
  "$ctl" put "/registry/pods/default/p$((i % 9))" "pod v$i" >/dev/null
done
"$ctl" del /registry/pods/default/p4 >/dev/null
"$ctl" del --prefix /registry/events/default/e1 >/dev/null
save v34-medium
rev=$("$ctl" endpoint status -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
"$ctl" compact $((rev - 20)) >/dev/null
for i in $(seq 1 30); do "$ctl" put "/registry/pods/default/p$((i % 5))" "pod w$i" >/dev/null; done
"$ctl" del /registry/pods/default/p2 >/dev/null
save v34-compacted
