//! The `stream` command: continuous backup. It resumes the newest generation in the bucket if
//! that one did not end (a restart within etcd's history loses nothing), or starts one from a
//! fresh base, then follows it ([`crate::stream::follow`]) until a shutdown. A generation that
//! breaks gets an end record with its reason, and the next starts from a new base.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::commands::backup;
use crate::config::StreamConfig;
use crate::shutdown::{Interrupted, Shutdown};
use crate::store::stream::MAX_RECORD;
use crate::store::Store;
use crate::stream::chain::Break;
use crate::stream::follow::{self, Chain, Ended, Settings, Status};
use crate::stream::lock::{self, Decision, Lock};
use crate::stream::names::{continuity, floor, Generation, Name, Span};

/// A generation's start record (`generation.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    pub cluster_id: String,
    /// The base backup's object name under the prefix.
    pub base: String,
    /// The base's revision, read from the snapshot file itself.
    pub base_revision: i64,
    pub started: DateTime<Utc>,
}

/// A generation's end record (`end.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    pub reason: String,
    /// The newest revision the generation holds.
    pub last: i64,
    pub ended: DateTime<Utc>,
}

/// What a `stream` run did, when it stopped.
#[derive(Debug, Default)]
pub struct Streamed {
    pub generations_started: usize,
    pub generations_ended: Vec<(Generation, String)>,
    pub segments: u64,
    pub bytes: u64,
    /// The newest revision in the bucket.
    pub safe: i64,
}

impl Streamed {
    pub fn log(&self) {
        tracing::info!(
            segments = self.segments,
            bytes = self.bytes,
            safe_revision = self.safe,
            generations_started = self.generations_started,
            generations_ended = self.generations_ended.len(),
            "stream stopped; every revision received is in the bucket"
        );
    }
}

