//! Following one generation: the watch is read into segments on scratch disk ([`watch`]), and
//! the segments go to the bucket beside it, one at a time and in order ([`upload`]). The two
//! meet only at a queue of sealed files, so a slow or absent bucket never stalls the watch
//! until the spool limit: then the watch is dropped and reopened from the last revision once
//! the spool drains, which etcd allows as long as it has not compacted that revision.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::WatchOptions;
use tokio::sync::mpsc;

use super::chain::{follows, Assembler, Break};
use super::names::{Generation, Name};
use super::prelude::Replay;
use super::seal::{seal, Keys, Sealed};
use super::segment::{Header, Kind, Record, Records, Revision};
use crate::config::EtcdConfig;
use crate::etcd::Members;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What the stream needs to follow a generation.
pub struct Settings<'a> {
    pub etcd: &'a EtcdConfig,
    pub tmp_dir: &'a std::path::Path,
    pub recipients: &'a [String],
    /// The lock, checked before every upload (`None`: not checked).
    pub held: Option<&'a super::lock::Held>,
    /// Signs every segment when set (BACKUP_SIGNING_KEY_FILE).
    pub signing: Option<&'a std::sync::Arc<crate::sign::SigningKey>>,
    pub segment_interval: Duration,
    pub segment_max_bytes: u64,
    pub spool_max_bytes: u64,
}

/// Where a generation stands: the revision to continue after and the hash that chains the
/// next segment to the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub generation: Generation,
    pub cluster_id: String,
    pub base_revision: i64,
    /// The newest revision in a sealed segment (or the base's).
    pub last: i64,
    /// What the next segment's header names as its previous: the hex SHA-256 of the last
    /// segment as stored, or `base:{revision}` for the first.
    pub previous: String,
}

/// The stream's figures, shared by the watch, the uploads and `/metrics`.
#[derive(Debug, Default)]
pub struct Status {
    /// The newest revision received from the watch.
    pub received: AtomicI64,
    /// The newest revision in the bucket.
    pub safe: AtomicI64,
    /// When the newest revision in the bucket was received (Unix ms).
    pub safe_received_ms: AtomicI64,
    /// When the newest segment reached the bucket (Unix ms).
    pub safe_at_ms: AtomicI64,
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes of sealed segments waiting on scratch disk.
    pub spooled: AtomicU64,
    /// When the current generation started (Unix s).
    pub generation_started: AtomicI64,
    pub generations_ended: AtomicU64,
    pub upload_failures: AtomicU64,
    pub watch_restarts: AtomicU64,
    /// The oldest revision a restore can reach in the current generation, and when its base
    /// had been taken (Unix ms), as the bucket said when they were last read.
    pub restorable_oldest: AtomicI64,
    pub restorable_oldest_ms: AtomicI64,
    /// BACKUP_PITR_WINDOW: how far back the history should reach.
    pub pitr_window_s: AtomicI64,
}

/// How a generation's following ended.
#[derive(Debug)]
pub enum Ended {
    /// A shutdown: everything received is in the bucket.
    Stopped,
    /// The chain broke; what came before the break is in the bucket.
    Broken(Break),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Follows `chain` until a shutdown or a break; every segment sealed before is uploaded
/// before this returns, unless the shutdown's grace runs out first.
pub async fn follow(
    s: &Settings<'_>,
    store: &Store,
    chain: &mut Chain,
    status: &Status,
    shutdown: &Shutdown,
    prelude: Option<Replay>,
) -> anyhow::Result<Ended> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (watched, uploaded) = tokio::join!(
        watch(s, chain, status, tx, shutdown, prelude),
        upload(store, s.held, rx, status, shutdown)
    );
    uploaded?;
    watched
}

/// The segment being filled.
struct Open {
    records: Records,
    /// Leases whose TTL this segment has recorded.
    leases: std::collections::HashSet<i64>,
    last_received_ms: i64,
}

struct Watcher<'a> {
    s: &'a Settings<'a>,
    chain: &'a mut Chain,
    status: &'a Status,
    tx: mpsc::UnboundedSender<Sealed>,
    open: Option<Open>,
}

