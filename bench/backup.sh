#!/usr/bin/env bash
# Measures etcd-backup against the seed's pipeline and etcd's own tools on one machine, in one run:
#   - the seed article's CronJob script: `etcdctl snapshot save`, `etcdctl snapshot status`,
#     `gzip`, `aws s3 cp --storage-class STANDARD_IA`, one after another,
#   - `etcdctl snapshot save` (etcd's serving speed: the floor for any backup),
#   - `etcd-backup backup` with gzip and with zstd (wall time, peak RSS, stored size), and with
#     gzip encrypted with age (the cost of encryption),
#   - `etcd-backup verify` against `etcdutl snapshot status` on the same file,
#   - the peak RSS of the gzip backup of a second etcd filled to 128 MiB (memory must not grow
#     with the database),
#   - this build against a baseline build of BENCH_BASE (default 6cc04dc, before the receive
#     path's cuts and gzip's default level 4): the gzip backup and `verify`,
#   - the CPU seconds per GB of each stage alone, with the way some were done before beside
#     them (examples/stages.rs, the static build),
#   - the upload over a real-looking link: the gzip backup through examples/link.rs (a proxy with
#     a 40 ms round trip and 1 Gbit/s, LINK_MS and LINK_MBIT) with the default upload settings
#     and with 4 parts at once, against `aws s3 cp` of the same object through the same link,
#   - etcd's latency while each runs: examples/latency.rs puts 2 KiB 200 times a second and
#     reports p50/p99 from each put's scheduled start (idle, the seed's script, our backups, our
#     gzip backup at BACKUP_NICE=0 for the trade-off, and `etcdctl endpoint hashkv` alone: the
#     member's own cost of the HashKV check, which holds its read lock for the scan).
# The big etcd is compacted at nine tenths of its revisions after loading, as Kubernetes leaves
# a database (it compacts every five minutes).
# It starts etcd and SeaweedFS in containers on loopback, fills etcd to SIZE (default 1GiB)
# with examples/load.rs, and alternates ROUNDS rounds (default 2). Ratios are printed against
# the baselines measured in the same run. The binary measured is the static musl build that
# the image ships (BENCH_BIN overrides). For every step it also prints the CPU seconds spent by
# the command, by etcd and by SeaweedFS: on a small machine that is what bounds the wall time.
#   bench/backup.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}; ROUNDS=${2:-2}
source bench/lib.sh
work=$(mktemp -d /var/tmp/etcd-backup-bench.XXXXXX)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key BACKUP_BUCKET=bench BACKUP_TMP_DIR=$work

bash tests/images/build.sh
# gnuplot draws the chart; Debian's package, where we may install it (the table needs nothing).
command -v gnuplot >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null; } || true
# The AWS CLI for the seed's pipeline, in a venv of its own.
venv=${BENCH_VENV:-$HOME/.cache/etcd-backup-bench}
export AWS_DEFAULT_REGION=us-east-1
cargo build --locked --release --quiet --example load --example latency --example link
target=$STATIC_TARGET
static() { static_build "$@"; }
# The baseline, built first in a worktree sharing our target directory (only the crate rebuilds).
base_rev=${BENCH_BASE:-6cc04dc}
git worktree add -f -q "$work/base-src" "$base_rev"
(cd "$work/base-src" && CARGO_TARGET_DIR="$OLDPWD/target" static)
cp "target/$target/release/etcd-backup" "$work/base-bin"
git worktree remove --force "$work/base-src"
static --example stages
stages=$PWD/target/$target/release/examples/stages
bin=${BENCH_BIN:-$PWD/target/$target/release/etcd-backup}
# etcdctl/etcdutl from the same wheel as the etcd image, run on the host.
wheel_tools "$work/bin" etcdctl etcdutl

etcd=$(start_etcd --quota-backend-bytes=8589934592)
s3=$(start_s3)
small=$(start_etcd)
link_pid=
trap 'kill "$link_pid" 2>/dev/null; docker rm -f "$etcd" "$s3" "$small" >/dev/null; rm -rf "$work"' EXIT
export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)" ETCDCTL_API=3
export AWS_ENDPOINT_URL="http://127.0.0.1:$(port "$s3" 8333)"
wait_ready "$work/bin/etcdctl" "$ETCD_ENDPOINTS" "$s3" "$BACKUP_BUCKET"

