#!/usr/bin/env bash
# The aarch64 binary, built and run here: rustup's aarch64-unknown-linux-musl target with zig
# (PyPI `ziglang`) as the cross linker through cargo-zigbuild, as the Containerfile builds it,
# then run under qemu-user-static (Debian's package, extracted, no binfmt needed): `--help`, and
# `verify -o json` of every golden snapshot, which must print exactly what the x86_64 binary
# prints (hash, revision, HashKV and the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-musl
rustup target add "$target" >/dev/null
venv=${ZIG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-zig}
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on the PATH: the venv's python first.
# zig 0.14.1: 0.13.0's clang cannot compile libdeflate's aarch64 CRC-32 (the SHA3 EOR3 intrinsic).
# cargo-zigbuild from PyPI, built, beside it (cargo install compiled it: 37 s of wall time here).
[ "$("$venv/bin/python3" -m ziglang version 2>/dev/null)" = 0.14.1 ] && [ -x "$venv/bin/cargo-zigbuild" ] ||
  { python3 -m venv --clear "$venv" && "$venv/bin/pip" install --quiet ziglang==0.14.1 cargo-zigbuild==0.19.8; }
export PATH="$venv/bin:$PATH"
RUSTFLAGS="-C target-feature=+crt-static" cargo zigbuild --locked --release --quiet --bin etcd-backup --target "$target"
arm="target/$target/release/etcd-backup"
# An aarch64 ELF (e_machine 183) without a program interpreter (no PT_INTERP): static.
python3 - "$arm" <<'PY' || { echo "FAIL: $arm is not a static aarch64 binary" >&2; exit 1; }
import struct, sys
b = open(sys.argv[1], "rb").read()
machine, = struct.unpack_from("<H", b, 18)
phoff, = struct.unpack_from("<Q", b, 32)
phentsize, phnum = struct.unpack_from("<HH", b, 54)
types = [struct.unpack_from("<I", b, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(0 if machine == 183 and 3 not in types else 1)
PY

tools=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-backup-tools}
if [ ! -x "$tools/qemu-aarch64-static" ]; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd "$work" && { apt-get download qemu-user-static >/dev/null 2>&1 || { apt-get update -qq && apt-get download qemu-user-static >/dev/null; }; })
  dpkg-deb -x "$work"/qemu-user-static_*.deb "$work/root"
  mkdir -p "$tools"
  cp "$work/root/usr/bin/qemu-aarch64-static" "$tools/" 2>/dev/null || cp "$work/root/usr/bin/qemu-aarch64" "$tools/qemu-aarch64-static"
fi
qemu="$tools/qemu-aarch64-static"
"$qemu" "$arm" --help | grep -q "Streamed, verified etcd snapshots" || { echo "FAIL: --help under qemu" >&2; exit 1; }

x86=target/x86_64-unknown-linux-musl/release/etcd-backup
[ -x "$x86" ] || x86=target/debug/etcd-backup
[ -x "$x86" ] || cargo build --locked --quiet --bin etcd-backup
n=0
for db in tests/data/*.db; do
  ours=$("$x86" verify "$db" -o json)
  theirs=$(BACKUP_TMP_DIR=${TMPDIR:-/tmp} "$qemu" "$arm" verify "$db" -o json)
  [ "$ours" = "$theirs" ] || { echo "FAIL: $db: x86_64 $ours, aarch64 $theirs" >&2; exit 1; }
  n=$((n + 1))
done
echo "arm64: $(stat -c %s "$arm") bytes, static; --help and verify of $n golden snapshots under qemu equal x86_64's"
