#!/usr/bin/env bash
# How long a crash costs `stream`: under WRITES puts a second (default 100), the stream is
# killed with SIGKILL and started again at once, with the same HOSTNAME (a container restarted
# in its pod) and, as the baseline, with another (a new pod, which must wait out the dead
# stream's 30 s lock). Prints, for each, the seconds from the restart until a revision written
# 3 s after it is in the bucket, over ROUNDS rounds each (default 2), and the ratio same/other.
#   bench/restart.sh [ROUNDS] [WRITES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}; WRITES=${2:-100}
source bench/lib.sh
BENCH_NAME=restart bench_rig load stream_load
export BACKUP_COMPRESSION=zstd
target/release/examples/load "$ETCD_ENDPOINTS" 16MiB >/dev/null
etcdctl="$work/bin/etcdctl --endpoints $ETCD_ENDPOINTS"

# start LOG HOST: a stream as HOST into LOG, waited for until it follows; sets stream_pid.
start() {
  HOSTNAME=$2 "$bin" stream 2>"$1" &
  stream_pid=$!
  for _ in $(seq 600); do grep -q 'watching' "$1" 2>/dev/null && return; sleep 0.1; done
  cat "$1"; exit 1
}

# uploaded LOG REV: whether a segment holding REV has reached the bucket, by LOG.
uploaded() {
  grep 'segment uploaded' "$1" | grep -oE '[0-9]{19}\.seg' | sed 's/\.seg//' |
    awk -v r="$2" '$1 + 0 >= r { found = 1 } END { exit !found }'
}

printf '%-8s %5s %10s\n' restart round seconds
declare -A total
for round in $(seq "$ROUNDS"); do
  for how in same other; do
    prefix=restart-$how-$round/
    export BACKUP_PREFIX=$prefix
    start "$work/first.log" pod-0
    target/release/examples/stream_load "$ETCD_ENDPOINTS" "$WRITES" 3600 "$work/puts" 2>/dev/null &
    load=$!
    sleep 5
    kill -KILL "$stream_pid"; wait "$stream_pid" 2>/dev/null || true
    t0=$(date +%s.%N)
    if [ "$how" = same ]; then host=pod-0; else host=pod-1; fi
    HOSTNAME=$host "$bin" stream 2>"$work/second.log" &
    second=$!
    sleep 3
    rev=$($etcdctl put /bench/marker "$round" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
    for _ in $(seq 1200); do uploaded "$work/second.log" "$rev" && break; sleep 0.1; done
    uploaded "$work/second.log" "$rev" || { cat "$work/second.log"; exit 1; }
    secs=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$t0")
    printf '%-8s %5s %10.1f\n' "$how" "$round" "$secs"
    total[$how]=$(python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]))" "${total[$how]:-0}" "$secs")
    kill "$load"; wait "$load" 2>/dev/null || true
    kill -TERM "$second"; wait "$second" || true
  done
done
python3 -c "import sys; s, o, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]); print(f'mean: same host {s / n:.1f} s, another host {o / n:.1f} s, ratio {s / o:.2f}')" "${total[same]}" "${total[other]}" "$ROUNDS"
