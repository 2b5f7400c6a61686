//! The database at a revision, written offline: a base snapshot's buckets copied as they are,
//! the `key` bucket extended by the segments' revisions, the leases first seen after the base
//! added. No etcd server runs, so nothing can revoke a lease or add a revision during the
//! rebuild (what makes a replay into a temporary etcd drift: gardener/etcd-backup-restore
//! issues #1045, #1046).
//!
//! etcd's `key` bucket is keyed by revision (`{main u64 BE}_{sub u64 BE}`, `t` appended for a
//! delete), so every revision after the base sorts after every entry of it: the bucket is the
//! base's entries followed by the new ones, which [`crate::snapshot::build`] writes as a stream.
//! A put stores etcd's `KeyValue` bytes as the segment recorded them; a delete stores
//! `KeyValue{key}` under the tombstone mark (etcd `mvcc/kvstore_txn.go`, `put` and `delete`).
//! The sub-revision is the event's place in its revision: etcd numbers a transaction's changes
//! in order, and the watch sends them in that order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;

use anyhow::{bail, Context};

use crate::snapshot::bbolt::{Corruption, Db};
use crate::snapshot::build::{BuildError, Builder};
use crate::stream::kv::KeyValue;
use crate::stream::segment::{Kind, Record};

/// What to rebuild: the base snapshot (its database is the first `base_len` bytes of `base`)
/// at `base_revision`, to `revision`.
pub struct Rebuild<'a> {
    pub base: &'a File,
    pub base_len: u64,
    pub base_revision: i64,
    pub revision: i64,
    /// Mark every revision up to `revision + bump` compacted and continue from there: the
    /// effect of `etcdutl snapshot restore --bump-revision --mark-compacted` (3.5.10 and later),
    /// reached another way that any etcd version honours (both compaction marks at the bumped
    /// revision, where etcdutl writes an empty entry there and schedules a compaction).
    pub bump: Option<i64>,
}

/// What a rebuild wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rebuilt {
    pub revisions: u64,
    pub events: u64,
    pub leases_added: u64,
    /// Leases whose TTL the stream could not learn (they had already gone), restored with 1 s.
    pub leases_unknown: u64,
    pub db_len: u64,
    /// The SHA-256 of the database as written (its trailer).
    pub sha256: [u8; 32],
    /// Seconds spent copying the base's `key` bucket, replaying the segments, and on the rest
    /// (the other buckets, the metas, hashing the file for its trailer).
    pub copy_seconds: f64,
    pub replay_seconds: f64,
    pub finish_seconds: f64,
}

/// The TTL given to a lease the stream saw used but could not ask about (it had already
/// expired or been revoked when asked, seconds after its first use): it goes again at once.
const UNKNOWN_TTL: i64 = 1;

