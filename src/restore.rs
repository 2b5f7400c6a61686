//! The way back from a backup: fetch it, decode it, check it, and write a file for `etcdutl snapshot
//! restore`: get -> decode (codec from magic bytes) -> trailer check -> `PATH.part` -> fsync ->
//! bbolt walk -> rename to PATH -> fsync the directory.
//!
//! PATH appears only when every check passed; on any failure `PATH.part` is removed. With
//! `BACKUP_VERIFY_KEY`, the backup is chosen by [`choose`] (signed, for this very object) and
//! its size and decoded SHA-256 must be the signed ones. The download streams through a
//! bounded channel into a blocking thread that decodes and writes, so memory does not grow
//! with the backup.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use crate::compress::{self, Codec};
use crate::crypt::Identities;
use crate::key::BackupKey;
use crate::shutdown::Shutdown;
use crate::sign::{Refused, VerifyKeys};
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;
use crate::trust::{self, Trust};

/// Which backup to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Latest,
    Key(BackupKey),
}

/// Neither a backup's name nor `latest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}, or latest")]
pub struct NotABackup(crate::key::NotOurs);

impl std::str::FromStr for Which {
    type Err = NotABackup;
    fn from_str(s: &str) -> Result<Self, NotABackup> {
        if s == "latest" {
            return Ok(Which::Latest);
        }
        // Accept a bare name or one with a prefix (as `list` prints full keys).
        let name = s.rsplit('/').next().unwrap_or(s);
        name.parse().map(Which::Key).map_err(NotABackup)
    }
}

/// Where a backup is written, and whether an existing file there may be replaced.
#[derive(Debug, Clone)]
pub struct Destination {
    pub path: PathBuf,
    pub force: bool,
}

/// A restored snapshot on disk.
#[derive(Debug, Clone)]
pub struct Restored {
    pub key: BackupKey,
    pub path: PathBuf,
    pub codec: Codec,
    pub verified: Verified,
}

/// The backup `which` names, and what the restore may rely on for it. With verify keys,
/// `latest` is the newest backup that passes; the newer ones passed over come back with why.
pub async fn choose(
    store: &Store,
    which: Which,
    keys: Option<&VerifyKeys>,
    allow_unsigned: &[BackupKey],
) -> anyhow::Result<(BackupKey, Trust, Vec<(BackupKey, Refused)>)> {
    let Some(keys) = keys else {
        let key = match which {
            Which::Key(k) => k,
            Which::Latest => store
                .list()
                .await?
                .backups
                .first()
                .map(|b| b.key)
                .ok_or_else(|| none_there(store))?,
        };
        tracing::warn!("BACKUP_VERIFY_KEY is not set: where {} came from is not checked (anyone who can write to the bucket could have put it there)", store.url(&key));
        return Ok((key, Trust::Unchecked, Vec::new()));
    };
    match which {
        Which::Key(key) => match trust::accept(store, &key, keys, allow_unsigned).await? {
            Ok(t) => Ok((key, t, Vec::new())),
            // A mistyped name has no manifest either: say that, not that it is unsigned.
            Err(Refused::NoManifest) if !store.exists(&key).await? => bail!(
                "there is no backup {} (`list` shows the backups)",
                store.url(&key)
            ),
            Err(why) => Err(refused(store, &key, &why)),
        },
        Which::Latest => {
            let listing = store.list().await?;
            if listing.backups.is_empty() {
                return Err(none_there(store));
            }
            let (found, passed_over) =
                trust::newest_accepted(store, &listing, keys, allow_unsigned).await?;
            for (k, why) in &passed_over {
                tracing::warn!("passing over {}: {why}", store.url(k));
            }
            match found {
                Some((key, t)) => Ok((key, t, passed_over)),
                None => bail!(
                    "none of the {} backups under {} is signed by a key of BACKUP_VERIFY_KEY, so none is restored (each is named above with why); check that BACKUP_VERIFY_KEY holds the public key of the backup job's BACKUP_SIGNING_KEY_FILE, or name an unsigned backup from before signing with --allow-unsigned NAME",
                    listing.backups.len(),
                    store.url_prefix()
                ),
            }
        }
    }
}

fn none_there(store: &Store) -> anyhow::Error {
    anyhow!(
        "there are no backups under {}: nothing to restore (check BACKUP_BUCKET and BACKUP_PREFIX)",
        store.url_prefix()
    )
}

fn refused(store: &Store, key: &BackupKey, why: &Refused) -> anyhow::Error {
    let hint = if why.is_unsigned() {
        format!("; if it was taken before signing was set up, pass --allow-unsigned {key} to restore it anyway")
    } else {
        "; it may have been changed or planted by someone who can write to the bucket: restore another backup (`list` shows which are signed)".to_string()
    };
    anyhow!("refusing to restore {}: {why}{hint}", store.url(key))
}

