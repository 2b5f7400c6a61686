//! Point-in-time commands over the stream's generations: `restore --to-revision/--to-time`
//! (the database rebuilt offline, [`crate::pitr::rebuild`]), `get --at` (one key as it was),
//! `history` (every change of a key) and `diff` (the keys that changed between two points).
//!
//! Segments are downloaded one ahead of the thread that reads them, each to an unnamed scratch
//! file while its SHA-256 is computed, so memory holds one revision and disk one segment or two.
//! Each segment must name its generation and cluster, hold the revisions its name says, and,
//! where it follows a segment read before it, name that segment's hash: a segment planted in
//! the bucket, or one from another writer, is refused, not restored.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::commands::restore::{self, Destination, RestoreFlags, Which};
use crate::commands::stream::start_record;
use crate::config::RestoreConfig;
use crate::crypt::Identities;
use crate::pitr::changes::{Change, Changes};
use crate::pitr::k8s::{self, Decoded};
use crate::pitr::plan::{self, Plan, Source};
use crate::pitr::rebuild::{self, Rebuild, Rebuilt};
use crate::shutdown::Shutdown;
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;
use crate::stream::kv::KeyValue;
use crate::stream::names::Name;
use crate::stream::segment::{Kind, Reader, Record};

/// A point in the stream: a revision, or a time (RFC 3339) meaning the last revision the
/// stream had received by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Revision(i64),
    Time(DateTime<Utc>),
}

impl FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Point, String> {
        if let Ok(r) = s.parse::<i64>() {
            return if r >= 1 {
                Ok(Point::Revision(r))
            } else {
                Err(format!("revision {r}: revisions start at 1"))
            };
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Point::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                format!("{s:?} is neither a revision (a number) nor an RFC 3339 time such as 2026-12-04T10:30:00Z ({e})")
            })
    }
}

/// The margin added to `--bump-revision` beyond the newest revision the stream saw: writes
/// after its last segment are not known. A million is over ten minutes at 1,500 writes/s
/// (etcd's own recovery guide sizes a week's bump from that rate).
pub const BUMP_MARGIN: i64 = 1_000_000;

/// Every generation the bucket holds, as the plan reads them.
pub async fn sources(store: &Store) -> anyhow::Result<Vec<Source>> {
    let views = crate::commands::generations::views(store).await?;
    let mut out = Vec::new();
    for v in views {
        let Some(start) = &v.start else { continue };
        let Some(record) = start_record(store, v.generation).await? else {
            continue;
        };
        let mut bases = vec![(start.revision, start.key.clone())];
        bases.extend(v.bases.iter().map(|b| (b.revision, b.key.clone())));
        out.push(Source {
            generation: v.generation,
            cluster_id: record.cluster_id,
            bases,
            floor: crate::stream::names::floor(start.revision, &v.trims),
            segments: v
                .segments
                .iter()
                .map(|&(name, first, last, uploaded)| plan::Segment {
                    name,
                    first,
                    last,
                    uploaded,
                })
                .collect(),
        });
    }
    Ok(out)
}

/// One downloaded segment: its stored bytes on an unnamed scratch file, and their SHA-256.
struct Fetched {
    name: Name,
    file: File,
    sha256: String,
}

async fn fetch_one(store: &Store, name: Name, dir: &Path) -> anyhow::Result<Fetched> {
    let (_, mut stream) = store.get_stream_object_stream(&name).await?;
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let mut sha = Sha256::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| anyhow!("reading {}: {}", store.stream_url(&name), e))?
    {
        sha.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing a scratch file in {}", dir.display()))?;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(Fetched {
        name,
        file,
        sha256: verify::hex(&sha.finalize()),
    })
}

/// Downloads `names` in order into `tx`, one ahead of the reader; stops when it goes.
async fn fetch(
    store: &Store,
    names: Vec<Name>,
    dir: &Path,
    tx: mpsc::Sender<anyhow::Result<Fetched>>,
) {
    for name in names {
        let got = fetch_one(store, name, dir).await;
        let failed = got.is_err();
        if tx.send(got).await.is_err() || failed {
            return;
        }
    }
}

