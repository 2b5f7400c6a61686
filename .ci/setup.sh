#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh machine of our kind.
# Idempotent: safe to run again; every step is skipped when its result is there.
set -euo pipefail
need_apt=()
for p in protobuf-compiler libprotobuf-dev musl-tools unzip curl nix-bin openssh-client; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
