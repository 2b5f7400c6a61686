#!/usr/bin/env bash
# Builds the runtime image where no registry is reachable: the static musl binary built on the
# host, in a FROM scratch image with what distroless static carries and we use (the CA bundle,
# /etc/passwd and /etc/group with nonroot 65532, a world-writable /tmp), as uid 65532.
#   tests/images/runtime.sh [TAG]   (default etcd-backup:test)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-etcd-backup:test}
target=x86_64-unknown-linux-musl
rustup target add "$target" >/dev/null
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release --bin etcd-backup --target "$target"
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
cp "target/$target/release/etcd-backup" "$ctx/rootfs/etcd-backup"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/rootfs/etc/group"
cat > "$ctx/Containerfile" <<'CF'
FROM scratch
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/etcd-backup"]
CMD ["backup"]
CF
docker build -q -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "built $tag: $(docker image inspect "$tag" --format '{{.Size}}') bytes"