/// The records of a run of segments, in order, each segment checked as the module says.
struct Feed<'a> {
    rx: mpsc::Receiver<anyhow::Result<Fetched>>,
    ids: Option<&'a Identities>,
    url: String,
    generation: String,
    cluster_id: String,
    /// The revision and hash of the segment read last; at first, the base the run starts at
    /// when the generation's first segment chains to it.
    previous: Option<(i64, String)>,
    current: Option<(Name, Reader<Box<dyn Read + Send + 'a>>)>,
}

impl<'a> Feed<'a> {
    fn new(
        rx: mpsc::Receiver<anyhow::Result<Fetched>>,
        ids: Option<&'a Identities>,
        url: String,
        plan: &Plan,
    ) -> Feed<'a> {
        Feed {
            rx,
            ids,
            url,
            generation: plan.generation.to_string(),
            cluster_id: plan.cluster_id.clone(),
            previous: plan
                .start_base
                .then(|| (plan.base_revision, format!("base:{}", plan.base_revision))),
            current: None,
        }
    }

    fn next(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            if let Some((name, r)) = &mut self.current {
                match r
                    .next_record()
                    .with_context(|| format!("reading {}{name}", self.url))?
                {
                    Some(rec) => return Ok(Some(rec)),
                    None => self.current = None,
                }
            }
            let Some(got) = self.rx.blocking_recv() else {
                return Ok(None);
            };
            let f = got?;
            let at = format!("{}{}", self.url, f.name);
            let r = crate::stream::seal::open(BufReader::with_capacity(1 << 16, f.file), self.ids)
                .with_context(|| format!("opening {at}"))?;
            let h = r.header().clone();
            let Name::Segment { first, last, .. } = f.name else {
                bail!("{at} is not a segment");
            };
            if h.generation != self.generation || h.cluster_id != self.cluster_id {
                bail!("refusing {at}: it says it is of generation {} of cluster {}, but it is stored under generation {} of cluster {} (it was copied or planted there)", h.generation, h.cluster_id, self.generation, self.cluster_id);
            }
            if (h.first, h.last) != (first, last) {
                bail!("refusing {at}: it holds revisions {}..={}, not those its name says (it was renamed or planted)", h.first, h.last);
            }
            if let Some((prev_last, prev_sha)) = &self.previous {
                if h.first == prev_last + 1 && &h.previous != prev_sha {
                    bail!("refusing {at}: it does not continue the segment before it (it names {}, the one before is {prev_sha}); a segment was replaced or planted", h.previous);
                }
            }
            self.previous = Some((h.last, f.sha256));
            self.current = Some((f.name, r));
        }
    }
}

/// Runs `work` on a blocking thread over the records of `plan`'s segments, downloaded beside
/// it. A shutdown stops both.
async fn over_segments<T: Send + 'static>(
    store: &Store,
    plan: &Plan,
    names: Vec<Name>,
    cfg: &RestoreConfig,
    shutdown: &Shutdown,
    work: impl FnOnce(&mut dyn FnMut() -> anyhow::Result<Option<Record>>) -> anyhow::Result<T>
        + Send
        + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::channel(1);
    let ids = cfg.identities.clone();
    let url = store.stream_url(&Name::Start(plan.generation));
    let url = url.trim_end_matches("generation.json").to_string();
    let plan = plan.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut feed = Feed::new(rx, ids.as_deref(), url, &plan);
        work(&mut || feed.next())
    });
    let fetching = fetch(store, names, &cfg.tmp_dir, tx);
    let (_, done) = shutdown
        .or_interrupted(async {
            Ok(tokio::join!(fetching, async {
                worker
                    .await
                    .context("the thread reading the segments panicked")
            }))
        })
        .await?;
    done?
}

/// Feeds `f` each revision after `after` up to `upto` from `next`, in order, and stops there.
fn revisions_between(
    next: &mut dyn FnMut() -> anyhow::Result<Option<Record>>,
    after: i64,
    upto: i64,
    mut f: impl FnMut(crate::stream::segment::Revision),
) -> anyhow::Result<()> {
    while let Some(rec) = next()? {
        let Record::Revision(r) = rec else { continue };
        if r.revision > upto {
            break;
        }
        if r.revision > after {
            f(r);
        }
    }
    Ok(())
}

