#!/usr/bin/env bash
# Regenerates the golden snapshots in tests/data from a real etcd, with etcdutl's own status.
# Not run by CI (the files are checked in); run it by hand after changing what they cover:
#   ETCDCTL=/path/to/etcdctl ETCDUTL=/path/to/etcdutl tests/data/make-golden.sh
# It needs the local etcd image (tests/images/build.sh) and Docker.
set -euo pipefail
cd "$(dirname "$0")"
image=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
ctl=${ETCDCTL:-etcdctl}; utl=${ETCDUTL:-etcdutl}
port=23791
name=etcd-backup-golden-$$
docker run -d --rm --name "$name" -p 127.0.0.1:$port:2379 "$image" --data-dir /var/lib/etcd/d \
  --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379 >/dev/null
trap 'docker rm -f "$name" >/dev/null' EXIT
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=http://127.0.0.1:$port
for _ in $(seq 50); do "$ctl" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

save() { # save NAME: snapshot and etcdutl's status of it
  "$ctl" snapshot save "$1.db" >/dev/null 2>&1
  "$utl" snapshot status "$1.db" -w json > "$1.status.json"
  echo "$1: $(cat "$1.status.json")"
}

save empty
# A few keys.
for i in 1 2 3; do "$ctl" put "/registry/configmaps/default/c$i" "value $i" >/dev/null; done
save small
# Thousands of keys in transactions of 100 puts (branch pages), overwrites and deletes (revisions
# differ from key counts), values of 1-20 KiB (overflow pages), and a lease.
batch() { # batch FROM TO SIZE
  # etcdctl txn reads: compares, a blank line, success ops, a blank line, failure ops.
  { echo; for i in $(seq "$1" "$2"); do
      printf 'put /registry/pods/ns%d/p%05d %s\n' $((i % 7)) "$i" "$(head -c "$3" /dev/urandom | base64 -w0)"
    done; echo; echo; } | "$ctl" txn >/dev/null
}
for b in $(seq 0 29); do batch $((b * 100)) $((b * 100 + 99)) 120; done
for b in 0 1 2; do batch $((b * 100)) $((b * 100 + 49)) 15000; done
"$ctl" del --prefix /registry/pods/ns3 >/dev/null
lease=$("$ctl" lease grant 3600 | awk '{print $2}')
"$ctl" put --lease="$lease" /registry/leases/x y >/dev/null
save medium
rev=$("$ctl" endpoint status -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
"$ctl" compact "$rev" >/dev/null
"$ctl" defrag >/dev/null
save compacted
