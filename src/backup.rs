//! The `backup` command, the only module that knows the order of the stages:
//!
//! 1. pick a member and read its status (etcd);
//! 2. check the scratch space against the database size etcd reports;
//! 3. stream the snapshot, every stage at once: each chunk is hashed for the trailer check,
//!    spooled raw to a scratch file (for the walk) and fed to the encoder, whose output is cut
//!    into parts that are uploaded as they fill. The network read and the upload run on the
//!    async runtime, the hashing, spooling and compressing on a blocking thread (and the
//!    encoder's workers), joined by bounded channels, so memory does not grow with the database;
//! 4. verify, the serial tail: the trailer, then the bbolt walk of the raw file, while the last
//!    parts finish. Only then is the multipart upload completed: the object appears now;
//! 5. write the manifest (`<key>.json`) with the verified figures;
//! 6. prune, only after a successful upload, never the object just written.
//!
//! S3 metadata is fixed when a multipart upload starts, before the figures we record (SHA-256,
//! revision, hash) are known, so the object carries what is known at the start (versions,
//! member, codec) and the manifest carries everything.
//!
//! Errors travel downstream with the data: the network reader sends its error to the spooling
//! thread, which sends its own or that one to the uploader, which aborts the upload. A failing
//! stage never looks like an end of stream to the next, and scratch files are removed on every
//! path (they are `NamedTempFile`s).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

use crate::compress::Encoder;
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

/// What the network reader sends the spooling thread. A stream is whole only if it ends with
/// `End`: a closed channel without it means the reader was stopped.
enum Feed {
    Chunk(Bytes),
    End,
    Failed(anyhow::Error),
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

/// Sends `source` to the spooling thread, with the stall and total timeouts and the shutdown;
/// its own failure goes down the channel too.
async fn feed<S, E>(source: S, tx: mpsc::Sender<Feed>, limits: &Limits)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<anyhow::Error>,
{
    let read = async {
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
                return Ok(());
            };
            let chunk = chunk.map_err(Into::into)?;
            if tx.send(Feed::Chunk(chunk)).await.is_err() {
                // The thread stopped early; its error is already on its way downstream.
                return Ok(());
            }
        }
    };
    let end = match tokio::time::timeout(limits.total, read).await {
        Ok(Ok(())) => Feed::End,
        Ok(Err(e)) => Feed::Failed(e),
        Err(_) => Feed::Failed(anyhow!(
            "the snapshot did not finish within ETCD_SNAPSHOT_TIMEOUT={}; raise it for a large database or a slow object store",
            humantime::format_duration(limits.total)
        )),
    };
    let _ = tx.send(end).await;
}

/// The spooling thread: hashes, spools and encodes what `rx` brings, and sends the encoded
/// form as parts of `part_size` bytes. Its error (or the reader's) is sent down `parts` and
/// `None` returned; a send that fails means the uploader already stopped with its own error.
fn spool(
    mut rx: mpsc::Receiver<Feed>,
    parts: mpsc::Sender<anyhow::Result<Bytes>>,
    raw_file: std::fs::File,
    cfg: &PipelineConfig,
) -> Option<(TrailerCheck, u64)> {
    let dir = cfg.tmp_dir.clone();
    let work = || -> anyhow::Result<(TrailerCheck, u64)> {
        let disk = |e: std::io::Error| disk_error(e, &dir);
        let mut trailer = TrailerCheck::default();
        let mut raw = BufWriter::with_capacity(SPOOL_BUFFER, raw_file);
        let out = Parts::new(parts.clone(), cfg.part_size);
        let mut enc = Encoder::new(cfg.codec, cfg.level, cfg.threads, out)?;
        loop {
            match rx.blocking_recv() {
                Some(Feed::Chunk(chunk)) => {
                    trailer.update(&chunk);
                    raw.write_all(&chunk).map_err(disk)?;
                    enc.write_all(&chunk).map_err(encode_error)?;
                }
                Some(Feed::End) => break,
                Some(Feed::Failed(e)) => return Err(e),
                None => bail!("the snapshot reader stopped without finishing the stream"),
            }
        }
        raw.into_inner()
            .map_err(|e| disk(e.into_error()))?
            .sync_data()
            .map_err(disk)?;
        let stored_len = enc.finish().and_then(Parts::finish).map_err(encode_error)?;
        Ok((trailer, stored_len))
    };
    match work() {
        Ok(done) => Some(done),
        Err(e) => {
            let _ = parts.blocking_send(Err(e));
            None
        }
    }
}

