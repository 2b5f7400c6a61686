//! `restore`: fetch a backup, decode it, check it, and write a file for `etcdutl snapshot
//! restore`: get -> decode (codec from magic bytes) -> trailer check -> `PATH.part` -> fsync ->
//! bbolt walk -> rename to PATH -> fsync the directory.
//!
//! PATH appears only when every check passed; on any failure `PATH.part` is removed. The
//! download streams through a bounded channel into a blocking thread that decodes and writes,
//! so memory does not grow with the backup.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;

use crate::compress::{self, Codec};
use crate::config::Identities;
use crate::key::BackupKey;
use crate::shutdown::Shutdown;
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;
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

    let (size, mut stream) = shutdown
        .or_interrupted(async { Ok(store.get(&key).await?) })
        .await?;
    let mut progress = crate::progress::Progress::new("download", Some(size), progress_every);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let part_path = part.path.clone();
    let worker = tokio::task::spawn_blocking(
        move || -> anyhow::Result<(Codec, Result<Verified, verify::Invalid>, File)> {
            let reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            let (_, opened) = crate::crypt::open(
                BufReader::with_capacity(1 << 20, reader),
                identities.as_deref(),
            )
            .context("opening the backup")?;
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
    );
    loop {
        let chunk = tokio::select! {
            biased;
            // Dropping the worker's channel ends its input; its file is the `.part`, removed
            // when `part` drops on the way out.
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
    let (codec, checked, file) = worker.await.context("the restore thread panicked")??;
    let verified = checked.with_context(|| {
        format!(
            "checking {} (nothing was written to {})",
            store.url(&key),
            output.display()
        )
    })?;
    drop(file);
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
