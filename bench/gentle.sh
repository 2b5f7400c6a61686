#!/usr/bin/env bash
# How gentle a backup is with etcd, in one run (issue "Gentle on etcd"): etcd's put latency
# (examples/latency.rs: 200 puts/s of 2 KiB, each timed from its scheduled start) and each
# step's wall time, for
#   - idle, the seed's script, and our gzip backup with adaptive pacing (the default), with
#     pacing off, and at fixed rates of 15 and 8 MiB/s (ETCD_SNAPSHOT_PACING=off);
#   - adaptive with the spool on tmpfs (components/scratch-in-memory) instead of etcd's disk,
#     and at the default target of before (2 ms) on etcd's disk;
#   - adaptive pacing with HTTP/2 windows of 256 KiB (the default), 512 KiB and 2 MiB;
#   - the probe beside slow puts: one backup runs the probe without acting on it (a target of
#     an hour) and logs each probe; the script counts how many puts over 25 ms had a probe at
#     least 5 ms over its base within 200 ms, and how many such probes had no slow put near;
#   - etcd's garbage collection (GODEBUG=gctrace=1 on etcd for the whole run): collections and
#     their summed stop-the-world pauses during the unpaced backup;
#   - with no write load: adaptive against off (the goal: within 10%);
#   - `etcdctl endpoint hashkv` alone, and adaptive with ETCD_HASHKV_MEMBERS=none: what the
#     HashKV check's scan costs the writers, whatever the pace;
#   - for every row, how many of the puts over 25 ms came in stalls (30 or more, each within
#     100 ms of the last), the rest being spread over the run.
# etcd (SIZE, default 1GiB, compacted at nine tenths) and SeaweedFS (on tmpfs, at the lowest CPU
# weight: the object store is remote in production) run in containers on loopback.
#   bench/gentle.sh [SIZE]          (GENTLE_QUICK=1: only off against adaptive, for tuning)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
source bench/lib.sh
BENCH_NAME=gentle S3_TMPFS=1 ETCD_GODEBUG=gctrace=1 bench_rig load latency
shm=$(mktemp -d /dev/shm/etcd-backup-spool.XXXXXX)
cleanup=$shm
seed_script "$work/seed.sh" "${BENCH_VENV:-$HOME/.cache/etcd-backup-bench}"
fill "$SIZE"

# unloaded NAME CMD...: CMD's wall time with no write load; appends "NAME seconds".
unloaded() {
  local name=$1 t0 t1; shift
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err.nl-$name" || { cat "$work/err.nl-$name" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >> "$work/unloaded"
}
# gc_during NAME CMD...: loaded, counting etcd's collections (gctrace lines) while CMD runs.
gc_during() {
  local name=$1 before; shift
  before=$(docker logs "$etcd" 2>&1 | grep -c '^gc ' || true)
  loaded "$name" "$@"
  # "gc N @Ts P%: a+b+c ms clock, ...": a and c are the stop-the-world phases.
  docker logs "$etcd" 2>&1 | grep '^gc ' | tail -n +"$((before + 1))" \
    | awk '{ split($5, p, "+"); stw += p[1] + p[3]; if (p[1] + p[3] > mx) mx = p[1] + p[3]; n++ }
           END { printf "%d collections, stop-the-world %.2f ms in all, %.2f ms at most\n", n, stw, mx }' > "$work/gc.$name"
}

off="env ETCD_SNAPSHOT_PACING=off"
if [ -n "${GENTLE_QUICK:-}" ]; then
  # A tuning run: only pacing off against adaptive, loaded and not.
  loaded idle sleep 15
  loaded off $off "$bin" backup
  loaded adaptive "$bin" backup
  for r in 1 2; do unloaded off $off "$bin" backup; unloaded adaptive "$bin" backup; done
  cat "$work/results" "$work/unloaded"; grep -o 'adaptive pacing:[^"]*' "$work/err.adaptive"
  exit 0
fi
loaded idle sleep 15
loaded seed bash "$work/seed.sh"
gc_during off $off "$bin" backup
loaded adaptive "$bin" backup
loaded hashkv "$work/bin/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint hashkv
loaded adaptive-none env ETCD_HASHKV_MEMBERS=none "$bin" backup
loaded adaptive-tmpfs env BACKUP_TMP_DIR="$shm" "$bin" backup
loaded adaptive-2ms env ETCD_SNAPSHOT_PACING_TARGET=2ms "$bin" backup
loaded adaptive-512k env ETCD_SNAPSHOT_WINDOW=512KiB "$bin" backup
loaded adaptive-2m env ETCD_SNAPSHOT_WINDOW=2MiB "$bin" backup
loaded off-2m env ETCD_SNAPSHOT_PACING=off ETCD_SNAPSHOT_WINDOW=2MiB "$bin" backup
loaded observe env ETCD_SNAPSHOT_PACING_TARGET=1h BACKUP_LOG=etcd_backup=debug BACKUP_LOG_FORMAT=json "$bin" backup
loaded fixed-15 env ETCD_SNAPSHOT_PACING=off ETCD_SNAPSHOT_RATE=15MiB "$bin" backup
loaded fixed-8 env ETCD_SNAPSHOT_PACING=off ETCD_SNAPSHOT_RATE=8MiB "$bin" backup
for r in 1 2; do
  unloaded off $off "$bin" backup
  unloaded adaptive "$bin" backup