impl Watcher<'_> {
    /// Seals the open segment, if it holds anything, and queues it for the bucket.
    async fn seal(&mut self) -> anyhow::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.records.is_empty() {
            return Ok(());
        }
        let (first, last) = (
            open.records.first.unwrap_or_default(),
            open.records.last.unwrap_or_default(),
        );
        let header = Header {
            generation: self.chain.generation.to_string(),
            cluster_id: self.chain.cluster_id.clone(),
            first,
            last,
            revisions: open.records.revisions,
            events: open.records.events,
            previous: self.chain.previous.clone(),
        };
        let name = Name::Segment {
            generation: self.chain.generation,
            first,
            last,
            encrypted: !self.s.recipients.is_empty(),
        };
        let (dir, recipients) = (self.s.tmp_dir.to_path_buf(), self.s.recipients.to_vec());
        let signing = self.s.signing.cloned();
        let received = open.last_received_ms;
        let sealed = tokio::task::spawn_blocking(move || {
            let keys = Keys {
                recipients: &recipients,
                signing: signing.as_deref(),
            };
            seal(open.records, &header, name, &dir, &keys, received)
        })
        .await??;
        self.chain.previous = crate::snapshot::verify::hex(&sealed.sha256);
        self.status.spooled.fetch_add(sealed.len, Ordering::Relaxed);
        tracing::debug!(segment = %name, bytes = sealed.len, "segment sealed");
        // The receiver only goes when the upload failed for good; the error is its.
        let _ = self.tx.send(sealed);
        Ok(())
    }

    /// Adds whole revisions to the open segment, checking each follows the last.
    async fn add(
        &mut self,
        revisions: Vec<Revision>,
        client: &mut etcd_client::Client,
    ) -> anyhow::Result<Result<(), Break>> {
        for rev in revisions {
            if let Err(b) = follows(self.chain.last, rev.revision) {
                return Ok(Err(b));
            }
            if self.open.is_none() {
                self.open = Some(Open {
                    records: Records::new(self.s.tmp_dir)?,
                    leases: Default::default(),
                    last_received_ms: 0,
                });
            }
            let open = self.open.as_mut().expect("just set");
            for e in &rev.events {
                let id = e.kv.lease;
                if e.kind == Kind::Put && id != 0 && open.leases.insert(id) {
                    let ttl = lease_ttl(client, id, self.s.etcd.dial_timeout).await;
                    open.records.push(&Record::Lease { id, ttl })?;
                }
            }
            open.last_received_ms = rev.received_ms;
            open.records.push(&Record::Revision(rev.clone()))?;
            self.chain.last = rev.revision;
            self.status.received.store(rev.revision, Ordering::Relaxed);
        }
        Ok(Ok(()))
    }

    fn full(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.records.bytes >= self.s.segment_max_bytes)
    }
}

/// The TTL a lease was granted, or -1 when etcd no longer knows it (it expired or was revoked
/// before we asked) or did not answer in time.
async fn lease_ttl(client: &mut etcd_client::Client, id: i64, timeout: Duration) -> i64 {
    match tokio::time::timeout(timeout, client.lease_time_to_live(id, None)).await {
        Ok(Ok(r)) if r.ttl() >= 0 => r.granted_ttl(),
        Ok(Ok(_)) => -1,
        Ok(Err(e)) => {
            tracing::warn!("asking etcd for lease {id:x}'s TTL failed: {e}; recorded as unknown");
            -1
        }
        Err(_) => -1,
    }
}

/// The wait before the next try at etcd: 1 s, doubling to 30 s, back to 1 s after a success.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_secs(1),
        }
    }

    /// Waits the current delay (less if the shutdown fires) and doubles the next.
    async fn wait(&mut self, shutdown: &Shutdown) {
        pause(self.next, shutdown).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

/// Sleeps `d`, or less if the shutdown fires; whether it fired.
async fn pause(d: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.requested() => true,
    }
}

