#!/usr/bin/env bash
# A demo backup against a local etcd and a local S3 server (SeaweedFS), both started here in
# containers on loopback and removed at the end. Needs Docker and the images from
# tests/images/build.sh (`make demo` builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
ETCD_IMAGE=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
S3_IMAGE=${S3_IMAGE:-chrislusf/seaweedfs:4.48}
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret-key

cargo build --locked --release --quiet
bin=target/release/etcd-backup

etcd=$(docker run -d --rm -p 127.0.0.1::2379 --entrypoint /usr/local/bin/etcd "$ETCD_IMAGE" \
  --data-dir /var/lib/etcd/demo --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379)
s3=$(docker run -d --rm -p 127.0.0.1::8333 -p 127.0.0.1::8888 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
  --entrypoint /usr/bin/weed "$S3_IMAGE" mini -dir=/data -s3.port=8333 -master.telemetry=false)
trap 'docker rm -f "$etcd" "$s3" >/dev/null' EXIT
port() { docker port "$1" "$2" | head -n1 | sed 's/.*://'; }
export ETCD_ENDPOINTS="http://127.0.0.1:$(port "$etcd" 2379)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$(port "$s3" 8333)"
filer="http://127.0.0.1:$(port "$s3" 8888)"
export BACKUP_BUCKET=demo-backups

echo "== waiting for SeaweedFS, then creating bucket $BACKUP_BUCKET"
for _ in $(seq 120); do curl -sf -X POST "$filer/buckets/$BACKUP_BUCKET/" >/dev/null 2>&1 && break; sleep 0.5; done
echo "== writing 500 keys into etcd"
{ echo; for i in $(seq 1 100); do echo "put /registry/configmaps/demo/cm$i {\"kind\":\"ConfigMap\",\"n\":$i}"; done; echo; echo; } \
  | docker exec -i "$etcd" /usr/local/bin/etcdctl txn >/dev/null
for b in 1 2 3 4; do
  { echo; for i in $(seq 1 100); do echo "put /registry/secrets/demo/s$b-$i $(head -c 600 /dev/urandom | base64 -w0)"; done; echo; echo; } \
    | docker exec -i "$etcd" /usr/local/bin/etcdctl txn >/dev/null
done
echo "== etcd-backup backup"
"$bin" backup
echo "== etcd-backup prune --dry-run"
"$bin" prune --dry-run
echo "== the object in the bucket"
curl -s -H 'Accept: application/json' "$filer/buckets/$BACKUP_BUCKET/etcd/" | grep -o '"FullPath":"[^"]*"' || true
