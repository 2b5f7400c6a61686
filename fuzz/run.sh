#!/usr/bin/env bash
# Fuzzes the bbolt walker, seeded with the golden snapshots (without their trailers too).
#   fuzz/run.sh [SECONDS]   (default 300)
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p corpus/walk
for f in ../tests/data/*.db; do
  cp "$f" "corpus/walk/$(basename "$f")"
  head -c -32 "$f" > "corpus/walk/$(basename "$f" .db).notrailer"
done
RUSTC_BOOTSTRAP=1 cargo fuzz run walk corpus/walk -- -max_total_time="${1:-300}" -max_len=65536 -rss_limit_mb=512
