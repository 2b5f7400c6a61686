//! `restore`: fetch a backup, decode it, check it, and write a file for `etcdutl snapshot
//! restore`: get -> decode (codec from magic bytes) -> trailer check -> `PATH.part` -> fsync ->
//! bbolt walk -> rename to PATH -> fsync the directory.
//!
//! PATH appears only when every check passed; on any failure `PATH.part` is removed. The
//! download streams through a bounded channel into a blocking thread that decodes and writes,
//! so memory does not grow with the backup.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;

use crate::compress::{self, Codec};
use crate::crypt::Identities;
use crate::key::BackupKey;
use crate::shutdown::Shutdown;
use crate::snapshot::verify::{self, Verified};
use crate::store::{ByteStream, Store};
use std::sync::Arc;

/// Which backup to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Latest,
    Key(BackupKey),
}

impl std::str::FromStr for Which {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "latest" {
            return Ok(Which::Latest);
        }
        // Accept a bare name or one with a prefix (as `list` prints full keys).
        let name = s.rsplit('/').next().unwrap_or(s);
        name.parse()
            .map(Which::Key)
            .map_err(|e| format!("{e}, or latest"))
    }
}

/// A restored snapshot on disk.
#[derive(Debug, Clone)]
pub struct Restored {
    pub key: BackupKey,
    pub path: PathBuf,
    pub codec: Codec,
    pub verified: Verified,
}

/// Resolves `which` to a key in the store.
pub async fn resolve(store: &Store, which: Which) -> anyhow::Result<BackupKey> {
    match which {
        Which::Key(k) => Ok(k),
        Which::Latest => {
            let listing = store.list().await?;
            listing.backups.first().map(|b| b.key).ok_or_else(|| {
                anyhow!("there are no backups under {}: nothing to restore (check BACKUP_BUCKET and BACKUP_PREFIX)", store.url_prefix())
            })
        }
    }
}

/// A `Read` over chunks sent from the async side; an error chunk becomes a read error.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Runs `work` on a blocking thread over a download, decrypted first when it is an age file
/// (`what` names it in the error), while this task feeds it through a bounded channel: memory
/// does not grow with the object. A shutdown stops the feed; the thread's input then ends, and
/// whatever it wrote goes with the caller's guards.
async fn through_thread<T: Send + 'static>(
    (size, mut stream): (u64, ByteStream),
    what: &'static str,
    identities: Option<Arc<Identities>>,
    progress: Option<std::time::Duration>,
    shutdown: &Shutdown,
    work: impl FnOnce(Box<dyn Read + Send + '_>) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let worker = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let (_, opened) = crate::crypt::open(
            BufReader::with_capacity(1 << 20, reader),
            identities.as_deref(),
        )
        .with_context(|| format!("opening {what}"))?;
        work(opened)
    });
    let mut progress = crate::progress::Progress::new("download", Some(size), progress);
    loop {
        let chunk = tokio::select! {
            biased;
            i = shutdown.requested() => return Err(i.into()),
            c = stream.next() => c,
        };
        let Some(chunk) = chunk else { break };
        if let Ok(c) = &chunk {
            progress.advance(c.len());
        }
        let failed = chunk.is_err();
        if tx
            .send(chunk.map_err(|e| crate::describe(&e)))
            .await
            .is_err()
            || failed
        {
            break;
        }
    }
    drop(tx);
    worker
        .await
        .with_context(|| format!("the thread reading {what} panicked"))?
}

