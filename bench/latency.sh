#!/usr/bin/env bash
# etcd's write latency while a backup reads its snapshot, and what ETCD_SNAPSHOT_RATE and
# BACKUP_COMPRESSION_THREADS buy back for how much backup time.
#
# examples/latency.rs puts 2 KiB 200 times a second, each timed from its scheduled start,
# while one step runs; the worst of ROUNDS rounds is printed. etcd (1 GiB, compacted at nine
# tenths as Kubernetes leaves it) and SeaweedFS run in containers. The object store is
# remote in production, so here it keeps its data on tmpfs and runs at the lowest CPU weight
# (--cpu-shares 2): what is measured is etcd beside the backup, not beside an S3 server.
# The spool stays on disk, as an emptyDir would. One reference step reads through
# examples/link.rs as a bandwidth cap: etcdctl itself at 30 MiB/s. Two steps run the backup in
# a cgroup limited to 1 core, as a CronJob's CPU limit of 1 would (compression threads follow).
#   bench/latency.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
work=$(mktemp -d /var/tmp/etcd-backup-latency.XXXXXX)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key BACKUP_BUCKET=bench BACKUP_TMP_DIR=$work

bash tests/images/build.sh
cargo build --locked --release --quiet --example load --example latency --example link
static_build
bin=${BENCH_BIN:-$PWD/target/$STATIC_TARGET/release/etcd-backup}
wheel_tools "$work/bin" etcdctl

etcd=$(start_etcd --quota-backend-bytes=8589934592)
s3=$(start_s3 --tmpfs /data:size=12g --cpu-shares 2)
link_pid=
trap 'kill "$link_pid" 2>/dev/null; docker rm -f "$etcd" "$s3" >/dev/null; rm -rf "$work"' EXIT
export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$(port "$s3" 8333)"
wait_ready "$work/bin/etcdctl" "$ETCD_ENDPOINTS" "$s3" "$BACKUP_BUCKET"
target/release/examples/load "$ETCD_ENDPOINTS" "$SIZE"
compact_like_kubernetes "$work/bin/etcdctl" "$ETCD_ENDPOINTS"
# 30 MiB/s = 251.7 Mbit/s, for etcdctl, which has no rate limit of its own.
start_link "${ETCD_ENDPOINTS#http://}" 0 252 "$work/link.port"
capped=$link_url

# limited CORES CMD...: runs CMD in a cgroup of its own with a CPU limit of CORES, as the
# CronJob's limit sets one (cgroup v1's cpu controller, or v2's cpu.max; root only).
limited() {
  local cores=$1 cg; shift
  if [ -w /sys/fs/cgroup/cpu ]; then
    cg=/sys/fs/cgroup/cpu/etcd-backup-bench-$$; mkdir -p "$cg"
    echo 100000 > "$cg/cpu.cfs_period_us"; echo $((cores * 100000)) > "$cg/cpu.cfs_quota_us"
  else
    cg=/sys/fs/cgroup/etcd-backup-bench-$$; mkdir -p "$cg"; echo "$((cores * 100000)) 100000" > "$cg/cpu.max"
  fi
  local rc=0
  (echo "$BASHPID" > "$cg/cgroup.procs" && exec "$@") || rc=$?
  rmdir "$cg"
  return "$rc"
}
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  loaded idle sleep 15
  loaded save "$work/bin/etcdctl" --endpoints "$ETCD_ENDPOINTS" snapshot save "$work/s.db"
  loaded save-30 "$work/bin/etcdctl" --endpoints "$capped" snapshot save "$work/s.db"
  loaded hashkv "$work/bin/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint hashkv
  loaded gzip "$bin" backup
  loaded gzip-30 env ETCD_SNAPSHOT_RATE=30MiB "$bin" backup
  loaded gzip-15 env ETCD_SNAPSHOT_RATE=15MiB "$bin" backup
  loaded gzip-8 env ETCD_SNAPSHOT_RATE=8MiB "$bin" backup
  loaded gzip-15-t1 env ETCD_SNAPSHOT_RATE=15MiB BACKUP_COMPRESSION_THREADS=1 "$bin" backup
  loaded gzip-cpu1 limited 1 "$bin" backup
  loaded gzip-15-cpu1 limited 1 env ETCD_SNAPSHOT_RATE=15MiB "$bin" backup
  loaded zstd env BACKUP_COMPRESSION=zstd "$bin" backup
  loaded zstd-15 env BACKUP_COMPRESSION=zstd ETCD_SNAPSHOT_RATE=15MiB "$bin" backup
done
echo "etcd latency under 200 puts/s of 2 KiB, worst of $ROUNDS rounds (ms from each put's scheduled start):"
awk '
  { n[$1]++; t[$1] += $2; if ($3 > p50[$1]) p50[$1] = $3; if ($4 > p99[$1]) p99[$1] = $4; if ($5 > mx[$1]) mx[$1] = $5 }
  END {
    nk = split("idle save save-30 hashkv gzip gzip-30 gzip-15 gzip-8 gzip-15-t1 gzip-cpu1 gzip-15-cpu1 zstd zstd-15", o, " ")
    d["idle"] = "idle (15 s)"; d["save"] = "etcdctl snapshot save"; d["save-30"] = "etcdctl snapshot save, read at 30 MiB/s"
    d["hashkv"] = "etcdctl endpoint hashkv"; d["gzip"] = "backup gzip"; d["gzip-8"] = "backup gzip, ETCD_SNAPSHOT_RATE=8MiB"
    d["gzip-30"] = "backup gzip, ETCD_SNAPSHOT_RATE=30MiB"; d["gzip-15"] = "backup gzip, ETCD_SNAPSHOT_RATE=15MiB"
    d["gzip-15-t1"] = "backup gzip, 15MiB, 1 compression thread"; d["gzip-cpu1"] = "backup gzip, CPU limit 1 core"
    d["gzip-15-cpu1"] = "backup gzip, 15MiB, CPU limit 1 core"; d["zstd"] = "backup zstd"; d["zstd-15"] = "backup zstd, ETCD_SNAPSHOT_RATE=15MiB"
    printf "| during | mean s | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n"
    for (i = 1; i <= nk; i++) { k = o[i]; printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", d[k], t[k] / n[k], p50[k], p99[k], mx[k] }
  }' "$work/results"
