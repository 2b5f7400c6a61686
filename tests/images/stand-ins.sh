#!/usr/bin/env bash
# Builds local stand-ins for the two base images the release Containerfile names, where no
# registry is reachable:
#   etcd-backup-standin/rust:bookworm          rust:1.95-bookworm: a Debian bookworm root
#       filesystem from Debian's archive (debootstrap, minbase plus gcc, libc6-dev, curl and the CA
#       certificates) with this machine's Rust toolchain at /usr/local/rustup and rustup's proxies
#       at /usr/local/cargo/bin, as the official image lays them out;
#   etcd-backup-standin/distroless-static:nonroot   gcr.io/distroless/static-debian12:nonroot:
#       the same files distroless static ships (CA bundle, tzdata, netbase, os-release, passwd and
#       group with root, nobody and nonroot 65532, /tmp 1777, /home/nonroot), nothing else, and
#       its config (USER 65532:65532, WORKDIR /home/nonroot, SSL_CERT_FILE).
# Both are taken from the same debootstrap run. Idempotent: an existing stand-in is kept unless
# STANDIN_REBUILD=1.
#   tests/images/stand-ins.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rust_tag=etcd-backup-standin/rust:bookworm
runtime_tag=etcd-backup-standin/distroless-static:nonroot
if [ "${STANDIN_REBUILD:-0}" != 1 ] && docker image inspect "$rust_tag" "$runtime_tag" >/dev/null 2>&1; then
  echo "stand-ins present: $rust_tag, $runtime_tag"
  exit 0
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The Debian archive this machine's apt already uses: the first source that serves bookworm,
# in the one-line format (sources.list, *.list) or deb822 (*.sources). DEBIAN_MIRROR overrides.
apt_mirror() {
  {
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | sed -E 's/\[[^]]*\] ?//' | awk '$3 == "bookworm" { print $2 }'
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -r "$f" ] || continue
      awk '/^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") print uri } /^$/ { uri = "" }' "$f"
    done
  } | head -n1
}
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
if [ -z "$mirror" ]; then
  echo "no apt source for Debian bookworm in /etc/apt: set DEBIAN_MIRROR to a Debian archive URL" >&2
  exit 1
fi

# debootstrap is a shell script: run it from its package, without installing it.
(cd "$work" && apt-get download debootstrap >/dev/null 2>&1) || {
  apt-get update -qq && (cd "$work" && apt-get download debootstrap >/dev/null)
}
dpkg-deb -x "$work"/debootstrap_*.deb "$work/debootstrap"
root="$work/bookworm"
echo "debootstrap bookworm from $mirror ..."
DEBOOTSTRAP_DIR="$work/debootstrap/usr/share/debootstrap" "$work/debootstrap/usr/sbin/debootstrap" \
  --variant=minbase --include=ca-certificates,curl,gcc,libc6-dev,tzdata,netbase \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  echo "debootstrap of Debian bookworm from $mirror failed (log above)" >&2
  exit 1
}
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# The runtime stand-in, copied out of the same root filesystem before Rust goes in.
rt="$work/runtime"
mkdir -p "$rt"/etc/ssl/certs "$rt"/usr/share "$rt"/tmp "$rt"/home/nonroot "$rt"/root "$rt"/var/lib/dpkg/status.d
cp "$root"/etc/ssl/certs/ca-certificates.crt "$rt"/etc/ssl/certs/
cp -a "$root"/usr/share/zoneinfo "$rt"/usr/share/
cp "$root"/etc/services "$root"/etc/protocols "$root"/etc/ethertypes "$rt"/etc/
cp "$root"/usr/lib/os-release "$rt"/etc/os-release
printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\nshadow: files\n' >"$rt"/etc/nsswitch.conf
cat >"$rt"/etc/passwd <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$rt"/etc/group
chmod 1777 "$rt"/tmp
chmod 0700 "$rt"/root "$rt"/home/nonroot
chown 65532:65532 "$rt"/home/nonroot
tar -C "$rt" --numeric-owner -c . | docker import \
  --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$runtime_tag" >/dev/null
echo "built $runtime_tag: $(docker image inspect "$runtime_tag" --format '{{.Size}}') bytes"

# The builder's installs go out through this machine's egress, which may re-sign TLS with a local
# CA (/usr/local/share/ca-certificates): the builder stand-in trusts what this machine trusts. The
# runtime stand-in above keeps Debian's bundle alone, as distroless does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root"/usr/local/share/ca-certificates/
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi

# The builder stand-in: this machine's toolchain, without its documentation (as the official
# image's minimal profile), under the version's own name so rustup needs no network to find it.
src=$(readlink -f "$(rustc --print sysroot)")
version=$(rustc --version | awk '{print $2}')
name="$version-x86_64-unknown-linux-gnu"
mkdir -p "$root"/usr/local/rustup/toolchains "$root"/usr/local/cargo/bin
tar -C "$src" --exclude=./share/doc -c . | (mkdir -p "$root/usr/local/rustup/toolchains/$name" &&
  tar -C "$root/usr/local/rustup/toolchains/$name" -x)
printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' "$name" \
  >"$root"/usr/local/rustup/settings.toml
cp "$(command -v rustup)" "$root"/usr/local/cargo/bin/rustup
for proxy in cargo rustc rustdoc; do ln -sf rustup "$root/usr/local/cargo/bin/$proxy"; done
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$rust_tag" >/dev/null
echo "built $rust_tag (Debian bookworm, Rust $version): $(docker image inspect "$rust_tag" --format '{{.Size}}') bytes"
