#!/usr/bin/env bash
# What the Kubernetes CPU weights do (issue "Gentle on etcd", part 3): etcd runs with the CPU
# shares of kubeadm's 100m request (102) and our backup in a container of its own beside it, as
# a pod would, with the shares of the CronJob's 50m request (51) or of a 1-CPU request (1024);
# and at 51 with BACKUP_NICE=0 against the default 10 (niceness ranks threads within a cgroup
# only, so it should change nothing here). Pacing is off in those rows so that the weights
# alone act; a last row is the shipped default (adaptive) at 51. Each row runs under the paced
# write load of examples/latency.rs (200 puts/s of 2 KiB): put p50/p99/max, puts over 25 ms,
# wall time; ROUNDS rounds alternate (default 2), and the worst p99 and mean wall are printed.
# Docker's --cpu-shares is the kubelet's shares (milliCPU x 1024 / 1000).
#   bench/weights.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
bench_prepare weights load latency

etcd=$(start_etcd --cpu-shares 102 --quota-backend-bytes=8589934592)
s3=$(start_s3 --tmpfs /data:size=16g --cpu-shares 2)
trap 'docker rm -f "$etcd" "$s3" >/dev/null; rm -rf "$work"' EXIT
export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$(port "$s3" 8333)"
wait_ready "$work/bin/etcdctl" "$ETCD_ENDPOINTS" "$s3" "$BACKUP_BUCKET"
target/release/examples/load "$ETCD_ENDPOINTS" "$SIZE"
compact_like_kubernetes "$work/bin/etcdctl" "$ETCD_ENDPOINTS"
echo "etcd database: $(status_field "$work/bin/etcdctl" "$ETCD_ENDPOINTS" dbSize) bytes"

# pod SHARES ENV...: the backup in a container with SHARES CPU shares (the etcd image, which is
# FROM scratch, as its root; our static binary mounted in), on the host's network.
pod() {
  local shares=$1 envs=() e; shift
  for e in ETCD_ENDPOINTS AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION BACKUP_BUCKET BACKUP_TMP_DIR "$@"; do
    envs+=(-e "$e")
  done
  docker run --rm --network host --cpu-shares "$shares" -v "$bin:/etcd-backup:ro" -v "$work:$work" \
    "${envs[@]}" --entrypoint /etcd-backup "$ETCD_IMAGE" backup
}
for r in $(seq "$ROUNDS"); do
  loaded w51 pod 51 ETCD_SNAPSHOT_PACING=off
  loaded w1024 pod 1024 ETCD_SNAPSHOT_PACING=off
  loaded w51-nice0 pod 51 ETCD_SNAPSHOT_PACING=off BACKUP_NICE=0
  loaded w51-adaptive pod 51
done

echo "etcd (CPU shares 102) under 200 puts/s of 2 KiB while our backup runs in a container beside it:"
awk '
  BEGIN {
    d["w51"] = "shares 51 (50m), pacing off"; d["w1024"] = "shares 1024 (1 CPU), pacing off"
    d["w51-nice0"] = "shares 51, pacing off, BACKUP_NICE=0"; d["w51-adaptive"] = "shares 51, adaptive (default)"
  }
  { t[$1] += $2; n[$1]++; o[$1] += $7; if ($4 > p99[$1]) { p99[$1] = $4; mx[$1] = $5 } }
  END {
    printf "| backup pod | mean wall s | worst p99 ms | its max ms | mean puts over 25 ms |\n|---|---|---|---|---|\n"
    split("w51 w1024 w51-nice0 w51-adaptive", k, " ")
    for (i = 1; i <= 4; i++) printf "| %s | %.1f | %.1f | %.1f | %.0f |\n", d[k[i]], t[k[i]]/n[k[i]], p99[k[i]], mx[k[i]], o[k[i]]/n[k[i]]
  }' "$work/results"
