#!/usr/bin/env bash
# What the Kubernetes CPU weights do (issue "Gentle on etcd", part 3): etcd runs in a container
# with the CPU shares of kubeadm's 100m request (102) and our backup in a container of its own
# beside it, as a pod would, with the shares of the CronJob's 50m request (51) or of a 1-CPU
# request (1024); at 51 also with BACKUP_NICE=0 against the default 10 (niceness ranks threads
# within a cgroup only, so it should change nothing here); and, for reference, the backup as a
# plain process outside any container. Pacing is off in those rows so that the weights alone
# act; a last row is the shipped default (adaptive) at 51. Each row runs under the paced write
# load of examples/latency.rs (200 puts/s of 2 KiB); ROUNDS rounds alternate (default 2).
# Docker's --cpu-shares is the kubelet's cgroup v1 shares (milliCPU x 1024 / 1000).
#   bench/weights.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
BENCH_NAME=weights S3_TMPFS=1 ETCD_DOCKER_FLAGS="--cpu-shares 102" bench_rig load latency
fill "$SIZE"

# pod SHARES ENV...: the backup in a container with SHARES CPU shares, on the host's network:
# the etcd image (FROM scratch) as its root, our static binary and the host's CA roots (the S3
# client loads them even for plain http) mounted in.
pod() {
  local shares=$1 envs=() e; shift
  for e in ETCD_ENDPOINTS AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION BACKUP_BUCKET BACKUP_TMP_DIR "$@"; do
    envs+=(-e "$e")
  done
  docker run --rm --network host --cpu-shares "$shares" -v "$bin:/etcd-backup:ro" -v "$work:$work" \
    -v /etc/ssl/certs:/etc/ssl/certs:ro "${envs[@]}" --entrypoint /etcd-backup "$ETCD_IMAGE" backup
}
for r in $(seq "$ROUNDS"); do
  loaded host env ETCD_SNAPSHOT_PACING=off "$bin" backup
  loaded w51 pod 51 ETCD_SNAPSHOT_PACING=off
  loaded w1024 pod 1024 ETCD_SNAPSHOT_PACING=off
  loaded w51-nice0 pod 51 ETCD_SNAPSHOT_PACING=off BACKUP_NICE=0
  loaded w51-adaptive pod 51
done

echo "etcd (CPU shares 102) under 200 puts/s of 2 KiB while our backup runs beside it ($ROUNDS rounds):"
awk '
  BEGIN {
    d["host"] = "a plain process (no container), pacing off"
    d["w51"] = "shares 51 (50m), pacing off"; d["w1024"] = "shares 1024 (1 CPU), pacing off"
    d["w51-nice0"] = "shares 51, pacing off, BACKUP_NICE=0"; d["w51-adaptive"] = "shares 51, adaptive (default)"
  }
  { t[$1] += $2; n[$1]++; o[$1] += $7; p[$1] += $4; if ($4 > p99[$1]) p99[$1] = $4 }
  END {
    printf "| backup | mean wall s | mean p99 ms | worst p99 ms | mean puts over 25 ms |\n|---|---|---|---|---|\n"
    split("host w51 w1024 w51-nice0 w51-adaptive", k, " ")
    for (i = 1; i <= 5; i++) printf "| %s | %.1f | %.1f | %.1f | %.0f |\n", d[k[i]], t[k[i]]/n[k[i]], p[k[i]]/n[k[i]], p99[k[i]], o[k[i]]/n[k[i]]
  }' "$work/results"