/// Runs the stream until `shutdown` fires. Only a failure to stop cleanly is an error: etcd or
/// the bucket going away is waited out.
pub async fn run(
    cfg: &StreamConfig,
    store: &Store,
    status: Arc<Status>,
    shutdown: &Shutdown,
) -> anyhow::Result<Streamed> {
    if let Some(addr) = cfg.stream.listen {
        crate::stream::serve::serve(addr, status.clone())
            .await
            .map_err(|e| anyhow::anyhow!("serving metrics on BACKUP_METRICS_LISTEN={addr}: {e}; choose a free address and port"))?;
    }
    let status = &*status;
    tokio::select! {
        r = store.check() => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let me = lock::holder();
    let mut done = Streamed::default();
    loop {
        if acquire(store, &me, shutdown).await.is_err() {
            break;
        }
        tokio::select! {
            r = generations(cfg, store, status, shutdown, &mut done) => {
                release(store, &me).await;
                r?;
                break;
            }
            () = hold(store, &me, shutdown) => {
                tracing::warn!("another stream took the lock {} (this one was paused or cut off past its expiry): stopping to write, dropping what was not uploaded, and waiting for the lock again", store.lock_url());
            }
        }
    }
    done.segments = status.segments.load(Ordering::Relaxed);
    done.bytes = status.bytes.load(Ordering::Relaxed);
    done.safe = status.safe.load(Ordering::Relaxed);
    Ok(done)
}

/// Follows generation after generation until a shutdown: the stream's work while it holds the
/// lock.
async fn generations(
    cfg: &StreamConfig,
    store: &Store,
    status: &Status,
    shutdown: &Shutdown,
    done: &mut Streamed,
) -> anyhow::Result<()> {
    let settings = Settings {
        etcd: &cfg.backup.etcd,
        tmp_dir: &cfg.backup.pipeline.tmp_dir,
        recipients: &cfg.backup.pipeline.recipients,
        segment_interval: cfg.stream.segment_interval,
        segment_max_bytes: cfg.stream.segment_max_bytes,
        spool_max_bytes: cfg.stream.spool_max_bytes,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let chain = match next_chain(cfg, store, shutdown, done).await {
            Ok(c) => c,
            Err(_) if shutdown.fired().is_some() => break,
            Err(e) => {
                tracing::error!("{e:#}; trying again in {}s", backoff.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.requested() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        let mut chain = chain;
        status
            .generation_started
            .store(chain.generation.0.timestamp(), Ordering::Relaxed);
        status.safe.fetch_max(chain.last, Ordering::Relaxed);
        status.received.fetch_max(chain.last, Ordering::Relaxed);
        let generation = chain.generation;
        let following = follow::follow(&settings, store, &mut chain, status, shutdown);
        let ended = tokio::select! {
            r = following => r?,
            n = bases(cfg, store, generation, shutdown) => match n {},
        };
        match ended {
            Ended::Stopped => break,
            Ended::Broken(b) => {
                tracing::error!(generation = %chain.generation, last = chain.last, "the generation ended: {b}; starting a new one from a fresh base");
                end(store, &chain, &b).await;
                status.generations_ended.fetch_add(1, Ordering::Relaxed);
                done.generations_ended
                    .push((chain.generation, b.to_string()));
            }
        }
    }
    Ok(())
}

/// Waits until this stream holds the lock; an error only for a shutdown.
async fn acquire(store: &Store, me: &str, shutdown: &Shutdown) -> Result<(), Interrupted> {
    let mut told = false;
    let pause = |d: Duration| async move {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            i = shutdown.requested() => Err(i),
        }
    };
    loop {
        let now = Utc::now();
        let current = match store.get_lock().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading the stream's lock failed: {e}; trying again");
                pause(Duration::from_secs(5)).await?;
                continue;
            }
        };
        match lock::decide(current.as_ref(), me, now) {
            Decision::Take => {
                let mine = Lock {
                    holder: me.to_string(),
                    expires: now + lock::TTL,
                };
                if let Err(e) = store.put_lock(&mine).await {
                    tracing::warn!("writing the stream's lock failed: {e}; trying again");
                    pause(Duration::from_secs(5)).await?;
                    continue;
                }
                pause(lock::SETTLE).await?;
                if let Ok(Some(l)) = store.get_lock().await {
                    if l.holder == me {
                        tracing::info!(lock = %store.lock_url(), holder = me, "this stream writes to the prefix");
                        return Ok(());
                    }
                }
            }
            Decision::Wait { holder, until } => {
                if !told {
                    tracing::warn!(lock = %store.lock_url(), "another stream ({holder}) writes to this prefix; waiting until it stops or its lock expires (at {until})");
                    told = true;
                }
                let left = (until - now).to_std().unwrap_or_default();
                pause(left.min(lock::RENEW) + Duration::from_secs(1)).await?;
            }
        }
    }
}

/// Renews the lock every [`lock::RENEW`] while the stream runs; returns only when another
/// stream holds it. A renewal that fails (the bucket is away) is tried again at the next
/// interval.
async fn hold(store: &Store, me: &str, shutdown: &Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lock::RENEW) => {}
            // The stream is stopping: it lets go of the lock itself.
            _ = shutdown.requested() => std::future::pending::<()>().await,
        }
        match store.get_lock().await {
            Ok(Some(l)) if l.holder != me => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    "reading the stream's lock failed: {e}; trying again in {}s",
                    lock::RENEW.as_secs()
                );
                continue;
            }
        }
        let mine = Lock {
            holder: me.to_string(),
            expires: Utc::now() + lock::TTL,
        };
        if let Err(e) = store.put_lock(&mine).await {
            tracing::warn!(
                "renewing the stream's lock failed: {e}; trying again in {}s",
                lock::RENEW.as_secs()
            );
        }
    }
}