/// Resolves a point to a revision: a time is the last revision received at or before it, in
/// the newest generation started by then.
pub async fn resolve(
    store: &Store,
    sources: &[Source],
    point: Point,
    cfg: &RestoreConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<i64> {
    let t = match point {
        Point::Revision(r) => return Ok(r),
        Point::Time(t) => t,
    };
    let Some(s) = sources.iter().rev().find(|s| s.generation.0 <= t) else {
        bail!(
            "no stream generation under {} had started by {t} (`list --generations` shows when each began)",
            store.url_prefix()
        );
    };
    let mut segments = s.segments.clone();
    segments.sort_by_key(|g| (g.first, g.last));
    let start = s.bases.iter().map(|b| b.0).min().unwrap_or(0);
    // Segments stored by T hold only revisions received by T; the answer is in the first one
    // stored after, or a later one whose upload was delayed, or is the last of those before.
    let split = segments.iter().position(|g| g.uploaded > t);
    let Some(split) = split else {
        return Ok(segments.iter().map(|g| g.last).max().unwrap_or(start));
    };
    let before = if split == 0 {
        start
    } else {
        segments[split - 1].last
    };
    let names: Vec<Name> = segments[split..].iter().map(|g| g.name).collect();
    let plan = Plan {
        generation: s.generation,
        cluster_id: s.cluster_id.clone(),
        base_revision: before,
        base: String::new(),
        start_base: false,
        segments: names.clone(),
        revision: 0,
    };
    let t_ms = t.timestamp_millis();
    over_segments(store, &plan, names, cfg, shutdown, move |next| {
        let mut found = before;
        while let Some(rec) = next()? {
            if let Record::Revision(r) = rec {
                if r.received_ms > t_ms {
                    break;
                }
                found = found.max(r.revision);
            }
        }
        Ok(found)
    })
    .await
}

/// `restore --to-revision R | --to-time T`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PointArgs {
    /// Rebuild the database at this revision from the stream (instead of restoring a backup).
    #[arg(long, value_name = "R", conflicts_with_all = ["backup", "to_time", "files", "allow_unsigned"],
        value_parser = clap::value_parser!(i64).range(1..))]
    pub to_revision: Option<i64>,
    /// Rebuild the database as the stream had received it at this time (RFC 3339): the last
    /// revision received at or before T (receipt time, not etcd's commit time).
    #[arg(long, value_name = "T", conflicts_with_all = ["backup", "files", "allow_unsigned"])]
    pub to_time: Option<DateTime<Utc>>,
    /// Also mark every revision up to R+N compacted, so that etcd restored from the file
    /// continues at R+N+1 and every watch from before is refused, as `etcdutl snapshot restore
    /// --bump-revision N --mark-compacted` does (for etcdutl older than 3.5.10). The file's
    /// HashKV then no longer matches revision R.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub bump_revision: Option<i64>,
}

impl PointArgs {
    pub fn point(&self) -> Option<Point> {
        self.to_revision
            .map(Point::Revision)
            .or(self.to_time.map(Point::Time))
    }
}

/// What `restore --to-revision` did.
#[derive(Debug, Clone)]
pub struct PointRestored {
    pub path: PathBuf,
    pub plan: Plan,
    pub rebuilt: Rebuilt,
    pub verified: Verified,
    /// The bump the printed etcdutl command uses (or the one written into the file).
    pub bump: i64,
    pub bumped_in_file: bool,
    /// The newest revision the stream holds.
    pub newest: i64,
    pub next: String,
    pub seconds: f64,
}

