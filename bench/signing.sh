#!/usr/bin/env bash
# What signing costs a backup: the same gzip backup, encrypted with age, with and without
# BACKUP_SIGNING_KEY_FILE, alternated ROUNDS times (default 3) against one etcd filled to SIZE
# (default 512MiB) and SeaweedFS, both in containers on loopback. Prints each run's wall time,
# CPU seconds and peak RSS, the median of each with the signed/unsigned ratio, and the bytes
# signing adds to the bucket per backup (the signature object and the longer manifest).
#   bench/signing.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-512MiB}; ROUNDS=${2:-3}
source bench/lib.sh
bench_rig load
export BACKUP_LOG=warn
tools=$(bash scripts/tools.sh)
"$tools/age-keygen" -o "$work/age.key" 2>/dev/null
export BACKUP_AGE_RECIPIENTS; BACKUP_AGE_RECIPIENTS=$("$tools/age-keygen" -y "$work/age.key")
"$bin" keygen -f "$work/signing" >/dev/null
fill "$SIZE"

# run NAME [ENV...]: one backup at its own --now, appending "NAME wall_s cpu_s maxrss_kib".
t=0
run() {
  local name=$1; shift
  t=$((t + 1))
  env "$@" /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
    "$bin" backup --now "2030-01-01T00:00:$(printf %02d "$t")Z" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r wall user sys rss < "$work/time"
  echo "$name $wall $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') $rss" | tee -a "$work/results"
}
for _ in $(seq "$ROUNDS"); do
  run unsigned BACKUP_KEEP_LAST=100
  run signed BACKUP_KEEP_LAST=100 BACKUP_SIGNING_KEY_FILE="$work/signing"
done

median() { awk -v n="$1" -v f="$2" '$1 == n { print $f }' "$work/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for f in 2:wall_s 3:cpu_s 4:maxrss_kib; do
  u=$(median unsigned "${f%%:*}"); s=$(median signed "${f%%:*}")
  awk -v n="${f#*:}" -v u="$u" -v s="$s" 'BEGIN { printf "median %s: unsigned %s, signed %s, ratio %.3f\n", n, u, s, s / u }'
done
# The bytes signing adds: the newest signed backup's signature, and its manifest against the
# newest unsigned one's.
filer="http://127.0.0.1:$(port "$s3" 8888)/buckets/$BACKUP_BUCKET/etcd"
size() { curl -sf "$filer/$1" | wc -c; }
names=$(curl -sf -H 'Accept: application/json' "$filer/?limit=1000" | grep -o '"FullPath":"[^"]*"' | sed 's/.*etcd\///; s/"$//')
sig=$(echo "$names" | grep '\.json\.sig$' | sort | tail -n1)
signed_manifest=${sig%.sig}
unsigned_manifest=$(echo "$names" | grep '\.json$' | sort | while read -r m; do echo "$names" | grep -qx "$m.sig" || echo "$m"; done | tail -n1)
echo "bytes per backup: signature $(size "$sig"), manifest $(size "$signed_manifest") signed against $(size "$unsigned_manifest") unsigned"
