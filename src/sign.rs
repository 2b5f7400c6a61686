//! Signed manifests: proof that a backup was made by our job, not by whoever can write to the
//! bucket.
//!
//! age gives privacy, not authenticity (anyone holding a public recipient can encrypt), and the
//! SHA-256 trailer, the manifest and the HashKV all sit in the bucket beside the object, so they
//! prove nothing against its writer. The job therefore signs each manifest with an Ed25519 key
//! (`BACKUP_SIGNING_KEY_FILE`), and a restore with `BACKUP_VERIFY_KEY` accepts only a backup
//! whose manifest is signed by one of those keys, names this very object, and whose bytes hash
//! to what it says.
//!
//! The format is an SSH signature (`PROTOCOL.sshsig`), armored, in `<key>.json.sig`, under the
//! namespace [`NAMESPACE`]: exactly what `ssh-keygen -Y sign -n etcd-backup` writes, so an
//! operator checks one with the `ssh-keygen` every machine already has:
//!
//! ```text
//! echo "etcd-backup $(cat signing.pub)" > allowed_signers
//! ssh-keygen -Y verify -f allowed_signers -I etcd-backup -n etcd-backup \
//!     -s 20260529-060000.db.gz.json.sig < 20260529-060000.db.gz.json
//! ```

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSH signature namespace of a backup's manifest (`ssh-keygen -Y ... -n etcd-backup`).
pub const NAMESPACE: &str = "etcd-backup";
/// The namespace of a stream segment's signature: a signature of one kind never passes as
/// another's.
pub const SEGMENT_NAMESPACE: &str = "etcd-backup-segment";
/// The namespace of a stream record's signature (start, base, trimmed, end).
pub const RECORD_NAMESPACE: &str = "etcd-backup-record";

/// An armored Ed25519 SSH signature is about 300 bytes; the bucket is not trusted to keep it so.
pub const MAX_SIGNATURE: u64 = 16 << 10;

/// The private key a job signs with. Its `Debug` shows the public fingerprint only.
pub struct SigningKey {
    key: PrivateKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

/// Why a key file cannot be used. Never holds the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the file ({0})")]
    Read(std::io::Error),
    #[error("not an OpenSSH private key: expected a file written by `etcd-backup keygen -f FILE` or `ssh-keygen -t ed25519`")]
    NotAKey,
    #[error("is an {0} key: expected an Ed25519 key (`etcd-backup keygen -f FILE`)")]
    Algorithm(String),
    #[error("is encrypted with a passphrase, which a CronJob cannot type: expected an unencrypted key from `etcd-backup keygen -f FILE`, kept in a Secret")]
    Encrypted,
}

impl SigningKey {
    /// Reads an unencrypted OpenSSH Ed25519 private key.
    pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read(path).map_err(KeyError::Read)?;
        let key = PrivateKey::from_openssh(&text).map_err(|_| KeyError::NotAKey)?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::Algorithm(key.algorithm().to_string()));
        }
        if key.is_encrypted() {
            return Err(KeyError::Encrypted);
        }
        Ok(SigningKey { key })
    }

    /// The armored signature of `msg`, as `ssh-keygen -Y sign -n etcd-backup` writes it.
    pub fn sign(&self, msg: &[u8]) -> Result<String, ssh_key::Error> {
        self.sign_in(NAMESPACE, msg)
    }

    /// The armored signature of `msg` in `namespace` (`ssh-keygen -Y sign -n NAMESPACE`).
    pub fn sign_in(&self, namespace: &str, msg: &[u8]) -> Result<String, ssh_key::Error> {
        self.key
            .sign(namespace, HashAlg::Sha512, msg)?
            .to_pem(LineEnding::LF)
    }

    pub fn public(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// The public keys a restore accepts signatures from (several during a rotation).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKeys(Vec<PublicKey>);

impl fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string()),
            )
            .finish()
    }
}

