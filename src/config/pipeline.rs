//! The pipeline section (compression, scratch, upload parts, progress) and encryption: age
//! recipients for the way out, identities for the way back, and the files archived beside a
//! backup, which are allowed only when they will be encrypted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::reader::{parse_size, Reader};
use super::vars::Key;
use crate::compress::Codec;
use crate::crypt::Identities;
use crate::sign::{SigningKey, VerifyKeys};

/// How a snapshot is processed.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub codec: Codec,
    pub level: u32,
    pub tmp_dir: PathBuf,
    pub part_size: usize,
    pub concurrency: usize,
    /// Compression threads.
    pub threads: usize,
    /// How often a long transfer logs its progress; `None` for never.
    pub progress: Option<Duration>,
    /// age X25519 public keys to encrypt to; empty for no encryption.
    pub recipients: Vec<String>,
    /// The key each manifest is signed with (BACKUP_SIGNING_KEY_FILE).
    pub signing: Option<Arc<SigningKey>>,
}

pub(super) fn pipeline(r: &mut Reader<'_>) -> Option<PipelineConfig> {
    let before = r.count();
    let codec = r.parse(Key::BackupCompression, "expected gzip, zstd or none", |v| {
        v.parse::<Codec>().ok()
    });
    let level = codec.and_then(|c| level(r, c));
    let tmp_dir = tmp_dir(r);
    let part_size = r.parse(
        Key::BackupUploadPartSize,
        "expected a size from 5MiB to 5GiB such as 8MiB or 64MiB",
        |v| {
            parse_size(v)
                .filter(|s| (5 << 20..=5 << 30).contains(s))
                .map(|s| s as usize)
        },
    );
    let concurrency = r.parse(
        Key::BackupUploadConcurrency,
        "expected a whole number from 1 to 64",
        |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
    );
    let threads = r
        .parse(
            Key::BackupCompressionThreads,
            "expected a whole number from 1 to 64",
            |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
        )
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(64)));
    let progress = progress(r);
    let recipients = recipients(r);
    let signing = signing(r);
    let (
        Some(codec),
        Some(level),
        Some(tmp_dir),
        Some(part_size),
        Some(concurrency),
        Some(progress),
        Some(signing),
    ) = (
        codec,
        level,
        tmp_dir,
        part_size,
        concurrency,
        progress,
        signing,
    )
    else {
        return None;
    };
    (r.count() == before).then_some(PipelineConfig {
        codec,
        level,
        tmp_dir,
        part_size,
        concurrency,
        threads,
        progress,
        recipients,
        signing,
    })
}

/// BACKUP_COMPRESSION_LEVEL within the codec's range, or the codec's default.
fn level(r: &mut Reader<'_>, codec: Codec) -> Option<u32> {
    let range = codec.levels();
    let expected = match codec {
        Codec::None => "expected no level with BACKUP_COMPRESSION=none".to_string(),
        _ => format!(
            "expected a {codec} level from {} to {}",
            range.start(),
            range.end()
        ),
    };
    if !r.is_set(Key::BackupCompressionLevel) {
        return Some(codec.default_level());
    }
    r.parse(Key::BackupCompressionLevel, &expected, |v| {
        v.parse::<u32>().ok().filter(|l| range.contains(l))
    })
}

/// BACKUP_TMP_DIR, or the system's temporary directory. `verify` takes it as it is (a raw file
/// needs no scratch space, and a missing directory is a runtime failure that names it there).
pub(super) fn scratch_dir(r: &mut Reader<'_>) -> PathBuf {
    r.get(Key::BackupTmpDir)
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(std::env::temp_dir)
}

/// [`scratch_dir`], which a backup needs to exist before it starts.
fn tmp_dir(r: &mut Reader<'_>) -> Option<PathBuf> {
    let dir = scratch_dir(r);
    if dir.is_dir() {
        Some(dir)
    } else {
        r.problem(
            Key::BackupTmpDir.name(),
            dir.to_str(),
            "expected an existing directory for scratch files",
        );
        None
    }
}

/// `BACKUP_PROGRESS_INTERVAL`: `Some(None)` when turned off with 0s.
pub(super) fn progress(r: &mut Reader<'_>) -> Option<Option<Duration>> {
    r.parse(
        Key::BackupProgressInterval,
        "expected a duration such as 10s or 1m, or 0s to turn progress lines off",
        |v| humantime::parse_duration(v).ok(),
    )
    .map(|d| (!d.is_zero()).then_some(d))
}

