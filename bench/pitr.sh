#!/usr/bin/env bash
# What a point-in-time restore costs: etcd (in a container on loopback) filled to BASE (default
# 1GiB) of Kubernetes-like data, then `etcd-backup stream` follows REVISIONS puts (default
# 720000: an hour at 200 puts/s, values of about 1 KiB over 5,000 keys, written at RATE a
# second, default 4000, to keep the run short). Then, from SeaweedFS on loopback:
#   baseline: `restore latest` of the stream's base (download, decode, trailer, bbolt walk,
#             HashKV), the part every rebuild starts with;
#   rebuild:  `restore --to-revision NEWEST` (the base restored the same way, every segment,
#             the database written, then checked as `verify` checks a file).
# Prints each one's wall time and peak RSS, the rebuild's revisions per second and MB/s over the
# time it adds to the baseline, and the ratio rebuild / baseline.
#   bench/pitr.sh [BASE] [REVISIONS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-1GiB}; REVS=${2:-720000}; RATE=${3:-4000}
source bench/lib.sh
bench_rig load stream_load
export BACKUP_LOG_FORMAT=json BACKUP_COMPRESSION=zstd
target/release/examples/load "$ETCD_ENDPOINTS" "$BASE" >/dev/null

log=$work/stream.log
"$bin" stream 2>"$log" &
streaming=$!
for _ in $(seq 1200); do grep -q '"watching"' "$log" 2>/dev/null && break; sleep 0.1; done
grep -q '"watching"' "$log" || { cat "$log"; exit 1; }
secs=$(( (REVS + RATE - 1) / RATE ))
target/release/examples/stream_load "$ETCD_ENDPOINTS" "$RATE" "$secs" "$work/puts" 2>/dev/null
last=$(sort -n "$work/puts" | tail -n1 | cut -d' ' -f1)
for _ in $(seq 1200); do
  python3 - "$log" "$last" <<'PY' && break
import json, re, sys
for line in open(sys.argv[1]):
    if '"segment uploaded"' in line:
        m = re.search(r"-(\d{19})\.seg", json.loads(line)["segment"])
        if int(m.group(1)) >= int(sys.argv[2]):
            sys.exit(0)
sys.exit(1)
PY
  sleep 0.1
done
kill -TERM "$streaming"
wait "$streaming" || { echo "stream exited $?:"; tail -n 5 "$log"; }
base_rev=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if "\"watching\"" in l: print(json.loads(l).get("from", 1) - 1); break' "$log")

timed() { # timed NAME CMD...: wall seconds and peak RSS KiB into $work/NAME.time
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" ||
    { cat "$work/$name.err"; exit 1; }
}
timed baseline "$bin" restore latest -O "$work/base.db"
rm -f "$work/base.db"
timed rebuild "$bin" restore --to-revision "$last" -O "$work/pitr.db"
size=$(stat -c %s "$work/pitr.db")
python3 - "$work" "$last" "$base_rev" "$size" <<'PY'
import sys
work, last, base, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
b_wall, b_rss = map(float, open(f"{work}/baseline.time").read().split())
r_wall, r_rss = map(float, open(f"{work}/rebuild.time").read().split())
revs = last - base
added = max(r_wall - b_wall, 1e-3)
print(f"{'run':<10} {'wall_s':>8} {'rss_mib':>8}")
print(f"{'baseline':<10} {b_wall:8.2f} {b_rss / 1024:8.1f}")
print(f"{'rebuild':<10} {r_wall:8.2f} {r_rss / 1024:8.1f}")
print(f"revisions replayed: {revs} (base at {base}, to {last}); database written: {size / 2**20:.0f} MiB")
print(f"over the baseline: {revs / added:,.0f} revisions/s, {revs / r_wall:,.0f} revisions/s counting the whole rebuild; "
      f"{size / 2**20 / r_wall:.0f} MB/s written")
import json
for line in open(f"{work}/rebuild.err"):
    if '"rebuilt"' in line:
        e = json.loads(line)
        print("rebuild phases (s): " + ", ".join(f"{k.removesuffix('_seconds')} {e[k]:.2f}" for k in
              ("copy_seconds", "replay_seconds", "finish_seconds", "check_seconds")))
print(f"ratio rebuild/baseline: {r_wall / b_wall:.2f}")
PY