impl VerifyKeys {
    /// Public keys in OpenSSH form (`ssh-ed25519 AAAA... comment`), separated by newlines or
    /// commas; `#` lines are comments. Every entry that is not an Ed25519 key is reported.
    pub fn parse(text: &str) -> Result<VerifyKeys, Vec<String>> {
        let mut keys = Vec::new();
        let mut bad = Vec::new();
        for item in text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match PublicKey::from_openssh(item) {
                Ok(k) if k.algorithm() == Algorithm::Ed25519 => {
                    if !keys.contains(&k) {
                        keys.push(k)
                    }
                }
                Ok(k) => bad.push(format!(
                    "{} is an {} key, not Ed25519",
                    shorten(item),
                    k.algorithm()
                )),
                Err(_) => bad.push(format!("{} is not an OpenSSH public key", shorten(item))),
            }
        }
        if keys.is_empty() && bad.is_empty() {
            bad.push("holds no key".to_string());
        }
        if bad.is_empty() {
            Ok(VerifyKeys(keys))
        } else {
            Err(bad)
        }
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.iter().any(|k| k.key_data() == key.key_data())
    }

    /// Checks an armored signature of `msg`: the fingerprint of the key that made it, or why
    /// it is refused.
    pub fn check(&self, msg: &[u8], armored: &[u8]) -> Result<String, BadSignature> {
        self.check_in(NAMESPACE, msg, armored)
    }

    /// [`VerifyKeys::check`] in `namespace`.
    pub fn check_in(
        &self,
        namespace: &str,
        msg: &[u8],
        armored: &[u8],
    ) -> Result<String, BadSignature> {
        let sig = SshSig::from_pem(armored).map_err(|_| BadSignature::Unreadable)?;
        let Some(key) = self.0.iter().find(|k| k.key_data() == sig.public_key()) else {
            let by = PublicKey::from(sig.public_key().clone());
            return Err(BadSignature::UnknownKey(
                by.fingerprint(HashAlg::Sha256).to_string(),
            ));
        };
        key.verify(namespace, msg, &sig)
            .map_err(|_| BadSignature::Invalid)?;
        Ok(key.fingerprint(HashAlg::Sha256).to_string())
    }
}

/// The first characters of a rejected key, enough to find it without flooding the message.
fn shorten(s: &str) -> String {
    let s: String = s.chars().take(40).collect();
    format!("{s:?}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    #[error("its signature is not an SSH signature")]
    Unreadable,
    #[error("it is signed by {0}, which is not one of BACKUP_VERIFY_KEY")]
    UnknownKey(String),
    #[error("its signature does not match its manifest (the manifest was changed after signing)")]
    Invalid,
}

/// A manifest whose signature passed and which names the object it sits beside: what a restore
/// may rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// The fingerprint of the key that signed it.
    pub signer: String,
    /// The manifest's figures (flat strings).
    pub figures: Vec<(String, String)>,
    pub snapshot_sha256: [u8; 32],
    /// The stored object, as uploaded.
    pub stored_sha256: [u8; 32],
    pub stored_size: u64,
    /// The files archive's name and SHA-256, when the backup has one.
    pub files: Option<(String, [u8; 32])>,
}

impl Vouched {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.figures
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a backup is refused when verify keys are set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it has no manifest, so nothing vouches for it")]
    NoManifest,
    #[error("it is not signed (a backup from before BACKUP_SIGNING_KEY_FILE was set, or one planted in the bucket)")]
    Unsigned,
    #[error("{0}")]
    Signature(#[from] BadSignature),
    #[error("its manifest is not a flat JSON object of strings")]
    NotAManifest,
    #[error("its signed manifest is for {named}, not this object (a manifest copied beside another object, or a backup renamed)")]
    OtherObject { named: String },
    #[error("its signed manifest lacks {0}")]
    Lacks(&'static str),
}

impl Refused {
    /// Refusals that `--allow-unsigned` may override: there is no signature to judge. A bad
    /// signature is never overridden.
    pub fn is_unsigned(&self) -> bool {
        matches!(self, Refused::NoManifest | Refused::Unsigned)
    }
}

/// The pure judgement of one backup: `object` is its full key in the bucket (prefix and name),
/// `manifest` and `signature` the bytes found beside it.
pub fn judge(
    object: &str,
    files_name: &str,
    manifest: Option<&[u8]>,
    signature: Option<&[u8]>,
    keys: &VerifyKeys,
) -> Result<Vouched, Refused> {
    let manifest = manifest.ok_or(Refused::NoManifest)?;
    let signature = signature.ok_or(Refused::Unsigned)?;
    let signer = keys.check(manifest, signature)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(manifest).map_err(|_| Refused::NotAManifest)?;
    let figures: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => Err(Refused::NotAManifest),
        })
        .collect::<Result<_, _>>()?;
    let get = |name| {
        figures
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let named = get("object-key").ok_or(Refused::Lacks("object-key"))?;
    if named != object {
        return Err(Refused::OtherObject {
            named: named.to_string(),
        });
    }
    let sha = |name: &'static str| get(name).and_then(parse_hex).ok_or(Refused::Lacks(name));
    let files = match get("files-archive") {
        None => None,
        Some(n) if n == files_name => Some((n.to_string(), sha("files-sha256")?)),
        Some(n) => {
            return Err(Refused::OtherObject {
                named: n.to_string(),
            })
        }
    };
    Ok(Vouched {
        signer,
        snapshot_sha256: sha("snapshot-sha256")?,
        stored_sha256: sha("stored-sha256")?,
        stored_size: get("stored-size")
            .and_then(|s| s.parse().ok())
            .ok_or(Refused::Lacks("stored-size"))?,
        files,
        figures,
    })
}

/// 64 lowercase or uppercase hex digits.
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The two files `keygen` wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    pub private: PathBuf,
    pub public: PathBuf,
    pub public_key: String,
    pub fingerprint: String,
}