async fn watch(
    s: &Settings<'_>,
    chain: &mut Chain,
    status: &Status,
    tx: mpsc::UnboundedSender<Sealed>,
    shutdown: &Shutdown,
    mut prelude: Option<Replay>,
) -> anyhow::Result<Ended> {
    let mut w = Watcher {
        s,
        chain,
        status,
        tx,
        open: None,
    };
    let mut backoff = Backoff::new();
    loop {
        if shutdown.fired().is_some() {
            w.seal().await?;
            return Ok(Ended::Stopped);
        }
        // The spool is full (the bucket is away): stop reading until it drains, rather than
        // fill the disk; etcd keeps the revisions until it compacts them.
        if status.spooled.load(Ordering::Relaxed) >= s.spool_max_bytes {
            tracing::warn!(
                spooled = status.spooled.load(Ordering::Relaxed),
                "the spool is full (BACKUP_SPOOL_MAX_BYTES): the bucket is not taking segments; the watch pauses at revision {} until it drains",
                w.chain.last
            );
            while status.spooled.load(Ordering::Relaxed) >= s.spool_max_bytes / 2 {
                if pause(Duration::from_secs(1), shutdown).await {
                    return Ok(Ended::Stopped);
                }
            }
        }
        let mut members = Members::new(s.etcd);
        let member = tokio::select! {
            m = members.choose() => m,
            _ = shutdown.requested() => continue,
        };
        let mut member = match member {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("{e}; trying again in {}s", backoff.next.as_secs());
                backoff.wait(shutdown).await;
                continue;
            }
        };
        if member.status.cluster_id != w.chain.cluster_id {
            w.seal().await?;
            return Ok(Ended::Broken(Break::ClusterChanged {
                was: w.chain.cluster_id.clone(),
                now: member.status.cluster_id.clone(),
            }));
        }
        // What the watch opened before the base received, first: the revisions after the base.
        if let Some(mut replay) = prelude.take() {
            loop {
                let batch = replay.next(w.chain.last, 4 << 20)?;
                let Some(first) = batch.first().map(|r| r.revision) else {
                    break;
                };
                if first != w.chain.last + 1 {
                    tracing::warn!(after = w.chain.last, first, "the watch opened before the base does not reach back to it; watching from the base's revision");
                    break;
                }
                if let Err(b) = w.add(batch, &mut member.client).await? {
                    w.seal().await?;
                    return Ok(Ended::Broken(b));
                }
                if w.full() {
                    w.seal().await?;
                }
            }
        }
        let from = w.chain.last + 1;
        let opts = WatchOptions::new()
            .with_all_keys()
            .with_start_revision(from)
            .with_progress_notify()
            .with_fragment();
        // A catch-up response holds up to 1,000 revisions, more than the client's 4 MiB default
        // would decode; fragments keep each response near etcd's request limit.
        let mut watch_client = member
            .client
            .watch_client()
            .max_decoding_message_size(256 << 20);
        let opened = tokio::select! {
            o = watch_client.watch(vec![0u8], Some(opts)) => o,
            _ = shutdown.requested() => continue,
        };
        let mut stream = match opened {
            Ok(st) => st,
            Err(e) => {
                tracing::warn!(endpoint = %member.status.endpoint, "opening the watch failed: {e}; trying again in {}s", backoff.next.as_secs());
                backoff.wait(shutdown).await;
                continue;
            }
        };
        tracing::info!(endpoint = %member.status.endpoint, member = %member.status.member_id, generation = %w.chain.generation, from, "watching");
        let mut assembler = Assembler::default();
        let mut tick = tokio::time::interval(s.segment_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.requested() => break,
                _ = tick.tick() => {
                    if !assembler.pending() {
                        w.seal().await?;
                    }
                    continue;
                }
                m = stream.message() => m,
            };
            let resp = match message {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::warn!(endpoint = %member.status.endpoint, "the watch ended; reopening it from revision {}", w.chain.last + 1);
                    status.watch_restarts.fetch_add(1, Ordering::Relaxed);
                    backoff.wait(shutdown).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %member.status.endpoint, "the watch failed: {e}; reopening it from revision {}", w.chain.last + 1);
                    status.watch_restarts.fetch_add(1, Ordering::Relaxed);
                    backoff.wait(shutdown).await;
                    break;
                }
            };
            if resp.compact_revision() > 0 {
                w.seal().await?;
                return Ok(Ended::Broken(Break::Compacted {
                    wanted: w.chain.last + 1,
                    compacted: resp.compact_revision(),
                }));
            }
            if resp.canceled() {
                tracing::warn!(endpoint = %member.status.endpoint, "etcd cancelled the watch ({}); reopening it", resp.cancel_reason());
                backoff.wait(shutdown).await;
                break;
            }
            // A response with events or progress: the watch works, so the next failure starts
            // its backoff afresh.
            backoff = Backoff::new();
            if let Some(h) = resp.header() {
                let cluster = format!("{:x}", h.cluster_id());
                if h.cluster_id() != 0 && cluster != w.chain.cluster_id {
                    w.seal().await?;
                    return Ok(Ended::Broken(Break::ClusterChanged {
                        was: w.chain.cluster_id.clone(),
                        now: cluster,
                    }));
                }
            }
            let received = now_ms();
            let revisions = assembler.push_response(&resp, received);
            if let Err(b) = w.add(revisions, &mut member.client).await? {
                w.seal().await?;
                return Ok(Ended::Broken(b));
            }
            if w.full() && !assembler.pending() {
                w.seal().await?;
            }
            if status.spooled.load(Ordering::Relaxed) >= s.spool_max_bytes && !assembler.pending() {
                w.seal().await?;
                break;
            }
        }
        // A revision still waiting for fragments is dropped: the watch reopens before it.
        if assembler.pending() {
            tracing::debug!(
                "dropping a partly received revision; it comes again from the reopened watch"
            );
        }
    }
}

