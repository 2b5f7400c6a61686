//! The streaming engine: one snapshot stream in, one published object (or nothing) out.
//!
//! Every stage runs at once: each chunk from etcd is hashed for the trailer check, spooled raw
//! to a scratch file (for the walk) and fed to the encoder, whose output is cut into parts
//! ([`crate::store::Parts`]) that are uploaded as they fill. The network read and the upload
//! run on the async runtime, the hashing, spooling and compressing on a blocking thread (and
//! the encoder's workers), joined by bounded channels, so memory does not grow with the
//! database. The serial tail is the bbolt walk of the spooled file, which runs while the last
//! parts finish; only after it passed is the multipart upload completed and the object appears.
//! Then the manifest (`<key>.json`) is written with the verified figures.
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
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::compress::Encoder;
use crate::config::PipelineConfig;
use crate::crypt::Sealer;
use crate::key::BackupKey;
use crate::pacing::{Pacer, Rate};
use crate::progress::Progress;
use crate::scratch;
use crate::shutdown::Shutdown;
use crate::snapshot::verify::{self, hex, TrailerCheck, Verified};
use crate::store::{Metadata, Parts, Store, Stored};

/// Chunks in flight between the network reader and the spooling thread.
const CHANNEL_CHUNKS: usize = 16;
pub const SPOOL_BUFFER: usize = 1 << 20;

/// What the network reader sends the spooling thread. A stream is whole only if it ends with
/// `End`: a closed channel without it means the reader was stopped.
enum Feed {
    Chunk(Bytes),
    End,
    Failed(anyhow::Error),
}