/// Lets go of the lock if it is still ours, so that a waiting stream continues at once.
async fn release(store: &Store, me: &str) {
    match store.get_lock().await {
        Ok(Some(l)) if l.holder == me => {
            if let Err(e) = store.delete_lock().await {
                tracing::warn!("deleting the stream's lock failed: {e}; it expires by itself");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the stream's lock failed: {e}; it expires by itself"),
    }
}

/// Writes the end record of a generation that broke. Retried: without it, a restart would try
/// to continue the generation and find the same break again (which is safe, only slower).
async fn end(store: &Store, chain: &Chain, why: &Break) {
    let record = EndRecord {
        reason: why.to_string(),
        last: chain.last,
        ended: Utc::now(),
    };
    let body = serde_json::to_vec_pretty(&record).expect("plain struct");
    let name = Name::End(chain.generation);
    for attempt in 1..=3 {
        match store.put_stream_object(&name, body.clone().into()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "writing {} failed (attempt {attempt} of 3): {e}",
                    store.stream_url(&name)
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The generation to follow: the newest one in the bucket if it can be continued, else a new
/// one from a fresh base.
async fn next_chain(
    cfg: &StreamConfig,
    store: &Store,
    shutdown: &Shutdown,
    done: &mut Streamed,
) -> anyhow::Result<Chain> {
    let newest = tokio::select! {
        r = resume(store) => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let after = match newest {
        Resumable::Chain(c) => {
            tracing::info!(generation = %c.generation, from = c.last + 1, "continuing the generation in the bucket");
            return Ok(c);
        }
        Resumable::None => None,
        Resumable::Ended(g) => Some(g),
        Resumable::Broken(c, b) => {
            tracing::error!(generation = %c.generation, "the generation in the bucket cannot be continued: {b}; starting a new one");
            end(store, &c, &b).await;
            done.generations_ended.push((c.generation, b.to_string()));
            Some(c.generation)
        }
    };
    // Generations (and their bases) are named by the second: wait for a new one.
    let mut now = Utc::now().trunc_subsecs(0);
    while after.is_some_and(|g| g.0 >= now) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            i = shutdown.requested() => return Err(Interrupted(i.0).into()),
        }
        now = Utc::now().trunc_subsecs(0);
    }
    let chain = start(cfg, store, now, shutdown).await?;
    done.generations_started += 1;
    Ok(chain)
}

/// Takes a base and writes the start record of a new generation.
async fn start(
    cfg: &StreamConfig,
    store: &Store,
    now: DateTime<Utc>,
    shutdown: &Shutdown,
) -> anyhow::Result<Chain> {
    let generation = Generation(now);
    tracing::info!(%generation, "starting a generation: taking its base snapshot");
    let base = backup::base(&cfg.backup, store, now, shutdown).await?;
    base.log();
    // An etcd that was never written holds no key, so the file says revision 0; etcd's store
    // starts at revision 1, which has no events, and the first write is revision 2.
    let revision = base.published.verified.status.revision.max(1);
    let record = StartRecord {
        cluster_id: base.member.cluster_id.clone(),
        base: base.published.key.to_string(),
        base_revision: revision,
        started: now,
    };
    let body = serde_json::to_vec_pretty(&record).expect("plain struct");
    store
        .put_stream_object(&Name::Start(generation), body.into())
        .await?;
    Ok(Chain {
        generation,
        cluster_id: record.cluster_id,
        base_revision: revision,
        last: revision,
        previous: format!("base:{revision}"),
    })
}

/// A base taken inside a generation (`base-{revision}.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// The backup's object name under the prefix.
    pub base: String,
    pub revision: i64,
    pub taken: DateTime<Utc>,
}

/// Takes a new base every BACKUP_BASE_INTERVAL while the generation runs, beside the watch, so
/// that a restore to a late revision replays at most that much. A base that fails is logged
/// and tried again at the next interval: the generation does not need it to be whole.
async fn bases(
    cfg: &StreamConfig,
    store: &Store,
    generation: Generation,
    shutdown: &Shutdown,
) -> std::convert::Infallible {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.stream.base_interval) => {}
            _ = shutdown.requested() => std::future::pending::<()>().await,
        }
        let now = Utc::now().trunc_subsecs(0);
        let taken = async {
            let base = backup::base(&cfg.backup, store, now, shutdown).await?;
            base.log();
            let record = BaseRecord {
                base: base.published.key.to_string(),
                revision: base.published.verified.status.revision,
                taken: now,
            };
            let name = Name::Base {
                generation,
                revision: record.revision,
            };
            let body = serde_json::to_vec_pretty(&record).expect("plain struct");
            store.put_stream_object(&name, body.into()).await?;
            anyhow::Ok(record.revision)
        };
        match taken.await {
            Ok(revision) => tracing::info!(%generation, revision, "a new base of the generation"),
            Err(_) if shutdown.fired().is_some() => {}
            Err(e) => {
                tracing::error!(%generation, "taking a new base failed: {e:#}; the generation goes on, and the next base is due in {}", humantime::format_duration(cfg.stream.base_interval))
            }
        }
    }
}