done

# Puts over 25 ms that came in stalls: runs of 30 or more, each within 100 ms of the last.
for name in $(cut -d' ' -f1 "$work/results"); do
  sort -n "$work/slow.$name" | awk -v n="$name" '$2 > 25 {
      if (run && $1 - last > 100) { if (run >= 30) s += run; run = 0 }
      run++; last = $1 }
    END { if (run >= 30) s += run; print n, s + 0 }'
done > "$work/stalls"
echo "etcd put latency under 200 puts/s of 2 KiB (ms from each put's scheduled start), one run:"
awk '
  FNR == NR { stall[$1] = $2; next }
  BEGIN {
    d["idle"] = "idle (15 s)"; d["seed"] = "the seed'\''s script"; d["off"] = "backup, ETCD_SNAPSHOT_PACING=off"
    d["adaptive"] = "backup, adaptive (default, window 256KiB)"; d["adaptive-512k"] = "backup, adaptive, window 512KiB"
    d["adaptive-2m"] = "backup, adaptive, window 2MiB"; d["off-2m"] = "backup, off, window 2MiB (hyper'\''s default)"
    d["observe"] = "backup, probe only (target 1h)"; d["fixed-15"] = "backup, off, ETCD_SNAPSHOT_RATE=15MiB"
    d["fixed-8"] = "backup, off, ETCD_SNAPSHOT_RATE=8MiB"; d["hashkv"] = "etcdctl endpoint hashkv"
    d["adaptive-none"] = "backup, adaptive, ETCD_HASHKV_MEMBERS=none"
    d["adaptive-tmpfs"] = "backup, adaptive, spool on tmpfs"
    d["adaptive-2ms"] = "backup, adaptive, ETCD_SNAPSHOT_PACING_TARGET=2ms"
    printf "| during | wall s | p50 ms | p99 ms | max ms | puts | over 25 ms | of them in stalls |\n|---|---|---|---|---|---|---|---|\n"
  }
  { printf "| %s | %.1f | %.1f | %.1f | %.1f | %d | %d | %d |\n", d[$1], $2, $3, $4, $5, $6, $7, stall[$1]; t[$1] = $2 }
  END {
    printf "\n  fixed 8MiB / adaptive wall time   %.2f (goal: at least 2 when both meet 25 ms)\n", t["fixed-8"] / t["adaptive"]
    printf "  fixed 15MiB / adaptive wall time  %.2f\n", t["fixed-15"] / t["adaptive"]
    printf "  fixed 8MiB / adaptive, spool on tmpfs %.2f\n", t["fixed-8"] / t["adaptive-tmpfs"]
  }' "$work/stalls" "$work/results"
echo
echo "with no write load (mean of 2 alternating rounds):"
awk '{ t[$1] += $2; n[$1]++ } END { printf "  off %.2f s, adaptive %.2f s, adaptive / off %.3f (goal at most 1.10)\n", t["off"]/n["off"], t["adaptive"]/n["adaptive"], (t["adaptive"]/n["adaptive"]) / (t["off"]/n["off"]) }' "$work/unloaded"
echo
echo "etcd's garbage collection during the unpaced backup (GODEBUG=gctrace=1): $(cat "$work/gc.off")"
echo
for name in adaptive adaptive-tmpfs adaptive-2ms adaptive-512k adaptive-2m nl-adaptive; do
  echo "$name: $(grep -o 'adaptive pacing:[^"]*' "$work/err.$name" | tail -n1)"
done
echo
# The probe beside the slow puts: probes as "unix_ms probe_ms", from the JSON log.
python3 - "$work/err.observe" "$work/slow.observe" <<'PY'
import json, sys, datetime
probes = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("message") == "pacing":
        t = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() * 1000
        probes.append((t, e.get("probe_ms")))
slow = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
slow = [(t, ms) for t, ms in slow if ms > 25]
ok = [p for p in probes if p[1] is not None]
base = min(p[1] for p in ok) if ok else 0
# A probe is sent at t and answered at t + probe_ms; a slow put is scheduled at t and done at
# t + ms. They line up when the two intervals come within 200 ms of each other.
near = lambda p, s: p[0] - 200 <= s[0] + s[1] and s[0] - 200 <= p[0] + (p[1] or 1000)
high = [p for p in probes if p[1] is None or p[1] - base > 5]
caught = sum(1 for s in slow if any(near(p, s) for p in high))
false = sum(1 for p in high if not any(near(p, s) for s in slow))
print(f"probe beside slow puts (probe only run): {len(probes)} probes, base {base:.2f} ms, "
      f"{len(high)} over base + 5 ms; {len(slow)} puts over 25 ms, {caught} of them with such a "
      f"probe within 200 ms; {false} such probes with no slow put near")
PY