/// A revision as etcd's `key` bucket spells it.
pub fn bucket_key(main: i64, sub: usize, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// etcd's `revToBytes` for the meta bucket's compaction keys.
fn meta_revision(main: i64) -> Vec<u8> {
    bucket_key(main, 0, false)
}

/// `leasepb.Lease{ID, TTL}` as etcd stores it in the `lease` bucket under the big-endian ID.
fn lease_value(id: i64, ttl: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    for (field, v) in [(1u64, id), (2, ttl)] {
        if v != 0 {
            varint(&mut out, field << 3);
            varint(&mut out, v as u64);
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Copies bucket `name` of the base into `b`, entry by entry (each bucket is scanned from a
/// fresh open: the walker reads every page once per open).
fn copy_bucket(
    r: &Rebuild<'_>,
    name: &[u8],
    b: &mut Builder,
    mut each: impl FnMut(&[u8], &[u8], &mut Builder) -> Result<(), BuildError>,
) -> anyhow::Result<()> {
    let mut db = Db::open(r.base, r.base_len)?;
    let mut failed = None;
    let scanned = db.scan(name, b"", &mut |k, v| {
        each(k, v, b).map_err(|e| {
            failed = Some(e);
            Corruption::Io {
                offset: 0,
                error: "stopped".into(),
            }
        })
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    scanned.with_context(|| {
        format!(
            "reading bucket {:?} of the base",
            String::from_utf8_lossy(name)
        )
    })?;
    Ok(())
}

/// Writes the database at `r.revision` to `out`. `records` yields the segments' records in
/// order from the first revision after the base (the caller checks each segment and its
/// chain); every revision must follow the one before, and the run must reach `r.revision`.
pub fn rebuild(
    r: &Rebuild<'_>,
    records: &mut dyn FnMut() -> anyhow::Result<Option<Record>>,
    out: File,
) -> anyhow::Result<(File, Rebuilt)> {
    if r.revision < r.base_revision {
        bail!(
            "revision {} is below the base's {}",
            r.revision,
            r.base_revision
        );
    }
    let mut names: BTreeSet<Vec<u8>> = Db::open(r.base, r.base_len)?
        .buckets()?
        .into_iter()
        .collect();
    names.insert(b"key".to_vec());
    names.insert(b"lease".to_vec());
    if r.bump.is_some() {
        names.insert(b"meta".to_vec());
    }
    let mut b = Builder::new(out)?;
    let mut done = Rebuilt::default();
    let started = std::time::Instant::now();
    let mut ttls: HashMap<i64, i64> = HashMap::new();
    let mut used: BTreeSet<i64> = BTreeSet::new();
    for name in names {
        b.bucket(&name)?;
        match name.as_slice() {
            b"key" => {
                let mut newest = i64::MIN;
                copy_bucket(r, &name, &mut b, |k, v, b| {
                    if let Some(main) = k.get(..8) {
                        newest = i64::from_be_bytes(main.try_into().expect("8 bytes"));
                    }
                    b.put(k, v)
                })?;
                done.copy_seconds = started.elapsed().as_secs_f64();
                if newest > r.base_revision {
                    bail!("the base holds revision {newest}, above the revision {} its record names: it is not the base it claims to be", r.base_revision);
                }
                let mut last = r.base_revision;
                while last < r.revision {
                    let rec = records()?.with_context(|| {
                        format!("the segments end at revision {last}, before {}", r.revision)
                    })?;
                    let rev = match rec {
                        Record::Lease { id, ttl } => {
                            let t = ttls.entry(id).or_insert(ttl);
                            if *t < 0 {
                                *t = ttl;
                            }
                            continue;
                        }
                        Record::Revision(rev) => rev,
                    };
                    // The base's own, or one a second writer's segment repeats.
                    if rev.revision <= last {
                        continue;
                    }
                    if rev.revision != last + 1 {
                        bail!(
                            "the segments jump from revision {last} to {}: they are not whole",
                            rev.revision
                        );
                    }
                    for (sub, e) in rev.events.iter().enumerate() {
                        match e.kind {
                            Kind::Put => {
                                if e.kv.lease != 0 {
                                    used.insert(e.kv.lease);
                                }
                                b.put(&bucket_key(rev.revision, sub, false), &e.kv.encode())?;
                            }
                            Kind::Delete => {
                                let tomb = KeyValue {
                                    key: e.kv.key.clone(),
                                    ..KeyValue::default()
                                };
                                b.put(&bucket_key(rev.revision, sub, true), &tomb.encode())?;
                            }
                        }
                        done.events += 1;
                    }
                    done.revisions += 1;
                    last = rev.revision;
                }
                done.replay_seconds = started.elapsed().as_secs_f64() - done.copy_seconds;
            }
            b"lease" => {
                // The base's leases, and those first used after it, in ID order.
                let mut pending = used
                    .iter()
                    .map(|&id| ((id as u64).to_be_bytes(), id))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .peekable();
                let mut add = |id: i64, b: &mut Builder| {
                    let ttl = match ttls.get(&id) {
                        Some(&t) if t > 0 => t,
                        _ => {
                            done.leases_unknown += 1;
                            UNKNOWN_TTL
                        }
                    };
                    done.leases_added += 1;
                    b.put(&(id as u64).to_be_bytes(), &lease_value(id, ttl))
                };
                copy_bucket(r, &name, &mut b, |k, v, b| {
                    while let Some(&(key, id)) = pending.peek() {
                        if key.as_slice() > k {
                            break;
                        }
                        pending.next();
                        // Equal: the base has it, with its own TTL and remaining time.
                        if key.as_slice() < k {
                            add(id, b)?;
                        }
                    }
                    b.put(k, v)
                })?;
                for (_, id) in pending {
                    add(id, &mut b)?;
                }
            }
            b"meta" if r.bump.is_some() => {
                let mut meta = BTreeMap::new();
                copy_bucket(r, &name, &mut b, |k, v, _| {
                    meta.insert(k.to_vec(), v.to_vec());
                    Ok(())
                })?;
                let to = r.revision + r.bump.unwrap_or(0);
                // etcd restores its current revision as the larger of the newest key and the
                // finished compaction (`mvcc/kvstore.go`, `restore`): both marks at the bumped
                // revision move it there and refuse every older revision as compacted.
                meta.insert(b"finishedCompactRev".to_vec(), meta_revision(to));
                meta.insert(b"scheduledCompactRev".to_vec(), meta_revision(to));
                for (k, v) in meta {
                    b.put(&k, &v)?;
                }
            }
            _ => copy_bucket(r, &name, &mut b, |k, v, b| b.put(k, v))?,
        }
    }
    // The base's transaction id is not needed: bbolt counts on from whatever the meta says.
    let (file, len, sha) = b.finish(2)?;
    (done.db_len, done.sha256) = (len, sha);
    done.finish_seconds = started.elapsed().as_secs_f64() - done.copy_seconds - done.replay_seconds;
    Ok((file, done))
}
