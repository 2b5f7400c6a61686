//! The judgement of a signed manifest on what a bucket writer can put there. Most inputs are
//! manifests signed by the verify key itself (a valid signature, as the walk's inputs have valid
//! checksums), so the parsing behind the signature is reached; the rest are raw signatures. It
//! may refuse anything, but must never panic, and must accept only a manifest naming the object.
#![no_main]

use std::sync::OnceLock;

use etcd_backup::sign::{judge, SigningKey, VerifyKeys};
use libfuzzer_sys::fuzz_target;

const OBJECT: &str = "etcd/20260529-060000.db.gz.age";
const FILES: &str = "20260529-060000.files.tar.age";

fn keys() -> &'static (SigningKey, VerifyKeys) {
    static KEYS: OnceLock<(SigningKey, VerifyKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("etcd-backup-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let g = etcd_backup::sign::keygen(&dir.join("key")).unwrap();
        let key = SigningKey::read(&g.private).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (key, VerifyKeys::parse(&g.public_key).unwrap())
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let (key, verify) = keys();
    let (manifest, signature) = if mode % 4 == 0 {
        // A raw signature: the first half, over the second.
        let (s, m) = rest.split_at(rest.len() / 2);
        (m.to_vec(), s.to_vec())
    } else {
        (rest.to_vec(), key.sign(rest).unwrap().into_bytes())
    };
    if let Ok(v) = judge(OBJECT, FILES, Some(&manifest), Some(&signature), verify) {
        assert_eq!(v.get("object-key"), Some(OBJECT));
    }
});
