//! The `backup` command, the only module that knows the order of the stages:
//!
//! 1. pick a member and read its status (etcd);
//! 2. check the scratch space against the database size etcd reports;
//! 3. stream the snapshot: each chunk is hashed for the trailer check, spooled raw to a scratch
//!    file and fed to the encoder that writes the stored form to a second scratch file. The
//!    network read runs on the async runtime and the CPU work on a blocking thread, joined by
//!    a bounded channel, so they overlap and memory stays bounded;
//! 4. verify: the trailer, then the bbolt walk of the raw file;
//! 5. upload the stored form with the verified figures as metadata; the object appears only now;
//! 6. prune, only after a successful upload, never the object just written.
//!
//! The upload waits for verification because S3 metadata is fixed when an upload starts, and
//! the figures we record (SHA-256, revision, hash) are known only at the end.
//!
//! Errors from every stage come back to the caller; a failing stage never looks like an end of
//! stream to the next, and scratch files are removed on every path (they are `NamedTempFile`s).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tempfile::NamedTempFile;

use crate::compress::{Codec, Encoder};
use crate::config::{BackupConfig, PipelineConfig};
use crate::etcd::{self, MemberStatus};
use crate::key::BackupKey;
use crate::retention::{self, Policy};
use crate::shutdown::Shutdown;
use crate::store::{Listing, Metadata, Store};
use crate::verify::{self, hex, TrailerCheck, Verified};

/// Chunks in flight between the network reader and the spooling thread.
const CHANNEL_CHUNKS: usize = 16;
const SPOOL_BUFFER: usize = 1 << 20;

/// The snapshot on local disk, checked by its trailer as it streamed in.
pub struct Spooled {
    pub raw: NamedTempFile,
    /// The encoded form; `None` with `Codec::None`, where the raw file is what we store.
    pub stored: Option<NamedTempFile>,
    /// The trailer check over the raw bytes; its `len` is the raw size.
    pub trailer: TrailerCheck,
    pub stored_len: u64,
}

fn scratch(dir: &Path, suffix: &str) -> anyhow::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".etcd-backup-")
        .suffix(suffix)
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "creating a scratch file in {} (BACKUP_TMP_DIR)",
                dir.display()
            )
        })
}

/// Streams `source` to scratch files: raw (for the walk) and encoded (for the upload).
pub async fn spool<S, E>(
    source: S,
    cfg: &PipelineConfig,
    limits: &Limits,
) -> anyhow::Result<Spooled>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<anyhow::Error>,
{
    let raw = scratch(&cfg.tmp_dir, ".db")?;
    let stored = match cfg.codec {
        Codec::None => None,
        c => Some(scratch(&cfg.tmp_dir, c.extension())?),
    };
    let raw_out = raw.reopen()?;
    let stored_out = stored.as_ref().map(|f| f.reopen()).transpose()?;
    let (codec, level, threads, dir) = (cfg.codec, cfg.level, cfg.threads, cfg.tmp_dir.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CHUNKS);

    let worker = tokio::task::spawn_blocking(move || -> anyhow::Result<(TrailerCheck, u64)> {
        let disk = |e: std::io::Error| disk_error(e, &dir);
        let mut trailer = TrailerCheck::default();
        let mut raw = BufWriter::with_capacity(SPOOL_BUFFER, raw_out);
        let mut enc = match stored_out {
            Some(f) => Some(Encoder::new(
                codec,
                level,
                threads,
                CountingWriter::new(BufWriter::with_capacity(SPOOL_BUFFER, f)),
            )?),
            None => None,
        };
        while let Some(chunk) = rx.blocking_recv() {
            trailer.update(&chunk);
            raw.write_all(&chunk).map_err(disk)?;
            if let Some(enc) = enc.as_mut() {
                enc.write_all(&chunk).map_err(disk)?;
            }
        }
        raw.into_inner()
            .map_err(|e| disk(e.into_error()))?
            .sync_data()
            .map_err(disk)?;
        let stored_len = match enc {
            Some(enc) => {
                let out = enc.finish().map_err(disk)?;
                let n = out.count;
                out.inner
                    .into_inner()
                    .map_err(|e| disk(e.into_error()))?
                    .sync_data()
                    .map_err(disk)?;
                n
            }
            None => trailer.len(),
        };
        Ok((trailer, stored_len))
    });

    let feed = async {
        futures::pin_mut!(source);
        loop {
            let next = tokio::select! {
                biased;
                i = limits.shutdown.requested() => return Err(i.into()),
                next = tokio::time::timeout(limits.stall, source.next()) => next,
            };
            let Some(chunk) = next.map_err(|_| {
                anyhow!(
                    "the snapshot stream sent nothing for {} (ETCD_SNAPSHOT_STALL_TIMEOUT); check etcd's load and the network",
                    humantime::format_duration(limits.stall)
                )
            })?
            else {
                break;
            };
            let chunk = chunk.map_err(Into::into)?;
            if tx.send(chunk).await.is_err() {
                // The worker stopped early; its error is the one to report.
                return Ok(());
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let fed = match tokio::time::timeout(limits.total, feed).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "the snapshot did not finish within ETCD_SNAPSHOT_TIMEOUT={}; raise it for a large database",
            humantime::format_duration(limits.total)
        )),
    };
    drop(tx);
    let worked = worker.await.context("the spooling thread panicked")?;
    // A source error comes first (the worker then saw a short stream), then the worker's own.
    fed?;
    let (trailer, stored_len) = worked?;
    Ok(Spooled {
        raw,
        stored,
        trailer,
        stored_len,
    })
}

