#!/usr/bin/env bash
# The upload default on a slower link (issue "Gentle on etcd", part 5): the backup through
# examples/link.rs with a 40 ms round trip and LINK_MBIT (default 200) Mbit/s for each
# connection of its own (about what one S3 stream gets across regions), against the same
# backup on loopback, for zstd and gzip and for several BACKUP_UPLOAD_CONCURRENCY values; each
# run's wall time and peak RSS. etcd (SIZE, default 1GiB, compacted at nine tenths) and
# SeaweedFS run in containers on loopback, with no write load; ROUNDS rounds alternate
# (default 2) and the means are printed.
#   bench/upload.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
BENCH_NAME=upload bench_rig load link
start_link "127.0.0.1:$(port "$s3" 8333)" 20 "${LINK_MBIT:-200}" "$work/link.port" per-connection
fill "$SIZE"

# run NAME ENV...: a backup with ENV; appends "NAME seconds peak_rss_kib" to $work/results.
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" env "$@" "$bin" backup >/dev/null 2>"$work/err.$name" \
    || { cat "$work/err.$name" >&2; exit 1; }
  echo "$name $(cat "$work/time")" >> "$work/results"
  grep -o 'stored_bytes=[0-9]*' "$work/err.$name" | cut -d= -f2 > "$work/stored.${name%%-*}"
  sleep 1 # a new second, a new key
}
link="AWS_ENDPOINT_URL=$link_url"
for r in $(seq "$ROUNDS"); do
  for c in zstd gzip; do
    run "$c-loopback" BACKUP_COMPRESSION=$c
    for n in 1 2 3 4 6; do run "$c-link-c$n" BACKUP_COMPRESSION=$c "$link" BACKUP_UPLOAD_CONCURRENCY=$n; done
    run "$c-link-c4-5m" BACKUP_COMPRESSION=$c "$link" BACKUP_UPLOAD_CONCURRENCY=4 BACKUP_UPLOAD_PART_SIZE=5MiB
  done
done

echo "stored: zstd $(cat "$work/stored.zstd") bytes, gzip $(cat "$work/stored.gzip") bytes; link: 40 ms round trip, ${LINK_MBIT:-200} Mbit/s per connection; $ROUNDS rounds"
awk '{ t[$1] += $2; n[$1]++; if ($3 > m[$1]) m[$1] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  END {
    printf "| backup | mean s | / loopback | peak RSS MiB |\n|---|---|---|---|\n"
    for (i = 1; i <= k; i++) {
      c = order[i]; split(c, p, "-")
      printf "| %s | %.2f | %.2f | %.1f |\n", c, t[c]/n[c], (t[c]/n[c]) / (t[p[1] "-loopback"]/n[p[1] "-loopback"]), m[c]/1024
    }
  }' "$work/results"