small_endpoint="http://127.0.0.1:$(port "$small" 2379)"
# The link: S3 behind a proxy with LINK_MS one way in each direction and LINK_MBIT each way.
start_link "127.0.0.1:$(port "$s3" 8333)" "${LINK_MS:-20}" "${LINK_MBIT:-1000}" "$work/link.port"
# A recipient for the encrypted step (the identity is thrown away with $work).
tools=$(bash scripts/tools.sh)
"$tools/age-keygen" -o "$work/age.key" 2>/dev/null
recipient=$("$tools/age-keygen" -y "$work/age.key")
target/release/examples/load "$ETCD_ENDPOINTS" "$SIZE"
target/release/examples/load "$small_endpoint" 128MiB
compact_like_kubernetes "$work/bin/etcdctl" "$ETCD_ENDPOINTS"
db=$(status_field "$work/bin/etcdctl" "$ETCD_ENDPOINTS" dbSize)
echo "etcd database: $db bytes"

# CPU nanoseconds a container has used (cgroup v1 or v2).
cpu_ns() {
  local id; id=$(docker inspect -f '{{.Id}}' "$1")
  if [ -r "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage" ]; then cat "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage"
  elif [ -r "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat" ]; then awk '$1 == "usage_usec" { print $2 * 1000 }' "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat"
  else echo 0; fi
}
# measure NAME CMD...: appends "NAME seconds maxrss_kib cpu_s etcd_cpu_s s3_cpu_s" to $work/results
measure() {
  local name=$1; shift
  local member=${MEMBER:-$etcd} e0 s0; e0=$(cpu_ns "$member"); s0=$(cpu_ns "$s3")
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >"$work/out.$name" 2>"$work/err.$name" || { cat "$work/err.$name"; exit 1; }
  read -r wall rss user sys < "$work/time"
  echo "$name $wall $rss $(awk -v u="$user" -v s="$sys" -v e="$(( $(cpu_ns "$member") - e0 ))" -v c="$(( $(cpu_ns "$s3") - s0 ))" \
    'BEGIN { printf "%.2f %.2f %.2f", u + s, e / 1e9, c / 1e9 }')" >> "$work/results"
}
# loaded NAME CMD...: measure, with the paced write load on etcd running throughout; appends
# "NAME p50_ms p99_ms max_ms puts" to $work/latency
loaded() {
  local name=$1; shift
  rm -f "$work/stop"
  target/release/examples/latency "$ETCD_ENDPOINTS" 200 "$work/stop" > "$work/lat.out" &
  local lat=$!
  sleep 1
  measure "$name" "$@"
  touch "$work/stop"; wait "$lat"
  echo "$name $(cat "$work/lat.out")" >> "$work/latency"
}
# The seed's script, as its article shows it (with our endpoint and bucket).
seed_script "$work/seed.sh" "$venv"

for r in $(seq "$ROUNDS"); do
  loaded idle sleep 10
  loaded seed bash "$work/seed.sh"
  rm -f "$work/snap.db"
  measure save "$work/bin/etcdctl" --endpoints "$ETCD_ENDPOINTS" snapshot save "$work/snap.db"
  measure gzip env BACKUP_COMPRESSION=gzip "$bin" backup
  grep -o 'stored_bytes=[0-9]*' "$work/err.gzip" | cut -d= -f2 > "$work/stored.gzip"
  sleep 1 # a new second, a new key
  measure gzip-base env BACKUP_COMPRESSION=gzip "$work/base-bin" backup
  sleep 1
  loaded gzip-lat env BACKUP_COMPRESSION=gzip "$bin" backup
  sleep 1
  loaded gzip-nice0 env BACKUP_COMPRESSION=gzip BACKUP_NICE=0 "$bin" backup
  sleep 1
  loaded hashkv "$work/bin/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint hashkv
  measure gzip-age env BACKUP_COMPRESSION=gzip BACKUP_AGE_RECIPIENTS="$recipient" "$bin" backup
  sleep 1
  measure zstd env BACKUP_COMPRESSION=zstd "$bin" backup
  grep -o 'stored_bytes=[0-9]*' "$work/err.zstd" | cut -d= -f2 > "$work/stored.zstd"
  sleep 1
  loaded zstd-lat env BACKUP_COMPRESSION=zstd "$bin" backup
  sleep 1
  measure gzip-link env BACKUP_COMPRESSION=gzip AWS_ENDPOINT_URL="$link_url" "$bin" backup
  sleep 1
  measure gzip-link-c4 env BACKUP_COMPRESSION=gzip BACKUP_UPLOAD_CONCURRENCY=4 AWS_ENDPOINT_URL="$link_url" "$bin" backup
  gzip -6 -c "$work/snap.db" > "$work/snap.db.gz"
  measure awscp-link "$venv/bin/aws" s3 cp "$work/snap.db.gz" "s3://$BACKUP_BUCKET/cp/snap.db.gz" --endpoint-url "$link_url"
  rm -f "$work/snap.db.gz"
  measure etcdutl-status "$work/bin/etcdutl" snapshot status "$work/snap.db" -w json
  measure verify "$bin" verify "$work/snap.db" -o json
  measure verify-base "$work/base-bin" verify "$work/snap.db" -o json
  MEMBER=$small measure gzip-128MiB env BACKUP_COMPRESSION=gzip ETCD_ENDPOINTS="$small_endpoint" "$bin" backup
  sleep 1
  RECIPIENT=$recipient "$stages" >> "$work/stages"
