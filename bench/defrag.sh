#!/usr/bin/env bash
# Measures how long `etcd-backup defrag` takes per GB on this machine: one etcd 3.5.1 in a
# container, filled to SIZE (default 1GiB) by examples/load.rs, about half of it deleted and
# compacted, then defragmented. Prints the sizes before and after and the seconds per GB of
# data copied (etcd copies the in-use part).
#   bench/defrag.sh [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
source bench/lib.sh
bash tests/images/build.sh
cargo build --locked --release --quiet --example load --bin etcd-backup
work=$(mktemp -d)
wheel_tools "$work" etcdctl
etcd=$(start_etcd --quota-backend-bytes=8589934592)
trap 'docker rm -f "$etcd" >/dev/null; rm -rf "$work"' EXIT
export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)" ETCDCTL_API=3
wait_ready "$work/etcdctl" "$ETCD_ENDPOINTS" "" ""
target/release/examples/load "$ETCD_ENDPOINTS" "$SIZE"
# Delete the objects of half the namespaces (ns-0 .. ns-48 of 97), then compact physically.
for ns in $(seq 0 48); do "$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" del --prefix "/registry/objects/ns-$ns/" >/dev/null; done
rev=$(status_field "$work/etcdctl" "$ETCD_ENDPOINTS" revision)
"$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" compact --physical "$rev" >/dev/null
status() { status_field "$work/etcdctl" "$ETCD_ENDPOINTS" "$1"; }
size=$(status dbSize); in_use=$(status dbSizeInUse)
start=$(date +%s.%N)
ETCD_DEFRAG_MIN_FREE=1MiB target/release/etcd-backup defrag
end=$(date +%s.%N)
after=$(status dbSize)
awk -v s="$start" -v e="$end" -v size="$size" -v in_use="$in_use" -v after="$after" 'BEGIN {
  t = e - s
  printf "db %d bytes (%d in use) -> %d bytes in %.2f s: %.2f s per GB of database, %.2f s per GB copied\n",
    size, in_use, after, t, t / (size / 1e9), t / (in_use / 1e9)
}'