/// Sends `source` to the spooling thread, with the stall and total timeouts and the shutdown;
/// its own failure goes down the channel too.
async fn feed<S, E>(source: S, tx: mpsc::Sender<Feed>, limits: &Limits, mut progress: Progress)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<anyhow::Error>,
{
    let read = async {
        futures::pin_mut!(source);
        let mut pacer = limits.rate.clone().map(Pacer::new);
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
            progress.advance(chunk.len());
            let len = chunk.len() as u64;
            if tx.send(Feed::Chunk(chunk)).await.is_err() {
                // The thread stopped early; its error is already on its way downstream.
                return Ok(());
            }
            // The shutdown is not awaited here: a wait is at most pacing::SLACK.
            if let Some(p) = &mut pacer {
                p.read(len).await;
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
) -> Option<(TrailerCheck, Stored)> {
    let dir = cfg.tmp_dir.clone();
    let work = || -> anyhow::Result<(TrailerCheck, Stored)> {
        let disk = |e: std::io::Error| scratch::error("spooling the snapshot", &dir)(e);
        let mut trailer = TrailerCheck::default();
        let mut raw = BufWriter::with_capacity(SPOOL_BUFFER, raw_file);
        let mut out = Parts::new(parts.clone(), cfg.part_size);
        if cfg.signing.is_some() {
            out = out.hashing();
        }
        let sealed = Sealer::new(out, &cfg.recipients).map_err(encode_error)?;
        let mut enc = Encoder::new(cfg.codec, cfg.level, cfg.threads, sealed)?;
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
        // Flushed, not synced: the file only feeds the walk, which reads it back through the
        // page cache, and no uploaded byte comes from it. A full disk fails the write itself.
        // Unsynced, most of it is never written out at all (the kernel drops the dirty pages of
        // a file removed before writeback), which spares etcd's disk for its own fsyncs.
        raw.flush().map_err(disk)?;
        drop(raw);
        let stored = enc
            .finish()
            .and_then(Sealer::finish)
            .and_then(Parts::finish)
            .map_err(encode_error)?;
        Ok((trailer, stored))
    };
    match work() {
        Ok(done) => Some(done),
        Err(e) => {
            let _ = parts.blocking_send(Err(e));
            None
        }
    }
}

/// An encoder or encryption error, or the sign that the uploader is gone (whose own error is then the one
/// reported: ours goes down a closed channel).
fn encode_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("compressing the snapshot")
}

/// What arrives on `rx`, as a stream that ends when every sender is gone.
pub(crate) fn received<T>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// How long a snapshot stream may take in all and stay silent, and what stops it early.
#[derive(Clone)]
pub struct Limits {
    pub total: Duration,
    pub stall: Duration,
    /// The rate to read at, fixed (`ETCD_SNAPSHOT_RATE`) or adaptive; `None` reads as fast as
    /// the stages downstream take it.
    pub rate: Option<Rate>,
    pub shutdown: Shutdown,
    /// The database size the member reported, for the share done in progress lines.
    pub expected_size: Option<u64>,
}

/// The `check` of [`publish`] that checks nothing more (the pipeline tests, which have no cluster).
pub async fn no_check(_: std::fs::File, _: Verified) -> anyhow::Result<(Metadata, ())> {
    Ok((Vec::new(), ()))
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
    /// The walk of the spooled file and the check against the cluster.
    pub verify_time: Duration,
    /// The last parts, completing the upload and the manifest.
    pub finish_time: Duration,
    /// Why the manifest could not be written, if it was not.
    pub manifest_error: Option<String>,
}

/// Streams, verifies and uploads one snapshot stream, all at once. The object exists
/// afterwards only if this returns `Ok`. `extra` is metadata known before the stream (member,
/// versions); the object carries it, the manifest carries it and the verified figures.
/// `check` runs after the walk passed, before the upload completes (the cluster check of
/// [`crate::consistency`]): its error aborts the upload, its figures go into the manifest, and
/// its report is returned beside the published backup.
pub async fn publish<S, E, C, F, T>(
    source: S,
    store: &Store,
    key: BackupKey,
    cfg: &PipelineConfig,
    limits: &Limits,
    extra: Metadata,
    check: C,
) -> anyhow::Result<(Published, T)>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<anyhow::Error>,
    C: FnOnce(std::fs::File, Verified) -> F,
    F: std::future::Future<Output = anyhow::Result<(Metadata, T)>>,
{
    let started = Instant::now();
    let raw = scratch::file(&cfg.tmp_dir, ".db")?;
    let raw_out = raw
        .reopen()
        .map_err(scratch::error("reopening the scratch file", &cfg.tmp_dir))?;
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
        (
            "encryption",
            if cfg.recipients.is_empty() {
                "none"
            } else {
                "age"
            }
            .to_string(),
        ),
    ];
    if !cfg.recipients.is_empty() {
        // Public keys only: who can read this backup. Never an identity.
        metadata.push(("age-recipients", cfg.recipients.join(",")));
    }
    metadata.extend(extra);
    // The walk, once the thread has handed over the last part, while the last parts upload.
    let gate = async {
        let (trailer, stored) = worker
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
        let s = &verified.status;
        tracing::info!(
            sha256 = %hex(&verified.sha256), revision = s.revision, hash = s.hash,
            total_keys = s.total_key, total_size = s.total_size,
            hash_kv = s.hash_kv.map(|h| h.hash), hash_kv_compact_revision = s.hash_kv.map(|h| h.compact_revision),
            "snapshot verified: SHA-256 trailer matches and the bbolt walk found no damage"
        );
        let checked = check(raw.reopen()?, verified.clone()).await?;
        let verify_time = started.elapsed() - stream_time;
        anyhow::Ok((verified, checked, raw_len, stored, stream_time, verify_time))
    };
    let parts = received(parts_rx);
    let upload = store.put_stream(
        &key,
        metadata.clone(),
        parts,
        cfg.concurrency,
        gate,
        &limits.shutdown,
    );
    let progress = Progress::new("snapshot", limits.expected_size, cfg.progress);
    let ((), uploaded) = tokio::join!(feed(source, chunks_tx, limits, progress), upload);
    // After a failed upload the thread stops at its next send; wait, so nothing outlives us.
    if let Some(w) = worker {
        let _ = w.await;
    }
    drop(raw);
    let (_, (verified, (checked, report), raw_len, stored, stream_time, verify_time)) =
        uploaded.with_context(|| format!("uploading {}", store.url(&key)))?;

    let s = &verified.status;
    let mut figures = metadata;
    figures.extend([
        ("snapshot-sha256", hex(&verified.sha256)),
        ("snapshot-size", raw_len.to_string()),
        ("stored-size", stored.len.to_string()),
        ("etcd-revision", s.revision.to_string()),
        ("etcd-hash", s.hash.to_string()),
        ("etcd-total-keys", s.total_key.to_string()),
        ("etcd-db-size", s.total_size.to_string()),
    ]);
    if let Some(kv) = &s.hash_kv {
        figures.extend([
            ("etcd-hashkv", kv.hash.to_string()),
            (
                "etcd-hashkv-compact-revision",
                kv.compact_revision.to_string(),
            ),
            ("etcd-hashkv-revision", kv.revision.to_string()),
        ]);
    }
    figures.extend(checked);
    let manifest_error = match &cfg.signing {
        None => {
            // The backup is published and whole; an unsigned manifest only saves `list` a
            // download.
            let body = crate::store::manifest_body(&figures);
            match store.put_manifest(&key, body).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!("the backup was published, but its manifest was not: {e}; `list` shows it without revision and sizes");
                    Some(e.to_string())
                }
            }
        }
        Some(signer) => {
            // Signed, the manifest is what a restore with BACKUP_VERIFY_KEY relies on: without
            // it the backup is refused there, so failing to write it fails the run.
            // (`signed-by` is for people: the signature itself names its key.)
            figures.push(("object-key", format!("{}{key}", store.prefix())));
            if let Some(sha) = stored.sha256 {
                figures.push(("stored-sha256", hex(&sha)));
            }
            figures.push(("signed-by", signer.fingerprint()));
            let body = crate::store::manifest_body(&figures);
            if let Err(e) = sign_and_write(store, &key, signer, body).await {
                // Whole or nothing: a backup this job cannot vouch for is taken back, as if
                // a check had failed (its files archive with it).
                if let Err(d) = store.delete(&key).await {
                    tracing::error!("the backup's signature could not be written, and deleting the backup failed too: {d}; delete {} by hand or restore it with --allow-unsigned", store.url(&key));
                }
                return Err(e);
            }
            None
        }
    };
    let published = Published {
        key,
        url: store.url(&key),
        verified,
        raw_bytes: raw_len,
        stored_bytes: stored.len,
        stream_time,
        verify_time,
        finish_time: started.elapsed() - stream_time - verify_time,
        manifest_error,
    };
    Ok((published, report))
}

/// Writes the signature of a published backup's manifest, then the manifest: a manifest that
/// is there is always signed, so `check` never counts a backup whose signature failed.
async fn sign_and_write(
    store: &Store,
    key: &BackupKey,
    signer: &crate::sign::SigningKey,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let then = "so the backup is deleted again (a restore with BACKUP_VERIFY_KEY would refuse it)";
    let signature = signer.sign(&body).map_err(|e| {
        anyhow!(
            "signing the manifest of {} failed ({e}), {then}",
            store.url(key)
        )
    })?;
    store
        .put_signature(key, signature.into_bytes())
        .await
        .with_context(|| {
            format!(
                "writing the signature failed, {then}; check the bucket's permissions and retry"
            )
        })?;
    store.put_manifest(key, body).await.with_context(|| {
        format!(
            "writing the signed manifest failed, {then}; check the bucket's permissions and retry"
        )
    })?;
    Ok(())
}