done
raw=$(stat -c %s "$work/snap.db")
gzip -6 -c "$work/snap.db" | wc -c > "$work/stored.gzip6"

echo
echo "database $db bytes, snapshot $raw bytes, $ROUNDS rounds, $(nproc) cores"
awk -v size="$SIZE" -v raw="$raw" -v g="$(cat "$work/stored.gzip")" -v z="$(cat "$work/stored.zstd")" -v g6="$(cat "$work/stored.gzip6")" '
  { t[$1] += $2; n[$1]++; if ($3 > m[$1]) m[$1] = $3; c[$1] += $4; e[$1] += $5; s[$1] += $6 }
  END {
    printf "%-16s %8s %12s %9s %9s %9s %10s\n", "step", "mean s", "peak RSS MiB", "CPU s", "etcd CPU", "S3 CPU", "cores busy"
    n_order = split("idle seed save gzip gzip-base gzip-lat gzip-nice0 hashkv gzip-age zstd zstd-lat gzip-link gzip-link-c4 awscp-link etcdutl-status verify verify-base gzip-128MiB", order, " ")
    for (i = 1; i <= n_order; i++) {
      k = order[i]; w = t[k]/n[k]
      printf "%-16s %8.2f %12.1f %9.2f %9.2f %9.2f %10.2f\n", k, w, m[k]/1024, c[k]/n[k], e[k]/n[k], s[k]/n[k], (c[k]+e[k]+s[k])/n[k]/w
    }
    printf "(CPU s: the command and its children; etcd and S3 CPU: their containers during the step; cores busy: all three per second of wall time)\n"
    printf "\nratios:\n"
    printf "  seed pipeline / backup gzip   %.2f (higher: ours is faster)\n", (t["seed"]/n["seed"]) / (t["gzip"]/n["gzip"])
    printf "  backup gzip / snapshot save   %.2f\n", (t["gzip"]/n["gzip"]) / (t["save"]/n["save"])
    printf "  backup zstd / snapshot save   %.2f\n", (t["zstd"]/n["zstd"]) / (t["save"]/n["save"])
    printf "  gzip+age / gzip               wall %.3f, CPU %.3f, peak RSS %.1f / %.1f MiB\n", (t["gzip-age"]/n["gzip-age"]) / (t["gzip"]/n["gzip"]), (c["gzip-age"]/n["gzip-age"]) / (c["gzip"]/n["gzip"]), m["gzip-age"]/1024, m["gzip"]/1024
    printf "  verify / etcdutl status       %.2f (RSS %.1f vs %.1f MiB)\n", (t["verify"]/n["verify"]) / (t["etcdutl-status"]/n["etcdutl-status"]), m["verify"]/1024, m["etcdutl-status"]/1024
    printf "  peak RSS of backup gzip, %s / 128 MiB   %.1f / %.1f MiB = %.2f\n", size, m["gzip"]/1024, m["gzip-128MiB"]/1024, m["gzip"]/m["gzip-128MiB"]
    printf "  this build / baseline (BENCH_BASE): gzip backup wall %.3f, CPU %.3f, peak RSS %.1f / %.1f MiB; verify %.3f\n", (t["gzip"]/n["gzip"]) / (t["gzip-base"]/n["gzip-base"]), c["gzip"] / c["gzip-base"], m["gzip"]/1024, m["gzip-base"]/1024, (t["verify"]/n["verify"]) / (t["verify-base"]/n["verify-base"])
    printf "  link: gzip through it / on loopback   %.2f (goal <= 1.2); with 4 parts at once %.2f; aws s3 cp through it %.2f s\n", (t["gzip-link"]/n["gzip-link"]) / (t["gzip"]/n["gzip"]), (t["gzip-link-c4"]/n["gzip-link-c4"]) / (t["gzip"]/n["gzip"]), t["awscp-link"]/n["awscp-link"]
    printf "  nice: under the write load, gzip at BACKUP_NICE=0 / at the default   wall %.3f\n", (t["gzip-nice0"]/n["gzip-nice0"]) / (t["gzip-lat"]/n["gzip-lat"])
    printf "\ncompression: gzip %.2fx (%d bytes; gzip -6 makes %d, ours is %+.2f%%), zstd %.2fx (%d bytes)\n", raw/g, g, g6, (g-g6)*100/g6, raw/z, z
  }' "$work/results" | tee "$work/summary"
