#!/usr/bin/env bash
# Where the spool goes, and what it costs etcd (issue "Gentle on etcd"): a backup spools the raw
# snapshot to BACKUP_TMP_DIR for the walk. Here etcd's data and the spool share this machine's
# disk, as a CronJob's emptyDir shares a control-plane node's with etcd, against the spool on
# tmpfs (an emptyDir with medium: Memory). Each backup runs under the paced write load of
# examples/latency.rs (200 puts/s of 2 KiB); rows alternate over ROUNDS rounds (default 2):
# each pacing of SPOOL_PACING (default "adaptive off": adaptive pacing at its default target,
# pacing off; "adaptive-2ms" and the like set ETCD_SNAPSHOT_PACING_TARGET) with the spool on
# disk and on tmpfs, and with no write load two backups of each (pacing's cost when nobody waits).
# Printed per row: mean wall, worst p99, mean puts over 25 ms and mean of them in stalls (30 or
# more, each within 100 ms of the last; HashKV's scan is one such stall in every backup).
# S3 is on tmpfs at the lowest CPU weight, as in bench/gentle.sh: in production it is remote.
#   bench/spool.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}; PACING=${SPOOL_PACING:-adaptive off}
source bench/lib.sh
BENCH_NAME=spool S3_TMPFS=1 bench_rig load latency
shm=$(mktemp -d /dev/shm/etcd-backup-spool.XXXXXX)
cleanup=$shm
fill "$SIZE"

# pacing NAME: the settings of a name of SPOOL_PACING.
pacing() {
  case $1 in
    adaptive) echo ETCD_SNAPSHOT_PACING=adaptive ;;
    adaptive-[0-9]*ms) echo ETCD_SNAPSHOT_PACING=adaptive ETCD_SNAPSHOT_PACING_TARGET="${1#adaptive-}" ;;
    off) echo ETCD_SNAPSHOT_PACING=off ;;
    *) echo "SPOOL_PACING: unknown pacing $1 (adaptive, adaptive-<N>ms, off)" >&2; exit 2 ;;
  esac
}
rows=""
for p in $PACING; do pacing "$p" >/dev/null; rows="$rows $p-disk $p-tmpfs"; done
for r in $(seq "$ROUNDS"); do
  for p in $PACING; do
    # shellcheck disable=SC2046 # the settings are words
    loaded "$p-disk" env $(pacing "$p") "$bin" backup
    # shellcheck disable=SC2046
    loaded "$p-tmpfs" env $(pacing "$p") BACKUP_TMP_DIR="$shm" "$bin" backup
  done
  # loaded keeps one trace per name: count this round's stalls before the next overwrites it.
  for name in $rows; do
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
    m = split(rows, k, " ")
    d["off"] = "pacing off"; d["adaptive"] = "adaptive (default target)"
    for (i = 1; i <= m; i++) {
      spool = k[i]; sub(/.*-/, "", spool); p = k[i]; sub(/-[a-z]*$/, "", p)
      if (!(p in d)) { d[p] = p; sub(/-/, ", target ", d[p]) }
      printf "| %s | %s | %.1f | %.1f | %.0f | %.0f |\n", d[p], spool == "disk" ? "etcd'\''s disk" : "tmpfs", t[k[i]]/n[k[i]], p99[k[i]], o[k[i]]/n[k[i]], st[k[i]]/n[k[i]]
    }
  }' rows="$rows" "$work/stalls" "$work/results"

# With no write load: each pacing twice, alternating, spool on disk.
for r in 1 2; do
  for p in $PACING; do
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    env $(pacing "$p") "$bin" backup >/dev/null 2>"$work/err.nl-$p" || { cat "$work/err.nl-$p" >&2; exit 1; }
    echo "$p $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" >> "$work/unloaded"
    sleep 1 # a new second, a new key
  done
done
echo
echo "with no write load (mean of 2 alternating backups each, spool on disk):"
awk '{ t[$1] += $2; n[$1]++ } END { for (p in t) printf "  %s %.2f s\n", p, t[p] / n[p] }' "$work/unloaded" | sort