/// The union of BACKUP_AGE_RECIPIENTS and BACKUP_AGE_RECIPIENTS_FILE, each checked. A variable
/// that is set, even to nothing, must hold at least one recipient: a typo or an unset shell
/// variable must never turn into a plaintext upload.
fn recipients(r: &mut Reader<'_>) -> Vec<String> {
    const FORM: &str = "expected age X25519 public keys (age1..., as age-keygen -y prints them)";
    let mut keys: Vec<String> = Vec::new();
    let mut take = |r: &mut Reader<'_>, var: &str, shown: &str, items: Vec<&str>| {
        if items.is_empty() {
            r.problem(var, Some(shown), format!("is set but holds no recipient: {FORM}, or unset it to store backups unencrypted"));
        }
        for item in items {
            if item.parse::<age::x25519::Recipient>().is_err() {
                r.problem(
                    var,
                    Some(shown),
                    format!("{item:?} is not an age recipient: {FORM}"),
                );
            } else if !keys.iter().any(|k| k == item) {
                keys.push(item.to_string());
            }
        }
    };
    // Read raw, not through `Reader::raw`: a variable set to blanks is a problem here, not unset.
    let env = r.env;
    let list = Key::BackupAgeRecipients.name();
    if let Some(v) = env.get(list) {
        let items = v
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|i| !i.is_empty())
            .collect();
        take(r, list, v, items);
    }
    let file = Key::BackupAgeRecipientsFile.name();
    if let Some(path) = env.get(file) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let items = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                take(r, file, path, items);
            }
            Err(e) => r.problem(
                file,
                Some(path),
                format!("cannot read the file ({e}): expected a recipients file, one age1... key a line"),
            ),
        }
    }
    keys
}

/// BACKUP_INCLUDE_PATHS: existing paths, and only with encryption, so that private keys never
/// reach the bucket in plaintext.
pub(super) fn include(r: &mut Reader<'_>, pipeline: Option<&PipelineConfig>) -> Vec<PathBuf> {
    let Some((used, list)) = r.raw(Key::BackupIncludePaths) else {
        return Vec::new();
    };
    let paths: Vec<PathBuf> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if pipeline.is_some_and(|p| p.recipients.is_empty()) {
        r.problem(used, Some(list), "needs encryption: set BACKUP_AGE_RECIPIENTS or BACKUP_AGE_RECIPIENTS_FILE (these files hold private keys, which never go to the bucket in plaintext)");
    }
    for p in &paths {
        if !p.is_absolute() || !p.exists() {
            r.problem(used, Some(list), format!("{:?} is not an existing absolute path: expected files or directories, comma-separated, such as /etc/kubernetes/pki", p.display().to_string()));
        }
    }
    paths
}

/// Reads BACKUP_AGE_IDENTITY_FILE, if set: `Some(None)` when unset, `None` on a problem. The
/// file's contents never reach a message.
pub(super) fn identities(r: &mut Reader<'_>) -> Option<Option<Arc<Identities>>> {
    let Some((used, path)) = r.raw(Key::BackupAgeIdentityFile) else {
        return Some(None);
    };
    match Identities::read(PathBuf::from(path)) {
        Ok(ids) => Some(Some(Arc::new(ids))),
        Err(e) => {
            r.problem(used, Some(path), e.to_string());
            None
        }
    }
}

/// BACKUP_SIGNING_KEY_FILE, if set: `Some(None)` when unset, `None` on a problem. The key never
/// reaches a message.
fn signing(r: &mut Reader<'_>) -> Option<Option<Arc<SigningKey>>> {
    let Some((used, path)) = r.raw(Key::BackupSigningKeyFile) else {
        return Some(None);
    };
    match SigningKey::read(std::path::Path::new(path)) {
        Ok(k) => Some(Some(Arc::new(k))),
        Err(e) => {
            r.problem(used, Some(path), e.to_string());
            None
        }
    }
}

/// BACKUP_VERIFY_KEY, if set: `Some(None)` when unset, `None` on a problem (every bad entry is
/// named).
pub(super) fn verify_keys(r: &mut Reader<'_>) -> Option<Option<VerifyKeys>> {
    let Some((used, text)) = r.raw(Key::BackupVerifyKey) else {
        return Some(None);
    };
    match VerifyKeys::parse(text) {
        Ok(k) => Some(Some(k)),
        Err(bad) => {
            for why in bad {
                r.problem(
                    used,
                    None,
                    format!("{why}: expected Ed25519 public keys as `etcd-backup keygen` writes them to FILE.pub (ssh-ed25519 AAAA...), separated by newlines or commas"),
                );
            }
            None
        }
    }
}