/// The `.part` file next to `path`, removed on drop unless kept.
struct Part {
    path: PathBuf,
    keep: bool,
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads and checks `key`, writing it to `output`. Refuses to replace an existing file
/// unless `force`. A shutdown stops the download; `output` is then untouched and the `.part`
/// file removed.
pub async fn restore(
    store: &Store,
    key: BackupKey,
    output: &Path,
    force: bool,
    shutdown: &Shutdown,
    progress_every: Option<std::time::Duration>,
    identities: Option<Arc<Identities>>,
) -> anyhow::Result<Restored> {
    if key.encrypted && identities.is_none() {
        bail!(
            "cannot restore {}: {}",
            store.url(&key),
            crate::crypt::OpenError::NoIdentity
        );
    }
    if output.exists() && !force {
        bail!(
            "{} exists; refusing to overwrite it (pass --force to replace it)",
            output.display()
        );
    }
    let mut part_name = output.as_os_str().to_owned();
    part_name.push(".part");
    let part = Part {
        path: PathBuf::from(part_name),
        keep: false,
    };
    // Read too: the walk reads the file back.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&part.path)
        .with_context(|| format!("creating {}", part.path.display()))?;

    let download = shutdown
        .or_interrupted(async { Ok(store.get(&key).await?) })
        .await?;
    let part_path = part.path.clone();
    let (codec, checked, file) = through_thread(
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
                verify::Copy::Read(e) => {
                    anyhow!("downloading, decrypting or decoding the backup ({codec}): {e}")
                }
                verify::Copy::Write(e) => anyhow!("writing {}: {e}", part_path.display()),
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
    let manifest = shutdown
        .or_interrupted(async { Ok(store.manifest(&key).await?) })
        .await?;
    let recorded = manifest
        .iter()
        .flatten()
        .find(|(k, _)| k == "etcd-hashkv")
        .map(|(_, v)| v.clone());
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
    std::fs::rename(&part.path, output)
        .with_context(|| format!("renaming {} to {}", part.path.display(), output.display()))?;
    let mut part = part;
    part.keep = true;
    // The rename is durable only once the directory is synced.
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(Restored {
        key,
        path: output.to_path_buf(),
        codec,
        verified,
    })
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

/// The `restore` command: the snapshot to `output`, then, with `--files`, the files archive.
/// Returns what to print.
pub async fn run(
    cfg: crate::config::RestoreConfig,
    which: Which,
    output: &Path,
    force: bool,
    flags: &RestoreFlags,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    let store = Store::s3(&cfg.store)?;
    let key = shutdown.or_interrupted(resolve(&store, which)).await?;
    tracing::info!(key = %store.url(&key), output = %output.display(), "restoring");
    let ids = cfg.identities;
    let r = restore(
        &store,
        key,
        output,
        force,
        shutdown,
        cfg.progress,
        ids.clone(),
    )
    .await?;
    let mut text = report(&r, flags);
    if let Some(dir) = &flags.files {
        let f = restore_files(&store, key, dir, force, ids, shutdown).await?;
        text.push_str(&format!(
            "\n{} files of the backup's files archive are in {}{}\n",
            f.written,
            f.dir.display(),
            if f.skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped: {}", f.skipped.join(", "))
            }
        ));
    }
    Ok(text)
}

/// What `--files` did.
#[derive(Debug, Clone, Default)]
pub struct FilesRestored {
    pub dir: PathBuf,
    pub written: usize,
    /// Entries not written (symlinks, special files, paths leaving DIR), with why.
    pub skipped: Vec<String>,
}

/// Downloads the files archive of `key`, decrypts it and extracts it into `dir`: regular files
/// and directories only, with their modes; symlinks and special files are skipped with a
/// warning; every path stays inside `dir` (no `..`, no absolute names, no existing symlink on
/// the way); an existing file is replaced only with `force`.
pub async fn restore_files(
    store: &Store,
    key: BackupKey,
    dir: &Path,
    force: bool,
    identities: Option<Arc<Identities>>,
    shutdown: &Shutdown,
) -> anyhow::Result<FilesRestored> {
    if !key.encrypted {
        bail!("{} is not encrypted, so it has no files archive: BACKUP_INCLUDE_PATHS archives files only with age recipients set", store.url(&key));
    }
    let ids = identities.ok_or_else(|| {
        anyhow!(
            "cannot restore {}: {}",
            store.files_url(&key),
            crate::crypt::OpenError::NoIdentity
        )
    })?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let download = shutdown
        .or_interrupted(async { Ok(store.get_files(&key).await?) })
        .await
        .with_context(|| format!("this backup's files archive ({}) cannot be read; backups taken without BACKUP_INCLUDE_PATHS have none", store.files_url(&key)))?;
    through_thread(
        download,
        "the files archive",
        Some(ids),
        None,
        shutdown,
        move |opened| extract(tar::Archive::new(opened), &root, force),
    )
    .await
}

fn extract<R: Read>(
    mut archive: tar::Archive<R>,
    root: &Path,
    force: bool,
) -> anyhow::Result<FilesRestored> {
    use std::os::unix::fs::PermissionsExt;
    let mut done = FilesRestored {
        dir: root.to_path_buf(),
        ..Default::default()
    };
    let mut dir_modes = Vec::new();
    for entry in archive.entries().context("reading the files archive")? {
        let mut entry = entry.context("reading the files archive")?;
        let name = entry
            .path()
            .context("reading an entry's name")?
            .into_owned();
        let shown = name.display().to_string();
        let inside = name
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            tracing::warn!("skipping {shown:?}: its path leaves the target directory");
            done.skipped
                .push(format!("{shown}: path leaves the directory"));
            continue;
        }
        let dest = root.join(&name);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        if !(kind.is_file() || kind.is_dir()) {
            tracing::warn!(
                "skipping {shown}: a {kind:?} entry (only files and directories are restored)"
            );
            done.skipped.push(format!("{shown}: {kind:?}"));
            continue;
        }
        let parent = if kind.is_dir() {
            dest.as_path()
        } else {
            dest.parent().unwrap_or(root)
        };
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        // An existing symlink on the way could lead outside: resolve and check.
        let real = parent.canonicalize()?;
        if !real.starts_with(root) {
            bail!(
                "{} resolves to {}, outside {}: refusing to write through it",
                parent.display(),
                real.display(),
                root.display()
            );
        }
        if kind.is_dir() {
            dir_modes.push((dest, mode));
            continue;
        }
        if std::fs::symlink_metadata(&dest).is_ok() {
            if !force {
                bail!("{} exists; refusing to overwrite it (pass --force to replace existing files; {} files were written before it)", dest.display(), done.written);
            }
            std::fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("writing {}", dest.display()))?;
        out.sync_all()?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        done.written += 1;
    }
    // Directory modes last, so a read-only directory does not stop its own files.
    for (d, mode) in dir_modes.into_iter().rev() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(done)
}

/// What `restore` prints: the verified figures and the next step.
pub fn report(r: &Restored, flags: &RestoreFlags) -> String {
    format!(
        "{}\n{} is verified. Next, on each member (see the README's runbook):\n\n{}\n",
        crate::output::verified_table(&r.verified, r.codec),
        r.path.display(),
        etcdutl_command(&r.path, flags)
    )
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
