#!/usr/bin/env bash
# What `stream` costs and how far behind etcd the bucket runs: for each rate in RATES (default
# "200 2000" puts a second, values of about 1 KiB), `etcd-backup stream` at its defaults (10 s
# segments, zstd) follows one etcd for SECONDS (default 60) of writes, into SeaweedFS; both in
# containers on loopback, etcd first filled to 64 MiB so that the base is not empty. Prints per
# rate: the time from each put's acknowledgement to its segment's upload (p50, p99, max), the
# stream's CPU seconds against etcd's own over the same run (the baseline: the ratio is what
# the stream adds to what etcd spends on the writes), its peak RSS, and bytes stored per hour.
#   bench/stream.sh [SECONDS] [RATES]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}; RATES=${2:-"200 2000"}
source bench/lib.sh
bench_rig load stream_load
export BACKUP_LOG_FORMAT=json BACKUP_COMPRESSION=zstd
target/release/examples/load "$ETCD_ENDPOINTS" 64MiB >/dev/null

# etcd's CPU nanoseconds so far (cgroup v1 or v2; 0 when neither is readable).
etcd_id=$(docker inspect -f '{{.Id}}' "$etcd")
etcd_cpu() {
  cat "/sys/fs/cgroup/cpuacct/docker/$etcd_id/cpuacct.usage" 2>/dev/null ||
    awk '/usage_usec/ {print $2 * 1000}' "/sys/fs/cgroup/system.slice/docker-$etcd_id.scope/cpu.stat" 2>/dev/null ||
    echo 0
}

printf '%-6s %8s %8s %8s %8s %10s %10s %7s %9s %12s\n' rate puts p50_s p99_s max_s stream_cpu etcd_cpu ratio rss_mib bytes_per_h
for rate in $RATES; do
  log=$work/log.$rate
  BACKUP_PREFIX=bench-$rate/ /usr/bin/time -f "%e %U %S %M" -o "$work/time.$rate" "$bin" stream 2>"$log" &
  timer=$!
  for _ in $(seq 600); do grep -q '"watching"' "$log" 2>/dev/null && break; sleep 0.1; done
  grep -q '"watching"' "$log" || { cat "$log"; exit 1; }
  cpu0=$(etcd_cpu)
  target/release/examples/stream_load "$ETCD_ENDPOINTS" "$rate" "$SECS" "$work/puts.$rate" 2>/dev/null
  last=$(tail -n1 "$work/puts.$rate" | cut -d' ' -f1)
  # Until the last put's segment is in the bucket (or 60 s).
  for _ in $(seq 600); do
    python3 - "$log" "$last" <<'PY' && break
import json, re, sys
last = int(sys.argv[2])
for line in open(sys.argv[1]):
    if '"segment uploaded"' in line:
        m = re.search(r"(\d{19})-(\d{19})\.seg", json.loads(line)["segment"])
        if int(m.group(2)) >= last:
            sys.exit(0)
sys.exit(1)
PY
    sleep 0.1
  done
  cpu1=$(etcd_cpu)
  kill -TERM "$(pgrep -P "$timer")"
  wait "$timer"
  python3 - "$rate" "$log" "$work/puts.$rate" "$work/time.$rate" "$cpu0" "$cpu1" "$SECS" <<'PY'
import bisect, datetime, json, re, sys
rate, log, puts, timef, cpu0, cpu1, secs = sys.argv[1:]
segs = []
stored = 0
for line in open(log):
    if '"segment uploaded"' not in line:
        continue
    e = json.loads(line)
    m = re.search(r"(\d{19})-(\d{19})\.seg", e["segment"])
    t = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() * 1000
    segs.append((int(m.group(1)), int(m.group(2)), t))
    stored += int(e["bytes"])
segs.sort()
firsts = [s[0] for s in segs]
lat = []
for line in open(puts):
    rev, ms = map(int, line.split())
    i = bisect.bisect_right(firsts, rev) - 1
    assert i >= 0 and segs[i][0] <= rev <= segs[i][1], f"revision {rev} in no segment"
    lat.append((segs[i][2] - ms) / 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
wall, user, sys_, rss = open(timef).read().split()
cpu = float(user) + float(sys_)
etcd = (int(cpu1) - int(cpu0)) / 1e9
ratio = f"{cpu / etcd:.3f}" if etcd > 0 else "n/a"
print(f"{rate:<6} {len(lat):8} {q(0.5):8.2f} {q(0.99):8.2f} {lat[-1]:8.2f} {cpu:10.2f} {etcd:10.2f} {ratio:>7} {int(rss) / 1024:9.1f} {stored / float(secs) * 3600:12.0f}")
PY
done
echo "latency: put acknowledged -> its segment uploaded; stream_cpu: the stream's whole life (base included); etcd_cpu: etcd over the load and drain; ratio = stream/etcd"