/// Writes a new Ed25519 key: the private key to `path` (mode 0600), the public key to
/// `path.pub`, as `ssh-keygen -t ed25519 -N '' -f path` does. Refuses to replace either.
pub fn keygen(path: &Path) -> anyhow::Result<Generated> {
    use anyhow::Context;
    let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .context("generating an Ed25519 key")?;
    key.set_comment("etcd-backup");
    let public_path = {
        let mut p = path.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    };
    let public_key = key.public_key().to_openssh()?;
    let write = |p: &Path, mode: u32, text: &[u8]| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .with_context(|| {
                format!(
                    "creating {} (an existing key is never replaced)",
                    p.display()
                )
            })?;
        f.write_all(text)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", p.display()))
    };
    if public_path.exists() {
        anyhow::bail!(
            "{} exists; an existing key is never replaced",
            public_path.display()
        );
    }
    write(path, 0o600, key.to_openssh(LineEnding::LF)?.as_bytes())?;
    write(&public_path, 0o644, format!("{public_key}\n").as_bytes())?;
    Ok(Generated {
        private: path.to_path_buf(),
        public: public_path,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey {
            key: PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap(),
        }
    }

    fn keys(k: &SigningKey) -> VerifyKeys {
        VerifyKeys::parse(&k.public().to_openssh().unwrap()).unwrap()
    }

    const OBJECT: &str = "etcd/20260529-060000.db.gz.age";
    const FILES: &str = "20260529-060000.files.tar.age";

    fn manifest(object: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let h = "ab".repeat(32);
        let mut m = serde_json::json!({
            "object-key": object,
            "snapshot-sha256": h,
            "stored-sha256": h,
            "stored-size": "123",
        });
        for (k, v) in extra {
            m[*k] = (*v).into();
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn a_manifest_is_accepted_only_when_signed_by_a_verify_key_and_naming_its_object() {
        let (ours, theirs) = (key(), key());
        let good = manifest(OBJECT, &[]);
        let sig = ours.sign(&good).unwrap();
        let ok = judge(
            OBJECT,
            FILES,
            Some(&good),
            Some(sig.as_bytes()),
            &keys(&ours),
        )
        .unwrap();
        assert_eq!(ok.signer, ours.fingerprint());
        assert_eq!(ok.stored_size, 123);

        let mut changed = good.clone();
        let at = changed.len() - 3;
        changed[at] = b'4';
        let renamed = manifest("etcd/20260601-060000.db.gz.age", &[]);
        let renamed_sig = ours.sign(&renamed).unwrap();
        let files_moved = manifest(
            OBJECT,
            &[
                ("files-archive", "20260101-000000.files.tar.age"),
                ("files-sha256", &"cd".repeat(32)),
            ],
        );
        let files_moved_sig = ours.sign(&files_moved).unwrap();
        let no_files_hash = manifest(OBJECT, &[("files-archive", FILES)]);
        let no_files_hash_sig = ours.sign(&no_files_hash).unwrap();
        let theirs_sig = theirs.sign(&good).unwrap();
        let not_strings = br#"{"object-key": 1}"#.to_vec();
        let not_strings_sig = ours.sign(&not_strings).unwrap();
        let ok_keys = keys(&ours);
        type Case<'a> = (
            &'a str,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            &'a VerifyKeys,
            Refused,
        );
        let table: Vec<Case> = vec![
            ("no manifest", None, None, &ok_keys, Refused::NoManifest),
            ("unsigned", Some(&good), None, &ok_keys, Refused::Unsigned),
            (
                "another key",
                Some(&good),
                Some(theirs_sig.as_bytes()),
                &ok_keys,
                BadSignature::UnknownKey(theirs.fingerprint()).into(),
            ),
            (
                "changed after signing",
                Some(&changed),
                Some(sig.as_bytes()),
                &ok_keys,
                BadSignature::Invalid.into(),
            ),
            (
                "garbage signature",
                Some(&good),
                Some(b"-----BEGIN SSH SIGNATURE-----\nAAAA\n"),
                &ok_keys,
                BadSignature::Unreadable.into(),
            ),
            (
                "renamed",
                Some(&renamed),
                Some(renamed_sig.as_bytes()),
                &ok_keys,
                Refused::OtherObject {
                    named: "etcd/20260601-060000.db.gz.age".into(),
                },
            ),
            (
                "another backup's files",
                Some(&files_moved),
                Some(files_moved_sig.as_bytes()),
                &ok_keys,
                Refused::OtherObject {
                    named: "20260101-000000.files.tar.age".into(),
                },
            ),
            (
                "files without a hash",
                Some(&no_files_hash),
                Some(no_files_hash_sig.as_bytes()),
                &ok_keys,
                Refused::Lacks("files-sha256"),
            ),
            (
                "not strings",
                Some(&not_strings),
                Some(not_strings_sig.as_bytes()),
                &ok_keys,
                Refused::NotAManifest,
            ),
        ];
        for (case, m, s, k, want) in table {
            assert_eq!(judge(OBJECT, FILES, m, s, k), Err(want), "{case}");
        }
        // Rotation: either key is accepted.
        let both = VerifyKeys::parse(&format!(
            "{}\n{}",
            theirs.public().to_openssh().unwrap(),
            ours.public().to_openssh().unwrap()
        ))
        .unwrap();
        assert!(judge(OBJECT, FILES, Some(&good), Some(sig.as_bytes()), &both).is_ok());
    }

    #[test]
    fn verify_keys_name_every_bad_entry_and_never_accept_none() {
        let k = key().public().to_openssh().unwrap();
        assert!(VerifyKeys::parse(&format!("# ours\n{k},{k}\n")).is_ok());
        assert_eq!(
            VerifyKeys::parse(" \n# only a comment\n"),
            Err(vec!["holds no key".to_string()])
        );
        let bad = VerifyKeys::parse(&format!("{k},age1xyz,ssh-rsa AAAAB3Nza")).unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].contains("\"age1xyz\" is not an OpenSSH public key"),
            "{bad:?}"
        );
    }

    #[test]
    fn keygen_writes_a_key_that_signs_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing");
        let g = keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let k = SigningKey::read(&path).unwrap();
        assert_eq!(k.fingerprint(), g.fingerprint);
        let pubs = VerifyKeys::parse(&std::fs::read_to_string(&g.public).unwrap()).unwrap();
        assert!(pubs.contains(k.public()));
        assert!(
            !format!("{k:?}").contains("PRIVATE"),
            "Debug shows the fingerprint only"
        );
        assert!(keygen(&path).is_err());
        assert!(matches!(
            SigningKey::read(&g.public),
            Err(KeyError::NotAKey)
        ));
    }

    #[test]
    fn hex_is_exactly_64_digits() {
        assert_eq!(parse_hex(&"0f".repeat(32)), Some([15; 32]));
        assert_eq!(parse_hex(&"0f".repeat(31)), None);
        assert_eq!(parse_hex(&"zz".repeat(32)), None);
        assert_eq!(parse_hex(&"é".repeat(32)), None);
    }
}
