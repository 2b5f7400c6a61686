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
use crate::store::{Parts, Store};

/// Archives `paths` with tar (symlinks as symlinks, modes kept), encrypts the archive to the
/// recipients, and uploads it as the files archive of `key`, whole or not at all. Returns the
/// stored size. Memory: the parts in flight, as for a snapshot.
pub async fn publish(
    paths: &[std::path::PathBuf],
    store: &Store,
    key: &BackupKey,
    cfg: &PipelineConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<u64> {
    if cfg.recipients.is_empty() {
        // The configuration refuses this too; private keys never go up in plaintext.
        bail!("refusing to archive BACKUP_INCLUDE_PATHS without age recipients");
    }
    let (parts_tx, parts_rx) = mpsc::channel(1);
    let (paths, recipients, size) = (paths.to_vec(), cfg.recipients.clone(), cfg.part_size);
    let worker = tokio::task::spawn_blocking(move || {
        let failed = parts_tx.clone();
        let work = || -> anyhow::Result<u64> {
            let sealed = Sealer::new(Parts::new(parts_tx, size), &recipients)?;
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

/// Downloads the files archive of `key`, decrypts it and extracts it into `dir`: regular files
/// and directories only, with their modes; symlinks and special files are skipped with a
/// warning; every path stays inside `dir` (no `..`, no absolute names, no existing symlink on
/// the way); an existing file is replaced only with `force`.
pub async fn restore(
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
    crate::download::read_on_thread(
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
