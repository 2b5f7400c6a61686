//! The files archive: what `BACKUP_INCLUDE_PATHS` names (the PKI a restore needs beside the
//! snapshot), stored next to a backup as one tar file encrypted with age, and extracted again
//! by `restore --files`.
//!
//! Both ways stream: the archive is cut into upload parts as tar writes it, and extraction
//! reads the download as it arrives. These files hold private keys, so an archive exists only
//! encrypted, and extraction never writes outside the target directory.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tokio::sync::mpsc;

use crate::config::PipelineConfig;
use crate::crypt::{Identities, Sealer};
use crate::key::BackupKey;
use crate::shutdown::Shutdown;
use crate::store::{Parts, Store, Stored};

/// Archives `paths` with tar (symlinks as symlinks, modes kept), encrypts the archive to the
/// recipients, and uploads it as the files archive of `key`, whole or not at all. Returns the
/// stored size, and its SHA-256 when signing. Memory: the parts in flight, as for a snapshot.
pub async fn publish(
    paths: &[std::path::PathBuf],
    store: &Store,
    key: &BackupKey,
    cfg: &PipelineConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<Stored> {
    if cfg.recipients.is_empty() {
        // The configuration refuses this too; private keys never go up in plaintext.
        bail!("refusing to archive BACKUP_INCLUDE_PATHS without age recipients");
    }
    let (parts_tx, parts_rx) = mpsc::channel(1);
    let (paths, recipients, size) = (paths.to_vec(), cfg.recipients.clone(), cfg.part_size);
    let hashing = cfg.signing.is_some();
    let worker = tokio::task::spawn_blocking(move || {
        let failed = parts_tx.clone();
        let work = || -> anyhow::Result<Stored> {
            let mut parts = Parts::new(parts_tx, size);
            if hashing {
                parts = parts.hashing();
            }
            let sealed = Sealer::new(parts, &recipients)?;
            let mut tar = tar::Builder::new(sealed);
            tar.follow_symlinks(false);
            for p in &paths {
                let name = p.strip_prefix("/").unwrap_or(p);
                let added = if p.is_dir() {
                    tar.append_dir_all(name, p)
                } else {
                    tar.append_path_with_name(p, name)
                };
                added
                    .with_context(|| format!("archiving {} (BACKUP_INCLUDE_PATHS)", p.display()))?;
            }
            Ok(tar.into_inner()?.finish()?.finish()?)
        };
        let r = work();
        if let Err(e) = &r {
            // Down the parts too, so the upload is aborted rather than completed short.
            let _ = failed.blocking_send(Err(anyhow!("{e:#}")));
        }
        r
    });
    let parts = crate::pipeline::received(parts_rx);
    let gate = async { worker.await.context("the archiving thread panicked")? };
    let (_, stored) = store
        .put_files_stream(key, parts, cfg.concurrency, gate, shutdown)
        .await
        .with_context(|| format!("uploading {}", store.files_url(key)))?;
    Ok(stored)
}

/// What `--files` did.
#[derive(Debug, Clone, Default)]
pub struct FilesRestored {
    pub dir: PathBuf,
    pub written: usize,
    /// Entries not written (symlinks, special files, paths leaving DIR), with why.
    pub skipped: Vec<String>,
}

/// Where `restore --files` extracts, and what the archive must hash to.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub dir: &'a Path,
    /// Replace existing files.
    pub force: bool,
    /// The SHA-256 of the stored archive, from its signed manifest. With it, the archive is
    /// downloaded to an unnamed scratch file in `dir` and checked before a byte is extracted.
    pub expect_sha256: Option<[u8; 32]>,
    /// Its stored size, from the signed manifest: a larger object is refused before download.
    pub expect_size: Option<u64>,
}

/// Downloads the files archive of `key`, decrypts it and extracts it into `to.dir`: regular
/// files and directories only, with their modes; symlinks and special files are skipped with a
/// warning; every path stays inside the directory (no `..`, no absolute names, no existing
/// symlink on the way); an existing file is replaced only with `force`.
pub async fn restore(
    store: &Store,
    key: BackupKey,
    to: &Target<'_>,
    identities: Option<Arc<Identities>>,
    shutdown: &Shutdown,
) -> anyhow::Result<FilesRestored> {
    let (dir, force) = (to.dir, to.force);
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
    let Some(expect) = to.expect_sha256 else {
        return crate::download::read_on_thread(
            download,
            "the files archive",
            Some(ids),
            None,
            shutdown,
            move |opened| extract(tar::Archive::new(opened), &root, force),
        )
        .await;
    };
    let url = store.files_url(&key);
    if let Some(want) = to.expect_size.filter(|w| *w != download.0) {
        bail!("refusing to extract {url}: it is {} bytes, but the backup's signed manifest says {want} (the archive was replaced after it was signed)", download.0);
    }
    let checked = shutdown
        .or_interrupted(download_checked(download, &root, expect, &url))
        .await?;
    tokio::task::spawn_blocking(move || {
        let (_, opened) = crate::crypt::open(std::io::BufReader::new(checked), Some(&ids))
            .context("opening the files archive")?;
        extract(tar::Archive::new(opened), &root, force)
    })
    .await
    .context("the thread extracting the files archive panicked")?
}

/// The whole download in an unnamed file in `dir`, once its SHA-256 is `expect`; never more
/// bytes than its length said.
async fn download_checked(
    (size, mut stream): (u64, crate::store::ByteStream),
    dir: &Path,
    expect: [u8; 32],
    url: &str,
) -> anyhow::Result<std::fs::File> {
    use futures::TryStreamExt;
    use sha2::Digest;
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .with_context(|| format!("downloading {url}"))?
    {
        got += chunk.len() as u64;
        if got > size {
            bail!("{url} sent more bytes than its length ({size})");
        }
        hash.update(&chunk);
        // Small writes to a local file: the archive holds a few certificates and keys.
        file.write_all(&chunk)
            .with_context(|| format!("writing a scratch file in {}", dir.display()))?;
    }
    let sha: [u8; 32] = hash.finalize().into();
    if sha != expect {
        bail!(
            "refusing to extract {url}: its SHA-256 is {}, but the backup's signed manifest says {} (the archive was replaced after it was signed)",
            crate::snapshot::verify::hex(&sha),
            crate::snapshot::verify::hex(&expect)
        );
    }
    file.rewind()?;
    Ok(file)
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