/// `restore --to-revision/--to-time`: the plan, the base restored and checked as `restore`
/// checks a backup, the segments, the rebuild, then our own check of the file (trailer, walk,
/// revision) before it is renamed into place.
pub async fn restore_to(
    cfg: RestoreConfig,
    point: Point,
    bump: Option<i64>,
    output: &Path,
    force: bool,
    flags: &RestoreFlags,
    shutdown: &Shutdown,
) -> anyhow::Result<PointRestored> {
    let started = std::time::Instant::now();
    let store = Store::s3(&cfg.store)?;
    let to = Destination {
        path: output.to_path_buf(),
        force,
    };
    // Before anything is read: a file in the way is known at once.
    let (part, out) = restore::part_file(&to)?;
    let sources = shutdown.or_interrupted(sources(&store)).await?;
    let revision = resolve(&store, &sources, point, &cfg, shutdown).await?;
    let plan = plan::plan(&sources, revision).map_err(|u| anyhow!("{u}"))?;
    tracing::info!(revision, generation = %plan.generation, base = %plan.base, base_revision = plan.base_revision, segments = plan.segments.len(), "rebuilding");
    let (_, (file, rebuilt)) = rebuild_plan(
        &store,
        &plan,
        &cfg,
        bump,
        out,
        part.display().to_string(),
        shutdown,
    )
    .await?;
    // The trailer was hashed from the pages as they are on disk; the walk checks the rest.
    let check_started = std::time::Instant::now();
    let len = rebuilt.db_len;
    let status = tokio::task::spawn_blocking(move || verify::walk(&file, len))
        .await?
        .map_err(|e| anyhow!("the rebuilt file does not pass our own check ({e}); this is a bug in etcd-backup, please report it with the output of `list --generations`"))?;
    let verified = Verified {
        sha256: rebuilt.sha256,
        status,
    };
    tracing::info!(
        copy_seconds = rebuilt.copy_seconds,
        replay_seconds = rebuilt.replay_seconds,
        finish_seconds = rebuilt.finish_seconds,
        check_seconds = check_started.elapsed().as_secs_f64(),
        "rebuilt"
    );
    if verified.status.revision != revision {
        bail!("the rebuilt file's newest revision is {}, not {revision}; this is a bug in etcd-backup", verified.status.revision);
    }
    restore::publish(part, output).await?;
    let newest = sources
        .iter()
        .flat_map(|s| s.segments.iter().map(|g| g.last))
        .max()
        .unwrap_or(revision)
        .max(revision);
    let b = bump.unwrap_or(newest - revision + BUMP_MARGIN);
    let mut next = restore::etcdutl_command(output, flags);
    if bump.is_none() {
        next.push_str(&format!(" \\\n  --bump-revision {b} --mark-compacted"));
    }
    Ok(PointRestored {
        path: output.to_path_buf(),
        plan,
        rebuilt,
        verified,
        bump: b,
        bumped_in_file: bump.is_some(),
        newest,
        next,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the database at `plan.revision` into `out` (`shown` names it in errors): the base
/// restored to a scratch file (gone on return), then the segments read beside the writer.
/// Returns the base's own check and the written file with what went into it.
async fn rebuild_plan(
    store: &Store,
    plan: &Plan,
    cfg: &RestoreConfig,
    bump: Option<i64>,
    out: File,
    shown: String,
    shutdown: &Shutdown,
) -> anyhow::Result<(Verified, (File, Rebuilt))> {
    let (base, base_verified) = restore_base(store, plan, cfg, shutdown).await?;
    let base_file = File::open(&base).with_context(|| format!("opening {}", base.display()))?;
    let base_len = base_file.metadata()?.len() - verify::TRAILER_LEN as u64;
    let (base_revision, revision) = (plan.base_revision, plan.revision);
    let written = over_segments(
        store,
        plan,
        plan.segments.clone(),
        cfg,
        shutdown,
        move |next| {
            let r = Rebuild {
                base: &base_file,
                base_len,
                base_revision,
                revision,
                bump,
            };
            rebuild::rebuild(&r, next, out).with_context(|| format!("writing {shown}"))
        },
    )
    .await?;
    drop(base);
    Ok((base_verified, written))
}

/// Restores the plan's base (checked as `restore` checks any backup: trailer, walk, HashKV
/// against its manifest, signature with BACKUP_VERIFY_KEY) to a scratch file, removed on drop.
async fn restore_base(
    store: &Store,
    plan: &Plan,
    cfg: &RestoreConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<(tempfile::TempPath, Verified)> {
    let which: Which = plan.base.parse().map_err(|e| {
        anyhow!(
            "the base {:?} named by generation {}: {e}",
            plan.base,
            plan.generation
        )
    })?;
    let (key, trust, _) = shutdown
        .or_interrupted(restore::choose(store, which, cfg.verify_keys.as_ref(), &[]))
        .await?;
    let path = tempfile::Builder::new()
        .prefix(".etcd-backup-base-")
        .tempfile_in(&cfg.tmp_dir)
        .with_context(|| format!("creating a scratch file in {}", cfg.tmp_dir.display()))?
        .into_temp_path();
    let to = Destination {
        path: path.to_path_buf(),
        force: true,
    };
    let restored = restore::restore(
        store,
        key,
        &to,
        shutdown,
        cfg.progress,
        cfg.identities.clone(),
        &trust,
    )
    .await
    .with_context(|| format!("restoring the base {}", plan.base))?;
    Ok((path, restored.verified))
}

/// One key's state at a point: `None` when it did not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Got {
    pub key: String,
    pub revision: i64,
    pub found: Option<GotValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GotValue {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub size: usize,
    /// Base64 of the value (JSON output only).
    pub value: String,
    pub object: Decoded,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl GotValue {
    fn of(kv: KeyValue) -> GotValue {
        use base64::Engine;
        GotValue {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            size: kv.value.len(),
            value: base64::engine::general_purpose::STANDARD.encode(&kv.value),
            object: k8s::decode(&kv.value),
            bytes: kv.value,
        }
    }
}

/// `get KEY --at P`: the segments after the nearest base first; the base only when none of
/// them touched the key.
pub async fn get(
    cfg: RestoreConfig,
    key: &[u8],
    at: Point,
    shutdown: &Shutdown,
) -> anyhow::Result<Got> {
    let store = Store::s3(&cfg.store)?;
    let sources = shutdown.or_interrupted(sources(&store)).await?;
    let revision = resolve(&store, &sources, at, &cfg, shutdown).await?;
    let plan = plan::plan(&sources, revision).map_err(|u| anyhow!("{u}"))?;
    let wanted = key.to_vec();
    let base_revision = plan.base_revision;
    let from_segments = over_segments(
        &store,
        &plan,
        plan.segments.clone(),
        &cfg,
        shutdown,
        move |next| {
            let mut state: Option<(Kind, KeyValue)> = None;
            revisions_between(next, base_revision, revision, |r| {
                for e in r.events {
                    if e.kv.key == wanted {
                        state = Some((e.kind, e.kv));
                    }
                }
            })?;
            Ok(state)
        },
    )
    .await?;
    let found = match from_segments {
        Some((Kind::Put, kv)) => Some(kv),
        Some((Kind::Delete, _)) => None,
        None => {
            let (base, _) = restore_base(&store, &plan, &cfg, shutdown).await?;
            let wanted = key.to_vec();
            tokio::task::spawn_blocking(move || latest_in_base(&base, &wanted))
                .await
                .context("the thread reading the base panicked")??
        }
    };
    Ok(Got {
        key: String::from_utf8_lossy(key).into_owned(),
        revision,
        found: found.map(GotValue::of),
    })
}

/// The newest state of `key` in a snapshot file: a scan of the whole `key` bucket (it is
/// ordered by revision, not by key).
fn latest_in_base(path: &Path, key: &[u8]) -> anyhow::Result<Option<KeyValue>> {
    use crate::snapshot::hashkv::{parse_key, user_key};
    let file = File::open(path)?;
    let len = file.metadata()?.len() - verify::TRAILER_LEN as u64;
    let mut db = crate::snapshot::bbolt::Db::open(&file, len)?;
    let mut latest: Option<(bool, Vec<u8>)> = None;
    db.scan(b"key", b"", &mut |k, v| {
        let bad = |e: crate::snapshot::hashkv::BadEntry| crate::snapshot::bbolt::Corruption::Page {
            page: 0,
            offset: 0,
            what: format!("key bucket: {e}"),
        };
        if user_key(v).map_err(bad)? == key {
            let (_, tomb) = parse_key(k).map_err(bad)?;
            latest = Some((tomb, v.to_vec()));
        }
        Ok(())
    })?;
    match latest {
        Some((false, v)) => Ok(Some(KeyValue::decode(&v)?)),
        _ => Ok(None),
    }
}

/// One change of a key, as `history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub revision: i64,
    pub received: DateTime<Utc>,
    pub key: String,
    pub action: &'static str,
    pub size: usize,
    pub lease: i64,
    pub object: Decoded,
}

/// `history KEY [--prefix] [--since T]`: every change of the key (or the keys under the
/// prefix) in the segments of every generation, oldest first, from the segments alone.
pub async fn history(
    cfg: RestoreConfig,
    key: &[u8],
    prefix: bool,
    since: Option<DateTime<Utc>>,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<HistoryRow>> {
    let store = Store::s3(&cfg.store)?;
    let sources = shutdown.or_interrupted(sources(&store)).await?;
    let mut rows = Vec::new();
    for s in &sources {
        let mut segments = s.segments.clone();
        segments.sort_by_key(|g| (g.first, g.last));
        // A segment stored before T holds only revisions received before it.
        let names: Vec<Name> = segments
            .iter()
            .filter(|g| since.is_none_or(|t| g.uploaded >= t))
            .map(|g| g.name)
            .collect();
        if names.is_empty() {
            continue;
        }
        let plan = Plan {
            generation: s.generation,
            cluster_id: s.cluster_id.clone(),
            base_revision: 0,
            base: String::new(),
            start_base: false,
            segments: Vec::new(),
            revision: 0,
        };
        let (wanted, since_ms) = (key.to_vec(), since.map(|t| t.timestamp_millis()));
        let mut got = over_segments(&store, &plan, names, &cfg, shutdown, move |next| {
            let mut rows = Vec::new();
            let mut seen = 0;
            while let Some(rec) = next()? {
                let Record::Revision(r) = rec else { continue };
                // Segments of two writers may overlap: each revision once.
                if r.revision <= seen || since_ms.is_some_and(|t| r.received_ms < t) {
                    continue;
                }
                seen = r.revision;
                for e in r.events {
                    let hit = if prefix {
                        e.kv.key.starts_with(&wanted)
                    } else {
                        e.kv.key == wanted
                    };
                    if hit {
                        rows.push(HistoryRow {
                            revision: r.revision,
                            received: DateTime::from_timestamp_millis(r.received_ms)
                                .unwrap_or_default(),
                            key: String::from_utf8_lossy(&e.kv.key).into_owned(),
                            action: match e.kind {
                                Kind::Put => "put",
                                Kind::Delete => "delete",
                            },
                            size: e.kv.value.len(),
                            lease: e.kv.lease,
                            object: k8s::decode(&e.kv.value),
                        });
                    }
                }
            }
            Ok(rows)
        })
        .await?;
        rows.append(&mut got);
    }
    Ok(rows)
}

/// One key `diff` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    pub key: String,
    pub change: Change,
    /// The revision of its last change in the range.
    pub revision: i64,
}

/// `diff P1 P2 [--prefix P]`: the keys whose state differs between the two points, from the
/// segments between them (one unbroken run of one generation).
pub async fn diff(
    cfg: RestoreConfig,
    from: Point,
    to: Point,
    prefix: &[u8],
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<DiffRow>> {
    let store = Store::s3(&cfg.store)?;
    let sources = shutdown.or_interrupted(sources(&store)).await?;
    let r1 = resolve(&store, &sources, from, &cfg, shutdown).await?;
    let r2 = resolve(&store, &sources, to, &cfg, shutdown).await?;
    if r2 < r1 {
        bail!("the second point (revision {r2}) is before the first (revision {r1})");
    }
    let plan = plan::span(&sources, r1, r2).map_err(|u| anyhow!("{u}"))?;
    let prefix = prefix.to_vec();
    over_segments(
        &store,
        &plan,
        plan.segments.clone(),
        &cfg,
        shutdown,
        move |next| {
            let mut changes = Changes::new(r1);
            revisions_between(next, r1, r2, |r| {
                for e in &r.events {
                    if e.kv.key.starts_with(&prefix) {
                        changes.observe(r.revision, e);
                    }
                }
            })?;
            Ok(changes
                .finish()
                .into_iter()
                .map(|(k, change, revision)| DiffRow {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    change,
                    revision,
                })
                .collect())
        },
    )
    .await
}

/// One base of a generation rebuilt from the base before it, against the later base itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossCheck {
    pub generation: String,
    pub from: i64,
    pub to: i64,
    /// The later base's HashKV at its revision, and the rebuilt file's with the same compact
    /// revision.
    pub base_hash_kv: Option<u32>,
    pub rebuilt_hash_kv: Option<u32>,
    pub compact_revision: Option<i64>,
    /// `ok`, or what differs or could not be computed.
    pub verdict: String,
}

impl CrossCheck {
    pub fn ok(&self) -> bool {
        self.verdict == "ok"
    }
}

/// `list --generations --check`: every base that the base before it reaches through whole
/// segments is rebuilt offline from that base and compared with itself by HashKV: a proof,
/// without etcd, that the segments between them hold every change.
pub async fn cross_check(
    cfg: RestoreConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<CrossCheck>> {
    use crate::snapshot::hashkv;
    let store = Store::s3(&cfg.store)?;
    let sources = shutdown.or_interrupted(sources(&store)).await?;
    let mut out = Vec::new();
    for plan in plan::pairs(&sources) {
        let later = Plan {
            base_revision: plan.revision,
            base: base_name(&sources, &plan),
            ..plan.clone()
        };
        let (_later_file, later_verified) = restore_base(&store, &later, &cfg, shutdown).await?;
        let scratch = tempfile::tempfile_in(&cfg.tmp_dir)
            .with_context(|| format!("creating a scratch file in {}", cfg.tmp_dir.display()))?;
        let (_, (file, _)) = rebuild_plan(
            &store,
            &plan,
            &cfg,
            None,
            scratch,
            "a scratch file".into(),
            shutdown,
        )
        .await?;
        let theirs = later_verified.status.hash_kv;
        let ours = match theirs {
            Some(t) => {
                let len = file.metadata()?.len() - verify::TRAILER_LEN as u64;
                let (rev, compact) = (plan.revision, t.compact_revision);
                tokio::task::spawn_blocking(move || hashkv::hash_at(&file, len, rev, compact))
                    .await??
                    .ok()
            }
            None => None,
        };
        let verdict = match (theirs, ours) {
            (Some(t), Some(o)) if t.hash == o.hash => "ok".to_string(),
            (Some(t), Some(o)) => format!(
                "HashKV differs: the base at {} has {}, rebuilt from the base at {} it is {}: the segments between them do not hold every change",
                plan.revision, t.hash, plan.base_revision, o.hash
            ),
            _ => format!(
                "not compared: a HashKV could not be computed ({})",
                later_verified
                    .status
                    .hash_kv_skipped
                    .unwrap_or_else(|| "too many keys since the last compaction".into())
            ),
        };
        out.push(CrossCheck {
            generation: plan.generation.to_string(),
            from: plan.base_revision,
            to: plan.revision,
            base_hash_kv: theirs.map(|t| t.hash),
            rebuilt_hash_kv: ours.map(|o| o.hash),
            compact_revision: theirs.map(|t| t.compact_revision),
            verdict,
        });
    }
    Ok(out)
}

/// The backup name of the base at `plan.revision` in its generation.
fn base_name(sources: &[Source], plan: &Plan) -> String {
    sources
        .iter()
        .filter(|s| s.generation == plan.generation)
        .flat_map(|s| &s.bases)
        .find(|b| b.0 == plan.revision)
        .map(|b| b.1.clone())
        .unwrap_or_default()
}