/// An encoder error, or the sign that the uploader is gone (whose own error is then the one
/// reported: ours goes down a closed channel).
fn encode_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("compressing the snapshot")
}

/// The encoder's output, cut into upload parts of `size` bytes (the last may be shorter).
///
/// Part buffers are recycled: a part's `Bytes` hands its buffer back when the upload drops it.
/// Without this, each part is a fresh allocation of several MiB freed on another thread, and
/// the allocator keeps the freed ones around: measured 10-20 MiB more peak RSS.
struct Parts {
    tx: mpsc::Sender<anyhow::Result<Bytes>>,
    size: usize,
    part: Vec<u8>,
    count: u64,
    spare_tx: std::sync::mpsc::Sender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// A part's buffer, which goes back to `Parts` when the last `Bytes` of it is dropped.
struct Recycled {
    buf: Vec<u8>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // After the spooling thread ended nobody takes it back, and the buffer is freed.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

impl Parts {
    fn new(tx: mpsc::Sender<anyhow::Result<Bytes>>, size: usize) -> Self {
        let (spare_tx, spare) = std::sync::mpsc::channel();
        Parts {
            tx,
            size,
            part: Vec::new(),
            count: 0,
            spare_tx,
            spare,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = Recycled {
            buf: std::mem::take(&mut self.part),
            back: self.spare_tx.clone(),
        };
        self.tx
            .blocking_send(Ok(Bytes::from_owner(part)))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the last part; returns the bytes written in all.
    fn finish(mut self) -> std::io::Result<u64> {
        if !self.part.is_empty() {
            self.send()?;
        }
        Ok(self.count)
    }
}

impl Write for Parts {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.part.capacity() == 0 {
            self.part = match self.spare.try_recv() {
                Ok(mut buf) => {
                    buf.clear();
                    buf
                }
                Err(_) => Vec::with_capacity(self.size),
            };
        }
        let n = buf.len().min(self.size - self.part.len());
        self.part.extend_from_slice(&buf[..n]);
        self.count += n as u64;
        if self.part.len() == self.size {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        anyhow!("the scratch directory {} (BACKUP_TMP_DIR) is full: {e}; give it at least the etcd database size", dir.display())
    } else {
        anyhow!(
            "writing scratch files in {} (BACKUP_TMP_DIR): {e}",
            dir.display()
        )
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

/// Scratch space a backup needs: the raw snapshot, kept for the walk. The encoded form goes
/// straight to the upload.
pub fn space_needed(db_size: u64) -> u64 {
    db_size + verify::TRAILER_LEN as u64
}

/// A published backup.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: BackupKey,
    pub url: String,
    pub verified: Verified,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Streaming, compressing and uploading, overlapped, until the last part was handed over.
    pub stream_time: Duration,
    /// The walk of the spooled file.
    pub verify_time: Duration,
    /// The last parts, completing the upload and the manifest.
    pub finish_time: Duration,
    /// Why the manifest could not be written, if it was not.
    pub manifest_error: Option<String>,
}

/// Streams, verifies and uploads one snapshot stream, all at once. The object exists
/// afterwards only if this returns `Ok`. `extra` is metadata known before the stream (member,
/// versions); the object carries it, the manifest carries it and the verified figures.
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
    let started = Instant::now();
    let raw = scratch(&cfg.tmp_dir, ".db")?;
    let raw_out = raw.reopen()?;
    let (chunks_tx, chunks_rx) = mpsc::channel(CHANNEL_CHUNKS);
    // One part waits here while `concurrency` are in flight and the next one fills.
    let (parts_tx, parts_rx) = mpsc::channel(1);
    let worker_cfg = cfg.clone();
    let mut worker = Some(tokio::task::spawn_blocking(move || {
        spool(chunks_rx, parts_tx, raw_out, &worker_cfg)
    }));

    let mut metadata: Metadata = vec![
        ("etcd-backup-version", env!("CARGO_PKG_VERSION").to_string()),
        ("compression", cfg.codec.to_string()),
    ];
    metadata.extend(extra);
    // The walk, once the thread has handed over the last part, while the last parts upload.
    let gate = async {
        let (trailer, stored_len) = worker
            .take()
            .expect("the gate runs once")
            .await
            .context("the spooling thread panicked")?
            .ok_or_else(|| anyhow!("the spooling thread stopped"))?;
        let stream_time = started.elapsed();
        let raw_len = trailer.len();
        let file = raw.reopen()?;
        let verified = tokio::task::spawn_blocking(move || verify::check_spooled(&file, trailer))
            .await?
            .context("verifying the snapshot (the upload was aborted, nothing was published)")?;
        let verify_time = started.elapsed() - stream_time;
        let s = &verified.status;
        tracing::info!(
            sha256 = %hex(&verified.sha256), revision = s.revision, hash = s.hash,
            total_keys = s.total_key, total_size = s.total_size,
            "snapshot verified: SHA-256 trailer matches and the bbolt walk found no damage"
        );
        anyhow::Ok((verified, raw_len, stored_len, stream_time, verify_time))
    };
    let parts = futures::stream::unfold(parts_rx, |mut rx| async move {
        rx.recv().await.map(|part| (part, rx))
    });
    let upload = store.put_stream(
        &key,
        metadata.clone(),
        parts,
        cfg.concurrency,
        gate,
        &limits.shutdown,
    );
    let ((), uploaded) = tokio::join!(feed(source, chunks_tx, limits), upload);
    // After a failed upload the thread stops at its next send; wait, so nothing outlives us.
    if let Some(w) = worker {
        let _ = w.await;
    }
    drop(raw);
    let (_, (verified, raw_len, stored_len, stream_time, verify_time)) =
        uploaded.with_context(|| format!("uploading {}", store.url(&key)))?;

    let s = &verified.status;
    let mut figures = metadata;
    figures.extend([
        ("snapshot-sha256", hex(&verified.sha256)),
        ("snapshot-size", raw_len.to_string()),
        ("stored-size", stored_len.to_string()),
        ("etcd-revision", s.revision.to_string()),
        ("etcd-hash", s.hash.to_string()),
        ("etcd-total-keys", s.total_key.to_string()),
        ("etcd-db-size", s.total_size.to_string()),
    ]);
    // The backup is published and whole; its manifest only saves `list` a download.
    let manifest_error = match store.put_manifest(&key, &figures).await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!("the backup was published, but its manifest was not: {e}; `list` shows it without revision and sizes");
            Some(e.to_string())
        }
    };
    Ok(Published {
        key,
        url: store.url(&key),
        verified,
        raw_bytes: raw_len,
        stored_bytes: stored_len,
        stream_time,
        verify_time,
        finish_time: started.elapsed() - stream_time - verify_time,
        manifest_error,
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

/// One try of the backup from the member whose `status` this is: the scratch space check, then
/// the stream into [`publish`].
async fn attempt(
    cfg: &BackupConfig,
    store: &Store,
    key: BackupKey,
    status: &MemberStatus,
    snapshot: etcd::Snapshot,
    shutdown: &Shutdown,
) -> anyhow::Result<Published> {
    tracing::info!("using {status}");
    if let Some(w) = etcd::quota_warning(status, cfg.etcd.quota) {
        tracing::warn!("{w}");
    }
    let need = space_needed(status.db_size);
    let dir: &PathBuf = &cfg.pipeline.tmp_dir;
    let free = free_space(dir)
        .with_context(|| format!("reading free space of {} (BACKUP_TMP_DIR)", dir.display()))?;
    if free < need {
        bail!(
            "not enough scratch space in {} (BACKUP_TMP_DIR): {free} bytes free, {need} needed for a {}-byte database; give it more space or point BACKUP_TMP_DIR elsewhere",
            dir.display(), status.db_size
        );
    }
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
    publish(source, store, key, &cfg.pipeline, &limits, extra).await
}

/// The `backup` command. `now` names the object and anchors retention.
pub async fn run(
    cfg: &BackupConfig,
    now: DateTime<Utc>,
    shutdown: Shutdown,
) -> anyhow::Result<Summary> {
    let store = Store::s3(&cfg.store)?;
    tokio::select! {
        r = store.check() => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let key = BackupKey::new(now, cfg.pipeline.codec);
    let mut etcd_cfg = cfg.etcd.clone();
    // A stream that breaks midway is started over from the next member: the failed attempt
    // published nothing (its upload was aborted), so the same key is still free.
    let (published, status) = loop {
        let (member, snapshot) = tokio::select! {
            m = etcd::start_snapshot(&etcd_cfg) => m?,
            i = shutdown.requested() => return Err(i.into()),
        };
        let status = member.status.clone();
        match attempt(cfg, &store, key, &status, snapshot, &shutdown).await {
            Ok(p) => break (p, status),
            Err(e) => {
                etcd::pass_over(&mut etcd_cfg, &status.endpoint);
                if !etcd::is_broken_stream(&e) || etcd_cfg.endpoints.is_empty() {
                    return Err(e);
                }
                tracing::warn!(
                    "{e:#}; nothing was published; starting over from the next endpoint"
                );
            }
        }
    };

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
