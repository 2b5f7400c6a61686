//! A stream's life: it resumes the newest generation in the bucket if that one did not end (a
//! restart within etcd's history loses nothing), or starts one from a fresh base, then follows
//! it ([`super::follow`]) until a shutdown, taking a new base every BACKUP_BASE_INTERVAL beside
//! the watch. A generation that breaks gets an end record with its reason, and the next starts
//! from a new base. All of it happens while this stream holds the prefix's [`lock`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use super::chain::Break;
use super::follow::{self, Chain, Ended, Settings, Status};
use super::lock;
use super::names::{Generation, Name, Span};
use super::objects;
use super::prelude::{self, Replay};
use super::records::{self, BaseRecord, EndRecord, Restorable, StartRecord, StreamView};
use crate::backup::take;
use crate::config::StreamConfig;
use crate::shutdown::{Interrupted, Shutdown};
use crate::store::Store;

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
    let window_s = cfg.backup.policy.pitr_window.as_secs();
    status.pitr_window_s.store(
        i64::try_from(window_s).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    tokio::select! {
        r = store.check() => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let held = lock::Held::new(lock::holder());
    let me = held.me.as_str();
    let mut done = Streamed::default();
    loop {
        if lock::acquire(store, &held, shutdown).await.is_err() {
            break;
        }
        tokio::select! {
            r = generations(cfg, store, status, &held, shutdown, &mut done) => {
                lock::release(store, me).await;
                r?;
                break;
            }
            // The renewal found another's name in the lock, or a writer did before an upload.
            () = lock::hold(store, &held, shutdown) => {}
            () = held.lost() => {}
        }
        tracing::warn!("another stream took the lock {} (this one was paused or cut off past its expiry): stopping to write, dropping what was not uploaded, and waiting for the lock again", lock::url(store));
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
    held: &lock::Held,
    shutdown: &Shutdown,
    done: &mut Streamed,
) -> anyhow::Result<()> {
    let settings = Settings {
        held: Some(held),
        etcd: &cfg.backup.etcd,
        tmp_dir: &cfg.backup.pipeline.tmp_dir,
        recipients: &cfg.backup.pipeline.recipients,
        signing: cfg.backup.pipeline.signing.as_ref(),
        segment_interval: cfg.stream.segment_interval,
        segment_max_bytes: cfg.stream.segment_max_bytes,
        spool_max_bytes: cfg.stream.spool_max_bytes,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let Next {
            chain,
            prelude,
            restorable,
        } = match next_chain(cfg, store, shutdown, done).await {
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
        if let Some(r) = restorable {
            show_window(status, r);
        }
        let generation = chain.generation;
        let following = follow::follow(&settings, store, &mut chain, status, shutdown, prelude);
        let ended = tokio::select! {
            r = following => r?,
            n = bases(cfg, store, generation, status, shutdown) => match n {},
        };
        match ended {
            Ended::Stopped => break,
            Ended::Broken(b) => {
                tracing::error!(generation = %chain.generation, last = chain.last, "the generation ended: {b}; starting a new one from a fresh base");
                end(cfg, store, &chain, &b).await;
                status.generations_ended.fetch_add(1, Ordering::Relaxed);
                done.generations_ended
                    .push((chain.generation, b.to_string()));
            }
        }
    }
    Ok(())
}

/// Reads where the restorable window of `generation` starts (prune may have trimmed it since)
/// into `status`; a bucket that cannot be read leaves the last figures.
async fn window(store: &Store, generation: Generation, status: &Status) {
    let view = match StreamView::read(store).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("reading the stream's objects for the restorable window failed: {e}");
            return;
        }
    };
    let restorable = view
        .generations
        .iter()
        .find(|g| g.generation == generation)
        .and_then(|g| g.restorable());
    if let Some(r) = restorable {
        show_window(status, r);
    }
}

/// Where the restorable window starts, for `/metrics`.
fn show_window(status: &Status, r: Restorable) {
    status.restorable_oldest.store(r.from, Ordering::Relaxed);
    status
        .restorable_oldest_ms
        .store(r.at.timestamp_millis(), Ordering::Relaxed);
}

/// The generation to follow, what the watch opened before its base received (a new one only),
/// and where its restorable window starts, as the bucket said when it was read.
struct Next {
    chain: Chain,
    prelude: Option<Replay>,
    restorable: Option<Restorable>,
}

/// Writes the end record of a generation that broke (signed with the stream's key, if any).
async fn end(cfg: &StreamConfig, store: &Store, chain: &Chain, why: &Break) {
    let signing = cfg.backup.pipeline.signing.as_deref();
    let record = EndRecord {
        reason: why.to_string(),
        last: chain.last,
        ended: Utc::now(),
    };
    records::put_end(store, chain.generation, &record, signing).await;
}

/// The generation to follow: the newest one in the bucket if it can be continued, else a new
/// one from a fresh base.
async fn next_chain(
    cfg: &StreamConfig,
    store: &Store,
    shutdown: &Shutdown,
    done: &mut Streamed,
) -> anyhow::Result<Next> {
    let newest = tokio::select! {
        r = resume(store) => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let after = match newest {
        Resumable::Chain(c, restorable) => {
            tracing::info!(generation = %c.generation, from = c.last + 1, "continuing the generation in the bucket");
            return Ok(Next {
                chain: c,
                prelude: None,
                restorable,
            });
        }
        Resumable::None => None,
        Resumable::Ended(g) => Some(g),
        Resumable::Broken(c, b) => {
            tracing::error!(generation = %c.generation, "the generation in the bucket cannot be continued: {b}; starting a new one");
            end(cfg, store, &c, &b).await;
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
    let started = start(cfg, store, now, shutdown).await?;
    done.generations_started += 1;
    Ok(started)
}

/// Takes a base and writes the start record of a new generation; with it, what the watch
/// opened before the base received ([`super::prelude`]).
async fn start(
    cfg: &StreamConfig,
    store: &Store,
    now: DateTime<Utc>,
    shutdown: &Shutdown,
) -> anyhow::Result<Next> {
    let generation = Generation(now);
    let tmp_dir = &cfg.backup.pipeline.tmp_dir;
    let holding = prelude::open(
        &cfg.backup.etcd,
        tmp_dir.clone(),
        cfg.stream.spool_max_bytes,
    )
    .await;
    tracing::info!(%generation, "starting a generation: taking its base snapshot");
    let taken = take(&cfg.backup, store, now, shutdown, &mut None).await;
    let spooled = match holding {
        Some(h) => h.finish().await,
        None => None,
    };
    let base = taken?;
    base.log();
    // An etcd that was never written holds no key, so the file says revision 0; etcd's store
    // starts at revision 1, which has no events, and the first write is revision 2.
    let revision = base.published.verified.status.opened_at().max(1);
    let record = StartRecord {
        cluster_id: base.member.cluster_id.clone(),
        base: base.published.key.to_string(),
        base_revision: revision,
        started: now,
        completed: Some(Utc::now()),
    };
    let signing = cfg.backup.pipeline.signing.as_deref();
    records::put(store, &Name::Start(generation), &record, signing).await?;
    let replay = match spooled {
        Some(s) if s.cluster_id == record.cluster_id => match s.replay(tmp_dir) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("reading back what the watch received before the base failed ({e:#}); watching from the base's revision");
                None
            }
        },
        _ => None,
    };
    let chain = Chain {
        generation,
        cluster_id: record.cluster_id,
        base_revision: revision,
        last: revision,
        previous: format!("base:{revision}"),
    };
    // Its window starts at its base, published now.
    let restorable = record.completed.map(|at| Restorable {
        from: revision,
        at,
        to: revision,
    });
    Ok(Next {
        chain,
        prelude: replay,
        restorable,
    })
}

/// Takes a new base every BACKUP_BASE_INTERVAL while the generation runs, beside the watch, so
/// that a restore to a late revision replays at most that much. A base that fails is logged
/// and tried again at the next interval: the generation does not need it to be whole.
async fn bases(
    cfg: &StreamConfig,
    store: &Store,
    generation: Generation,
    status: &Status,
    shutdown: &Shutdown,
) -> std::convert::Infallible {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.stream.base_interval) => {}
            _ = shutdown.requested() => std::future::pending::<()>().await,
        }
        let now = Utc::now().trunc_subsecs(0);
        let taken = async {
            let base = take(&cfg.backup, store, now, shutdown, &mut None).await?;
            base.log();
            let record = BaseRecord {
                base: base.published.key.to_string(),
                revision: base.published.verified.status.opened_at(),
                taken: now,
            };
            let name = Name::Base {
                generation,
                revision: record.revision,
            };
            let signing = cfg.backup.pipeline.signing.as_deref();
            records::put(store, &name, &record, signing).await?;
            anyhow::Ok(record.revision)
        };
        match taken.await {
            Ok(revision) => {
                tracing::info!(%generation, revision, "a new base of the generation");
                window(store, generation, status).await;
            }
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
    /// It can be continued; with where its restorable window starts.
    Chain(Chain, Option<Restorable>),
    /// The newest one cannot be continued, for this reason.
    Broken(Chain, Break),
}

/// The newest generation of the bucket, and whether it can be continued.
async fn resume(store: &Store) -> anyhow::Result<Resumable> {
    let view = StreamView::read(store).await?;
    let Some(g) = view.newest() else {
        return Ok(Resumable::None);
    };
    let mut resumable = resumable(g);
    if let Resumable::Chain(chain, _) = &mut resumable {
        if let Some(last) = g.segments.iter().max_by_key(|s| s.last) {
            let Some((sha, _)) = objects::sha256(store, &last.name).await? else {
                anyhow::bail!("{} was listed but is gone", objects::url(store, &last.name));
            };
            chain.last = last.last;
            chain.previous = crate::snapshot::verify::hex(&sha);
        }
    }
    Ok(resumable)
}

/// What the listing says of a generation (pure): ended, broken (with its chain at its base), or
/// a chain to continue, still at its base: the caller reads where its last segment ends.
fn resumable(g: &records::GenerationView) -> Resumable {
    if g.end.is_some() {
        return Resumable::Ended(g.generation);
    }
    // Its base failed before the record was written: nothing of it can be restored.
    let Some(start) = &g.start else {
        return Resumable::Ended(g.generation);
    };
    let chain = Chain {
        generation: g.generation,
        cluster_id: start.cluster_id.clone(),
        base_revision: start.base_revision,
        last: start.base_revision,
        previous: format!("base:{}", start.base_revision),
    };
    let bad = g
        .continuity()
        .into_iter()
        .find(|s| !matches!(s, Span::Ok { .. }));
    match bad {
        Some(bad) => Resumable::Broken(
            chain,
            Break::BucketGap {
                reason: format!("{bad:?}"),
            },
        ),
        None => Resumable::Chain(chain, g.restorable()),
    }
}
