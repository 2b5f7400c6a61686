#!/usr/bin/env bash
# Where the spool goes, and what it costs etcd (issue "Gentle on etcd"): a backup spools the raw
# snapshot to BACKUP_TMP_DIR for the walk. Here etcd's data and the spool share this machine's
# disk, as a CronJob's emptyDir shares a control-plane node's with etcd, against the spool on
# tmpfs (an emptyDir with medium: Memory). Each backup runs under the paced write load of
# examples/latency.rs (200 puts/s of 2 KiB); rows alternate over ROUNDS rounds (default 2):
# adaptive pacing (the default) and pacing off, each with the spool on disk and on tmpfs.
# Printed per row: mean wall, worst p99, mean puts over 25 ms and mean of them in stalls (30 or
# more, each within 100 ms of the last; HashKV's scan is one such stall in every backup).
# S3 is on tmpfs at the lowest CPU weight, as in bench/gentle.sh: in production it is remote.
#   bench/spool.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
BENCH_NAME=spool S3_TMPFS=1 bench_rig load latency
shm=$(mktemp -d /dev/shm/etcd-backup-spool.XXXXXX)
cleanup=$shm
fill "$SIZE"

for r in $(seq "$ROUNDS"); do
  loaded adaptive-disk "$bin" backup
  loaded adaptive-tmpfs env BACKUP_TMP_DIR="$shm" "$bin" backup
  loaded off-disk env ETCD_SNAPSHOT_PACING=off "$bin" backup
  loaded off-tmpfs env ETCD_SNAPSHOT_PACING=off BACKUP_TMP_DIR="$shm" "$bin" backup
  # loaded keeps one trace per name: count this round's stalls before the next overwrites it.
  for name in adaptive-disk adaptive-tmpfs off-disk off-tmpfs; do
    sort -n "$work/slow.$name" | awk -v n="$name" '$2 > 25 {
        if (run && $1 - last > 100) { if (run >= 30) s += run; run = 0 }
        run++; last = $1 }
      END { if (run >= 30) s += run; print n, s + 0 }'
  done >> "$work/stalls"
done

echo "etcd put latency under 200 puts/s of 2 KiB, the spool on etcd's disk or on tmpfs ($ROUNDS rounds):"
awk '
  FNR == NR { st[$1] += $2; next }
  { t[$1] += $2; n[$1]++; o[$1] += $7; if ($4 > p99[$1]) p99[$1] = $4 }
  END {
    printf "| backup | spool | mean wall s | worst p99 ms | mean puts over 25 ms | of them in stalls |\n|---|---|---|---|---|---|\n"
    split("adaptive-disk adaptive-tmpfs off-disk off-tmpfs", k, " ")
    for (i = 1; i <= 4; i++) {
      split(k[i], part, "-")
      printf "| %s | %s | %.1f | %.1f | %.0f | %.0f |\n", part[1] == "off" ? "pacing off" : "adaptive (default)", part[2] == "disk" ? "etcd'\''s disk" : "tmpfs", t[k[i]]/n[k[i]], p99[k[i]], o[k[i]]/n[k[i]], st[k[i]]/n[k[i]]
    }
  }' "$work/stalls" "$work/results"