/// Downloads and checks `key`, writing it to `output`. Refuses to replace an existing file
/// unless `force`. A shutdown stops the download; `output` is then untouched and the `.part`
/// file removed.
pub async fn restore(
    store: &Store,
    key: BackupKey,
    to: &Destination,
    shutdown: &Shutdown,
    progress_every: Option<std::time::Duration>,
    identities: Option<Arc<Identities>>,
    trust: &Trust,
) -> anyhow::Result<Restored> {
    if key.encrypted && identities.is_none() {
        bail!(
            "cannot restore {}: {}",
            store.url(&key),
            crate::crypt::OpenError::NoIdentity
        );
    }
    let output = to.path.as_path();
    let (part, file) = part_file(to)?;

    let download = shutdown
        .or_interrupted(async { Ok(store.get(&key).await?) })
        .await?;
    if let Some(v) = trust.vouched() {
        if download.0 != v.stored_size {
            bail!("refusing to restore {}: it is {} bytes, but its signed manifest says {} (the object was replaced after it was signed)", store.url(&key), download.0, v.stored_size);
        }
    }
    let part_path = part.to_path_buf();
    let (codec, checked, file) = crate::download::read_on_thread(
        download,
        "the backup",
        identities,
        progress_every,
        shutdown,
        move |opened| {
            let (codec, mut decoded) =
                compress::decoder(BufReader::with_capacity(1 << 20, opened))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let trailer = verify::copy_hashed(&mut decoded, &mut out).map_err(|e| match e {
                verify::CopyError::Read(e) => {
                    anyhow!("downloading, decrypting or decoding the backup ({codec}): {e}")
                }
                verify::CopyError::Write(e) => anyhow!("writing {}: {e}", part_path.display()),
            })?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
                .with_context(|| format!("syncing {}", part_path.display()))?;
            let checked = verify::check_spooled(&file, trailer);
            Ok((codec, checked, file))
        },
    )
    .await?;
    let verified = checked.with_context(|| {
        format!(
            "checking {} (nothing was written to {})",
            store.url(&key),
            output.display()
        )
    })?;
    drop(file);
    let recorded = match trust.vouched() {
        Some(v) => {
            if verified.sha256 != v.snapshot_sha256 {
                bail!(
                    "refusing to restore {}: its snapshot's SHA-256 is {}, but its signed manifest says {} (nothing was written to {})",
                    store.url(&key),
                    verify::hex(&verified.sha256),
                    verify::hex(&v.snapshot_sha256),
                    output.display()
                );
            }
            v.get("etcd-hashkv").map(str::to_string)
        }
        None => {
            let manifest = shutdown
                .or_interrupted(async { Ok(store.manifest(&key).await?) })
                .await?;
            manifest
                .iter()
                .flatten()
                .find(|(k, _)| k == "etcd-hashkv")
                .map(|(_, v)| v.clone())
        }
    };
    match hash_kv_mismatch(recorded.as_deref(), &verified) {
        Some(HashKvCheck::Differs(why)) => bail!(
            "checking {}: {why} (nothing was written to {})",
            store.url(&key),
            output.display()
        ),
        // The SHA-256 trailer already proved the file whole: a restore is not refused for a
        // check that could not run.
        Some(HashKvCheck::NotComputed(why)) => tracing::warn!("{why}"),
        None => {}
    }
    publish(part, output).await?;
    Ok(Restored {
        key,
        path: output.to_path_buf(),
        codec,
        verified,
    })
}