/// Uploads sealed segments in order, each until it is in the bucket: a failure is retried
/// with backoff for as long as the stream runs, since the alternative is a gap. After a
/// shutdown, what is still queued has until the grace period ends.
async fn upload(
    store: &Store,
    held: Option<&super::lock::Held>,
    mut rx: mpsc::UnboundedReceiver<Sealed>,
    status: &Status,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let grace = crate::shutdown::GRACE.saturating_sub(Duration::from_secs(2));
    let deadline = async {
        shutdown.requested().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    let mut expired = false;
    while let Some(sealed) = rx.recv().await {
        let body = bytes::Bytes::from(tokio::fs::read(&sealed.path).await?);
        let mut backoff = Duration::from_secs(1);
        loop {
            if expired {
                let mut waiting = 1;
                while rx.try_recv().is_ok() {
                    waiting += 1;
                }
                let next = status.safe.load(Ordering::Relaxed).max(0) + 1;
                anyhow::bail!(
                    "stopped with {waiting} segment(s) not in the bucket (it did not take them within the grace period); the next start continues from revision {next} if etcd still holds it"
                );
            }
            if let Some(held) = held {
                if !held.still_ours(store).await {
                    // The stream's owner drops this work once it hears of it; write nothing.
                    std::future::pending::<()>().await;
                }
            }
            let put = tokio::select! {
                r = super::objects::put(store, &sealed.name, body.clone()) => r,
                _ = &mut deadline, if !expired => {
                    expired = true;
                    continue;
                }
            };
            match put {
                Ok(()) => break,
                Err(e) => {
                    status.upload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "uploading segment {} failed: {e}; retrying in {}s (the watch goes on into the spool)",
                        sealed.name,
                        backoff.as_secs()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut deadline, if !expired => expired = true,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        status.spooled.fetch_sub(sealed.len, Ordering::Relaxed);
        status.safe.store(sealed.last, Ordering::Relaxed);
        status
            .safe_received_ms
            .store(sealed.last_received_ms, Ordering::Relaxed);
        status.safe_at_ms.store(now_ms(), Ordering::Relaxed);
        status.segments.fetch_add(1, Ordering::Relaxed);
        status.bytes.fetch_add(sealed.len, Ordering::Relaxed);
        tracing::info!(segment = %super::objects::url(store, &sealed.name), revisions = sealed.revisions, bytes = sealed.len, "segment uploaded");
    }
    Ok(())
}
