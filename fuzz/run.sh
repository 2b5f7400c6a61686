#!/usr/bin/env bash
# Fuzzes the snapshot checks with structure-aware inputs (tests/mutate.rs): each input is a
# script of edits to bbolt's fields in a golden snapshot, resealed with valid checksums.
#   fuzz/run.sh [SECONDS] [TARGET]   (default 600 s of walk)
# TARGET judge fuzzes the judgement of signed manifests instead (fuzz_targets/judge.rs), and
# TARGET segment the reader of stream segments (fuzz_targets/segment.rs).
# Crashes land in fuzz/artifacts/TARGET/; copy each into tests/data/fuzz/ as a regression file.
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
target=${2:-walk}
mkdir -p "corpus/$target"
if [ "$target" = judge ]; then
  # Seeds: a manifest in our shape, signed (mode byte 1), and a raw signature (mode byte 0).
  h=$(printf 'ab%.0s' $(seq 32))
  printf '\x01{"object-key":"etcd/20260529-060000.db.gz.age","snapshot-sha256":"%s","stored-sha256":"%s","stored-size":"12","files-archive":"20260529-060000.files.tar.age","files-sha256":"%s"}' "$h" "$h" "$h" > corpus/judge/seed-manifest
  printf '\x00-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n{}' > corpus/judge/seed-raw
  max_len=4096
elif [ "$target" = segment ]; then
  # Seeds: a segment of two revisions and a lease, between its magic and its hash, unsigned and
  # signed (a mode byte first: see fuzz_targets/segment.rs).
  python3 - corpus/segment/seed <<'PY'
import json, struct, sys
h = json.dumps({"generation": "20261204T170000Z", "cluster_id": "c", "first": 2, "last": 3,
                "revisions": 2, "events": 3, "previous": "base:1"}).encode()
out = struct.pack(">I", len(h)) + h + b"\x02" + struct.pack(">qq", 7, 60)
for rev, keys in ((2, [b"a"]), (3, [b"b", b"c"])):
    out += b"\x01" + struct.pack(">qqI", rev, 0, len(keys))
    for k in keys:
        kv = b"\x0a" + bytes([len(k)]) + k + b"\x18" + bytes([rev]) + b"\x2a\x01v" + b"\x30\x07"
        out += b"\x00" + struct.pack(">I", len(kv)) + kv
out += b"\x00"
# Mode 0: unsigned. Mode 13: signed, with a 6-byte trailer (a length of 2 and two bytes).
open(sys.argv[1], "wb").write(b"\x00" + out)
open(sys.argv[1] + "-signed", "wb").write(bytes([13]) + out + struct.pack(">I", 2) + b"ab")
PY
  max_len=4096
else
  # Seeds: one script per golden file, and the regression files found so far.
  for i in 0 1 2; do printf "\\x0$i" > "corpus/walk/seed-$i"; done
  cp ../tests/data/fuzz/* corpus/walk/ 2>/dev/null || true
  max_len=512
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="${1:-600}" -max_len="$max_len" -rss_limit_mb=512 -timeout=10
