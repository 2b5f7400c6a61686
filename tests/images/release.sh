#!/usr/bin/env bash
# Builds the release image from the Containerfile itself (multi-stage: cargo zigbuild in the
# builder, the static binary on distroless static), with the bases replaced through its build
# arguments by the local stand-ins of tests/images/stand-ins.sh, since no registry is reachable.
# The builder's own installs (apt, pip, crates.io, rustup targets) need the network: the build
# runs with --network=host.
#   tests/images/release.sh [TAG]   (default etcd-backup:release)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-etcd-backup:release}
bash tests/images/stand-ins.sh
start=$(date +%s)
# Debian's docker.io has no buildx, so this is the classic builder, which does not set the
# platform arguments BuildKit would: they are given here.
DOCKER_BUILDKIT=0 docker build --network=host \
  --build-arg BUILDPLATFORM=linux/amd64 --build-arg TARGETARCH=amd64 \
  --build-arg RUST_IMAGE=etcd-backup-standin/rust:bookworm \
  --build-arg RUNTIME_IMAGE=etcd-backup-standin/distroless-static:nonroot \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  -f Containerfile -t "$tag" . >"${RELEASE_LOG:-/tmp/etcd-backup-release-build.log}" 2>&1 || {
  tail -n 40 "${RELEASE_LOG:-/tmp/etcd-backup-release-build.log}" >&2
  echo "docker build of the Containerfile failed (log above)" >&2
  exit 1
}
echo "built $tag from the Containerfile in $(($(date +%s) - start)) s: $(docker image inspect "$tag" --format '{{.Size}}') bytes"
