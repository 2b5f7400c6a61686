#!/usr/bin/env bash
# Fuzzes the snapshot checks with structure-aware inputs (tests/mutate.rs): each input is a
# script of edits to bbolt's fields in a golden snapshot, resealed with valid checksums.
#   fuzz/run.sh [SECONDS]   (default 600)
# Crashes land in fuzz/artifacts/walk/; copy each into tests/data/fuzz/ as a regression file.
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p corpus/walk
# Seeds: one script per golden file, and the regression files found so far.
for i in 0 1 2; do printf "\\x0$i" > "corpus/walk/seed-$i"; done
cp ../tests/data/fuzz/* corpus/walk/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run walk corpus/walk -- -max_total_time="${1:-600}" -max_len=512 -rss_limit_mb=512 -timeout=10