/// How long a snapshot stream may take in all and stay silent, and what stops it early.
#[derive(Clone)]
pub struct Limits {
    pub total: Duration,
    pub stall: Duration,
    pub shutdown: Shutdown,
}

/// A disk error while spooling, named with the setting to change.
fn disk_error(e: std::io::Error, dir: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        anyhow!("the scratch directory {} (BACKUP_TMP_DIR) is full: {e}; give it at least twice the etcd database size", dir.display())
    } else {
        anyhow!(
            "writing scratch files in {} (BACKUP_TMP_DIR): {e}",
            dir.display()
        )
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Free bytes for an unprivileged writer in `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Scratch space a backup needs: the raw snapshot, and as much again for its encoded form
/// (compression never grows data by more than a few bytes per block).
pub fn space_needed(db_size: u64, codec: Codec) -> u64 {
    let raw = db_size + verify::TRAILER_LEN as u64;
    match codec {
        Codec::None => raw,
        _ => raw * 2,
    }
}

/// A published backup.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: BackupKey,
    pub url: String,
    pub verified: Verified,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub snapshot_time: Duration,
    pub verify_time: Duration,
    pub upload_time: Duration,
}

/// Spools, verifies and uploads one snapshot stream. The object exists afterwards only if this
/// returns `Ok`. `extra` is metadata known before the stream (member, versions).
pub async fn publish<S, E>(
    source: S,
    store: &Store,
    key: BackupKey,
    cfg: &PipelineConfig,
    limits: &Limits,
    extra: Metadata,
) -> anyhow::Result<Published>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<anyhow::Error>,
{
    let t = Instant::now();
    let spooled = spool(source, cfg, limits)
        .await
        .context("streaming the snapshot")?;
    let snapshot_time = t.elapsed();

    let t = Instant::now();
    let Spooled {
        raw,
        stored,
        trailer,
        stored_len,
    } = spooled;
    let raw_len = trailer.len();
    let (raw, verified) = tokio::task::spawn_blocking(move || {
        let r = verify::check_spooled(raw.as_file(), trailer);
        (raw, r)
    })
    .await?;
    let verified = verified.context("verifying the snapshot (nothing was uploaded)")?;
    let verify_time = t.elapsed();
    tracing::info!(
        sha256 = %hex(&verified.sha256), revision = verified.status.revision, hash = verified.status.hash,
        total_keys = verified.status.total_key, total_size = verified.status.total_size,
        "snapshot verified: SHA-256 trailer matches and the bbolt walk found no damage"
    );

    let t = Instant::now();
    let upload = stored.as_ref().unwrap_or(&raw);
    let s = &verified.status;
    let mut metadata: Metadata = vec![
        ("etcd-backup-version", env!("CARGO_PKG_VERSION").to_string()),
        ("snapshot-sha256", hex(&verified.sha256)),
        ("snapshot-size", raw_len.to_string()),
        ("etcd-revision", s.revision.to_string()),
        ("etcd-hash", s.hash.to_string()),
        ("etcd-total-keys", s.total_key.to_string()),
        ("etcd-db-size", s.total_size.to_string()),
        ("compression", cfg.codec.to_string()),
    ];
    metadata.extend(extra);
    let file = tokio::fs::File::from_std(upload.reopen()?);
    store
        .put_file(
            &key,
            file,
            metadata,
            cfg.part_size,
            cfg.concurrency,
            &limits.shutdown,
        )
        .await
        .with_context(|| format!("uploading {}", store.url(&key)))?;
    let upload_time = t.elapsed();
    drop((raw, stored));
    Ok(Published {
        key,
        url: store.url(&key),
        verified,
        raw_bytes: raw_len,
        stored_bytes: stored_len,
        snapshot_time,
        verify_time,
        upload_time,
    })
}

/// What prune did.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub deleted: Vec<BackupKey>,
    pub plan: retention::Plan,
}

/// Our backups and what retention would do with each: the listing (names not ours are
/// skipped, with a log line) and the plan. `protect` is never planned for deletion.
pub async fn survey(
    store: &Store,
    policy: &Policy,
    now: DateTime<Utc>,
    protect: Option<&BackupKey>,
) -> anyhow::Result<(Listing, retention::Plan)> {
    let listing = store.list().await?;
    if !listing.skipped.is_empty() {
        tracing::info!(
            skipped = listing.skipped.len(),
            "objects under the prefix whose names are not ours were left alone"
        );
    }
    let keys: Vec<_> = listing.backups.iter().map(|b| b.key).collect();
    let plan = retention::plan(&keys, policy, now, protect);
    Ok((listing, plan))
}

/// Lists, plans and (unless `dry_run`) deletes. Deletion stops at the first failure.
pub async fn prune(
    store: &Store,
    policy: &Policy,
    now: DateTime<Utc>,
    protect: Option<&BackupKey>,
    dry_run: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<Pruned> {
    let (_, plan) = survey(store, policy, now, protect).await?;
    let mut deleted = Vec::new();
    if !dry_run {
        for key in plan.to_delete() {
            // Stop between deletions: each one is whole, and the rest wait for the next run.
            if let Some(why) = shutdown.fired() {
                return Err(crate::shutdown::Interrupted(why).into());
            }
            store.delete(key).await?;
            tracing::info!(key = %store.url(key), "deleted");
            deleted.push(*key);
        }
    }
    Ok(Pruned { deleted, plan })
}

/// The summary of a whole `backup` run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub published: Published,
    pub member: MemberStatus,
    pub pruned: usize,
    pub prune_time: Duration,
    pub prune_error: Option<String>,
}

/// The `backup` command. `now` names the object and anchors retention.
pub async fn run(
    cfg: &BackupConfig,
    now: DateTime<Utc>,
    shutdown: Shutdown,
) -> anyhow::Result<Summary> {
    let store = Store::s3(&cfg.store)?;
    let prepare = async {
        store.check().await?;
        anyhow::Ok(etcd::start_snapshot(&cfg.etcd).await?)
    };
    let (member, snapshot) = tokio::select! {
        m = prepare => m?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let status = member.status.clone();
    tracing::info!("using {status}");
    if let Some(w) = etcd::quota_warning(&status, cfg.etcd.quota) {
        tracing::warn!("{w}");
    }

    let need = space_needed(status.db_size, cfg.pipeline.codec);
    let dir: &PathBuf = &cfg.pipeline.tmp_dir;
    let free = free_space(dir)
        .with_context(|| format!("reading free space of {} (BACKUP_TMP_DIR)", dir.display()))?;
    if free < need {
        bail!(
            "not enough scratch space in {} (BACKUP_TMP_DIR): {free} bytes free, {need} needed for a {}-byte database with BACKUP_COMPRESSION={}; give it more space or point BACKUP_TMP_DIR elsewhere",
            dir.display(), status.db_size, cfg.pipeline.codec
        );
    }

    let key = BackupKey::new(now, cfg.pipeline.codec);
    let source = futures::stream::unfold(Some(snapshot), |s| async move {
        let mut s = s?;
        match s.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), Some(s))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    let extra = vec![
        ("etcd-version", status.version.clone()),
        ("etcd-cluster-id", status.cluster_id.clone()),
        ("etcd-member-id", status.member_id.clone()),
    ];
    let limits = Limits {
        total: cfg.etcd.snapshot_timeout,
        stall: cfg.etcd.stall_timeout,
        shutdown: shutdown.clone(),
    };
    let published = publish(source, &store, key, &cfg.pipeline, &limits, extra).await?;

    // The backup is published: a prune failure is reported but does not undo or fail it.
    let t = Instant::now();
    let pruning = prune(&store, &cfg.policy, now, Some(&key), false, &shutdown);
    let (pruned, prune_error) = match pruning.await {
        Ok(p) => (p.deleted.len(), None),
        Err(e) => {
            tracing::warn!("the backup was published, but pruning failed: {e:#}");
            (0, Some(format!("{e:#}")))
        }
    };
    Ok(Summary {
        published,
        member: status,
        pruned,
        prune_time: t.elapsed(),
        prune_error,
    })
}