echo
echo "etcd latency under a paced load of 200 puts/s of 2 KiB (ms, from each put's scheduled start; worst of the rounds):"
awk '{ if ($3 > p99[$1]) { p50[$1] = $2; p99[$1] = $3; mx[$1] = $4 } }
  END { printf "  %-12s %8s %8s %8s\n", "during", "p50", "p99", "max"
    split("idle seed gzip-lat gzip-nice0 zstd-lat hashkv", o, " ")
    for (i = 1; i <= 6; i++) printf "  %-12s %8.1f %8.1f %8.1f\n", o[i], p50[o[i]], p99[o[i]], mx[o[i]] }' "$work/latency" | tee -a "$work/summary"
echo
echo "CPU per stage, each alone over the same snapshot (examples/stages.rs; this process's user+sys, means of the rounds):"
awk '/^# gzip level/ { b[$4] = $5; next } /^#/ { next }
  { c[$1] += $2; u[$1] += $3; s[$1] += $4; w[$1] += $5; g[$1] += $6; n[$1]++ }
  END {
    printf "  %-15s %9s %8s %8s %8s %9s\n", "stage", "CPU s/GB", "CPU s", "user s", "sys s", "wall s"
    k = split("receive receive-before hash spool gzip gzip-before zstd age walk upload", o, " ")
    for (i = 1; i <= k; i++) if (n[o[i]]) printf "  %-15s %9.2f %8.2f %8.2f %8.2f %9.2f\n", o[i], g[o[i]]/n[o[i]], c[o[i]]/n[o[i]], u[o[i]]/n[o[i]], s[o[i]]/n[o[i]], w[o[i]]/n[o[i]]
    before = (g["receive-before"] + g["hash"] + g["spool"]) / n["hash"]
    after = (g["receive"] + g["hash"] + g["spool"]) / n["hash"]
    printf "  receive path (receive + hash + spool): %.2f CPU s/GB, before %.2f (%.2fx)\n", after, before, after / before
    printf "  gzip: level 4 %.2f CPU s/GB, %d bytes; level 6 %.2f CPU s/GB, %d bytes\n", g["gzip"]/n["gzip"], b["4:"], g["gzip-before"]/n["gzip-before"], b["6:"]
  }' "$work/stages" | tee -a "$work/summary"

# A bar chart of the mean times, where gnuplot is installed (apt: gnuplot-nox).
if command -v gnuplot >/dev/null; then
  awk '{ t[$1] += $2; n[$1]++ } END { split("seed save gzip zstd", o, " "); for (i = 1; i <= 4; i++) print o[i], t[o[i]]/n[o[i]] }' \
    "$work/results" > "$work/means"
  gnuplot <<PLOT
set terminal png size 720,400
set output "${PLOT:-bench/results.png}"
set title "Back up a $SIZE etcd ($(nproc) cores): mean wall time"
set ylabel "seconds"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set xtics ("seed script" 0, "etcdctl save" 1, "etcd-backup gzip" 2, "etcd-backup zstd" 3)
plot "$work/means" using 0:2 with boxes notitle, "" using 0:2:(sprintf("%.1f s", \$2)) with labels offset 0,1 notitle
PLOT
  echo "plot: ${PLOT:-bench/results.png}"
fi