enum Resumable {
    /// No generation in the bucket.
    None,
    /// The newest one ended.
    Ended(Generation),
    Chain(Chain),
    /// The newest one cannot be continued, for this reason.
    Broken(Chain, Break),
}

/// Reads a generation's start record; `None` when it is missing or not ours.
pub async fn start_record(store: &Store, g: Generation) -> anyhow::Result<Option<StartRecord>> {
    let name = Name::Start(g);
    let Some(body) = store.get_stream_object(&name, MAX_RECORD).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&body) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            tracing::warn!(
                "{} is not a start record ({e}); ignoring it",
                store.stream_url(&name)
            );
            Ok(None)
        }
    }
}

async fn resume(store: &Store) -> anyhow::Result<Resumable> {
    let objects = store.list_stream().await?;
    let Some(g) = objects.iter().map(|o| o.name.generation()).max() else {
        return Ok(Resumable::None);
    };
    let mine: Vec<Name> = objects
        .iter()
        .map(|o| o.name)
        .filter(|n| n.generation() == g)
        .collect();
    if mine.iter().any(|n| matches!(n, Name::End(_))) {
        return Ok(Resumable::Ended(g));
    }
    let Some(start) = start_record(store, g).await? else {
        // Its base failed before the record was written: nothing of it can be restored.
        return Ok(Resumable::Ended(g));
    };
    let segments: Vec<(i64, i64)> = mine
        .iter()
        .filter_map(|n| match n {
            Name::Segment { first, last, .. } => Some((*first, *last)),
            _ => None,
        })
        .collect();
    let mut chain = Chain {
        generation: g,
        cluster_id: start.cluster_id,
        base_revision: start.base_revision,
        last: start.base_revision,
        previous: format!("base:{}", start.base_revision),
    };
    let trims: Vec<i64> = mine
        .iter()
        .filter_map(|n| match n {
            Name::Trimmed { revision, .. } => Some(*revision),
            _ => None,
        })
        .collect();
    let spans = continuity(floor(start.base_revision, &trims), &segments);
    if let Some(bad) = spans.iter().find(|s| !matches!(s, Span::Ok { .. })) {
        let b = Break::BucketGap {
            reason: format!("{bad:?}"),
        };
        return Ok(Resumable::Broken(chain, b));
    }
    if let Some(&last) = mine
        .iter()
        .filter(|n| matches!(n, Name::Segment { .. }))
        .max_by_key(|n| match n {
            Name::Segment { last, .. } => *last,
            _ => 0,
        })
    {
        let Some((sha, _)) = store.stream_object_sha256(&last).await? else {
            anyhow::bail!("{} was listed but is gone", store.stream_url(&last));
        };
        if let Name::Segment { last, .. } = last {
            chain.last = last;
        }
        chain.previous = crate::snapshot::verify::hex(&sha);
    }
    Ok(Resumable::Chain(chain))
}
