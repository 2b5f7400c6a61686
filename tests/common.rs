//! Helpers shared by the test modules.

use std::path::PathBuf;

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn read_data(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// etcdutl's status of a golden snapshot, as checked in.
pub fn golden_status(name: &str) -> serde_json::Value {
    serde_json::from_slice(&read_data(&format!("{name}.status.json"))).unwrap()
}

pub const GOLDEN: [&str; 4] = ["empty", "small", "medium", "compacted"];

/// `name` from tests/data, gzip'd by our encoder (one thread).
pub fn gzipped(name: &str) -> Vec<u8> {
    use etcd_backup::compress::{Codec, Encoder};
    let mut enc = Encoder::new(Codec::Gzip, 6, 1, Vec::new()).unwrap();
    std::io::Write::write_all(&mut enc, &read_data(name)).unwrap();
    enc.finish().unwrap()
}

/// The directory `scripts/tools.sh` extracts Debian's binaries to (promtool, the Pushgateway,
/// the age CLI).
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOOLS_DIR") {
        return d.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    cache.join("etcd-backup-tools")
}

/// A fresh age key pair made by the real `age-keygen`: (identity file, public key).
pub fn age_keygen(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let keygen = tools_dir().join("age-keygen");
    let path = dir.join(name);
    let o = std::process::Command::new(&keygen)
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen: run scripts/tools.sh (make setup does)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(&keygen)
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    (
        path,
        String::from_utf8(o.stdout).unwrap().trim().to_string(),
    )
}

/// `object` decrypted by the real `age -d -i identity` and gunzipped: a backup read back with
/// no tool of ours. `dir` holds the encrypted copy the CLI reads.
pub fn age_decrypt_gunzip(
    identity: &std::path::Path,
    object: &[u8],
    dir: &std::path::Path,
) -> Vec<u8> {
    let enc = dir.join("object.age");
    std::fs::write(&enc, object).unwrap();
    let o = std::process::Command::new(tools_dir().join("age"))
        .args(["-d", "-i"])
        .arg(identity)
        .arg(&enc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut snapshot = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&o.stdout[..]),
        &mut snapshot,
    )
    .unwrap();
    snapshot
}