/// `OUTPUT.part` for `to`, created (truncated: a `.part` left by a killed run must not stop the
/// next one) and open for reading too (the walk reads it back), removed on drop: on every path
/// but [`publish`]. Refuses when OUTPUT exists, unless `to.force`.
pub fn part_file(to: &Destination) -> anyhow::Result<(tempfile::TempPath, File)> {
    let output = to.path.as_path();
    if output.exists() && !to.force {
        bail!(
            "{} exists; refusing to overwrite it (pass --force to replace it)",
            output.display()
        );
    }
    let mut part_name = output.as_os_str().to_owned();
    part_name.push(".part");
    let part = tempfile::TempPath::try_from_path(&part_name)
        .with_context(|| format!("resolving {}", Path::new(&part_name).display()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&part)
        .with_context(|| format!("creating {}", part.display()))?;
    Ok((part, file))
}

/// Renames a checked `.part` file to `output` and syncs the directory, so that the rename is
/// durable (on a blocking thread: a slow disk must not stall the runtime, which also drives
/// every connection).
pub async fn publish(part: tempfile::TempPath, output: &Path) -> anyhow::Result<()> {
    let shown = part.display().to_string();
    part.persist(output)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming {shown} to {}", output.display()))?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    tokio::task::spawn_blocking(move || {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    })
    .await
    .context("the thread syncing the directory panicked")?
}

/// What the HashKV check of a restored file found, when it found a problem.
#[derive(Debug, PartialEq, Eq)]
enum HashKvCheck {
    Differs(String),
    NotComputed(String),
}

/// Whether the restored file has the HashKV its manifest recorded at backup time. A manifest
/// without one (older backups, or a HashKV that was not computed) checks nothing.
fn hash_kv_mismatch(recorded: Option<&str>, verified: &Verified) -> Option<HashKvCheck> {
    let recorded = recorded?;
    let ours = verified.status.hash_kv.map(|h| h.hash.to_string());
    match ours {
        Some(h) if h == recorded => None,
        Some(h) => Some(HashKvCheck::Differs(format!(
            "the file's HashKV is {h} but its manifest recorded {recorded} when it was backed up"
        ))),
        None => Some(HashKvCheck::NotComputed(format!(
            "the manifest recorded HashKV {recorded}, but the restored file's could not be computed ({}); restored on the strength of its SHA-256 trailer",
            verified.status.hash_kv_skipped.as_deref().unwrap_or("?")
        ))),
    }
}

/// Values for the `etcdutl snapshot restore` command we print; placeholders where unknown.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RestoreFlags {
    /// For the printed etcdutl command: this member's name.
    #[arg(long)]
    pub name: Option<String>,
    /// For the printed etcdutl command: e.g. cp1=https://10.0.1.10:2380,cp2=...
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// For the printed etcdutl command: this member's peer URL.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// For the printed etcdutl command: the new data directory.
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Also extract the backup's files archive (BACKUP_INCLUDE_PATHS) into this directory.
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,
}

/// The next step, as the seed's runbook runs it.
pub fn etcdutl_command(path: &Path, f: &RestoreFlags) -> String {
    let name = f.name.clone().unwrap_or_else(|| "<member-name>".into());
    let peer = f
        .initial_advertise_peer_urls
        .clone()
        .unwrap_or_else(|| "https://<member-ip>:2380".into());
    let cluster = f
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{name}={peer}"));
    let data_dir = f
        .data_dir
        .clone()
        .unwrap_or_else(|| "/var/lib/etcd-restored".into());
    format!(
        "etcdutl snapshot restore {} \\\n  --name {name} \\\n  --initial-cluster {cluster} \\\n  --initial-cluster-token etcd-cluster-restored \\\n  --initial-advertise-peer-urls {peer} \\\n  --data-dir {data_dir}",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_file_must_have_the_recorded_hash_kv_when_both_are_known() {
        use crate::snapshot::hashkv::HashKv;
        use crate::snapshot::verify::Status;
        let file = |hash_kv: Option<u32>| Verified {
            sha256: [0; 32],
            status: Status {
                hash_kv: hash_kv.map(|hash| HashKv {
                    hash,
                    compact_revision: -1,
                    revision: 9,
                }),
                hash_kv_skipped: hash_kv.is_none().then(|| "too many keys".into()),
                ..Status::default()
            },
        };
        assert_eq!(hash_kv_mismatch(Some("7"), &file(Some(7))), None);
        assert_eq!(
            hash_kv_mismatch(None, &file(Some(7))),
            None,
            "an older backup"
        );
        assert!(matches!(
            hash_kv_mismatch(Some("8"), &file(Some(7))),
            Some(HashKvCheck::Differs(w)) if w.contains("HashKV is 7 but its manifest recorded 8")
        ));
        assert!(matches!(
            hash_kv_mismatch(Some("8"), &file(None)),
            Some(HashKvCheck::NotComputed(w)) if w.contains("too many keys")
        ));
    }

    #[test]
    fn which_parses_latest_names_and_full_keys() {
        assert_eq!("latest".parse::<Which>(), Ok(Which::Latest));
        let k: BackupKey = "20260529-060000.db.gz".parse().unwrap();
        assert_eq!("20260529-060000.db.gz".parse::<Which>(), Ok(Which::Key(k)));
        assert_eq!(
            "etcd/20260529-060000.db.gz".parse::<Which>(),
            Ok(Which::Key(k))
        );
        assert!("yesterday"
            .parse::<Which>()
            .unwrap_err()
            .to_string()
            .contains("or latest"));
    }

    #[test]
    fn command_uses_flags_or_placeholders() {
        let c = etcdutl_command(Path::new("/tmp/s.db"), &RestoreFlags::default());
        assert!(c.contains("--name <member-name>"));
        assert!(c.contains("--initial-cluster <member-name>=https://<member-ip>:2380"));
        let f = RestoreFlags {
            name: Some("cp1".into()),
            initial_advertise_peer_urls: Some("https://10.0.1.10:2380".into()),
            ..Default::default()
        };
        let c = etcdutl_command(Path::new("/tmp/s.db"), &f);
        assert!(
            c.contains("--initial-cluster cp1=https://10.0.1.10:2380"),
            "{c}"
        );
        assert!(c.contains("--data-dir /var/lib/etcd-restored"));
    }
}
