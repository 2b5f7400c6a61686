#!/usr/bin/env bash
# The runtime image as users run it: read-only root, uid 65532, settings from the environment.
# Against the rig's etcd and SeaweedFS containers on a private Docker network, it runs one
# backup, then `list`, `restore latest` and `verify` of the restored file, all from the image,
# and checks the image size (< 20 MB).
#   tests/image.sh [IMAGE]   (default: builds etcd-backup:release from the Containerfile with
#                             tests/images/release.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-}
if [ -z "$image" ]; then image=etcd-backup:release; bash tests/images/release.sh "$image"; fi
ETCD_IMAGE=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
S3_IMAGE=${S3_IMAGE:-chrislusf/seaweedfs:4.48}
run=etcd-backup-it-$$
out=$(mktemp -d); chmod 0777 "$out"
cleanup() { docker rm -f "$run-etcd" "$run-s3" >/dev/null 2>&1; docker network rm "$run" >/dev/null 2>&1; rm -rf "$out"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

docker network create "$run" >/dev/null
docker run -d --name "$run-etcd" --network "$run" --entrypoint /usr/local/bin/etcd "$ETCD_IMAGE" \
  --data-dir /var/lib/etcd/it --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$run-etcd:2379" >/dev/null
docker run -d --name "$run-s3" --network "$run" -p 127.0.0.1::8888 -e AWS_ACCESS_KEY_ID=it -e AWS_SECRET_ACCESS_KEY=it-secret-key \
  --entrypoint /usr/bin/weed "$S3_IMAGE" mini -dir=/data -s3.port=8333 -master.telemetry=false >/dev/null
filer="http://127.0.0.1:$(docker port "$run-s3" 8888 | head -n1 | sed 's/.*://')"
for _ in $(seq 120); do curl -sf -X POST "$filer/buckets/it-backups/" >/dev/null 2>&1 && break; sleep 0.5; done
{ echo; for i in $(seq 1 100); do echo "put /registry/configmaps/it/cm$i value-$i"; done; echo; echo; } \
  | docker exec -i "$run-etcd" /usr/local/bin/etcdctl txn >/dev/null

app() { # app ARGS...: the image, as a CronJob would run it
  docker run --rm --network "$run" --read-only --tmpfs /scratch:uid=65532,gid=65532 -v "$out:/out" \
    -e ETCD_ENDPOINT="http://$run-etcd:2379" -e BACKUP_BUCKET=it-backups -e BACKUP_TMP_DIR=/scratch \
    -e AWS_ENDPOINT_URL="http://$run-s3:8333" -e AWS_ACCESS_KEY_ID=it -e AWS_SECRET_ACCESS_KEY=it-secret-key \
    "$image" "$@"
}

app 2>"$out/backup.log" || { cat "$out/backup.log"; fail "backup from the image"; }
grep -q "backup complete" "$out/backup.log" || fail "no summary line"
app list -o json > "$out/list.json" 2>/dev/null || fail "list from the image"
grep -q '"key":"etcd/[0-9]\{8\}-[0-9]\{6\}.db.gz"' "$out/list.json" || fail "list: $(cat "$out/list.json")"
app restore latest --output /out/restored.db >/dev/null 2>"$out/restore.log" || { cat "$out/restore.log"; fail "restore from the image"; }
app verify /out/restored.db -o json > "$out/verify.json" 2>/dev/null || fail "verify from the image"
grep -q '"totalKey":' "$out/verify.json" || fail "verify: $(cat "$out/verify.json")"
# Scratch space smaller than the database: refused before the snapshot, naming the setting.
small=$(docker run --rm --network "$run" --read-only --tmpfs /scratch:uid=65532,gid=65532,size=16k \
  -e ETCD_ENDPOINT="http://$run-etcd:2379" -e BACKUP_BUCKET=it-backups -e BACKUP_TMP_DIR=/scratch \
  -e AWS_ENDPOINT_URL="http://$run-s3:8333" -e AWS_ACCESS_KEY_ID=it -e AWS_SECRET_ACCESS_KEY=it-secret-key \
  "$image" 2>&1) && fail "backup into a 16 KiB scratch directory succeeded"
echo "$small" | grep -q "not enough scratch space in /scratch (BACKUP_TMP_DIR)" || fail "scratch too small: $small"
[ "$(app list -o json 2>/dev/null | grep -o '"key"' | wc -l)" = 1 ] || fail "a failed backup changed the bucket"
# Nothing but the binary and distroless static's files: no shell to exec into.
docker run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1 && fail "the image has a shell"
user=$(docker image inspect "$image" --format '{{.Config.User}}')
[ "$user" = "65532:65532" ] || fail "image user is $user"
size=$(docker image inspect "$image" --format '{{.Size}}')
[ "$size" -lt 20000000 ] || fail "image is $size bytes, over 20 MB"
echo "image test: backup, list, restore, verify from $image passed; image $size bytes"
