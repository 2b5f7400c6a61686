//! etcd's HashKV, computed from a snapshot file: the number a member returns for
//! `HashKV(revision)`, so that a backup can be compared with every member of the cluster.
//!
//! The server's rule (etcd `server/mvcc/hash.go`, `kvHasher.WriteKeyValue`, v3.5.5 and later;
//! 3.4 and 3.5.0-3.5.4 compute the same inside `kvstore.go HashByRev`): CRC-32C (Castagnoli)
//! over the bucket name `key`, then over the raw key and value of each entry of the `key`
//! bucket in ascending revision order, where an entry at revision `r` counts unless
//!
//! 1. `r.main > R` (the revision asked for);
//! 2. `r.main <= C` (the compact revision), `keep` is not empty, and `r` is not in `keep`;
//! 3. `r.main == C` and the entry is a tombstone (v3.5.16: keeps the hash of a database whose
//!    tombstone at `C` survived equal to one whose tombstone was compacted away; a 3.4 or older
//!    3.5 database has no such entry, so the rule changes nothing there).
//!
//! `keep` is, for each user key, its latest revision at or below `R` unless that revision is a
//! tombstone. `C` of a file is the larger of the `meta` bucket's `finishedCompactRev` and
//! `scheduledCompactRev` (what a member opening the file would use), or -1 without either.
//!
//! **The memory bound.** Rule 2 needs, for an entry at or below `C`, whether it is the latest
//! revision of its user key. The entries are walked in revision order, so the answer comes from
//! a first pass over the tail of the bucket only: the entries above `F`, the revision of the
//! last *finished* compaction. A finished compaction leaves at most one revision at or below
//! `F` per user key, so a key with no revision above `F` has its only one below it, and that
//! one is its latest. The first pass records, for each user key written above `F`, the latest
//! such revision under a 128-bit keyed fingerprint of the key ([`Latest`]): 40 bytes per
//! distinct key in the map's slots, about 64 with the map's spare capacity, so at most
//! [`MAX_TRACKED`] keys, 32 MiB. That is the set of keys written since the last compaction,
//! which Kubernetes runs every five minutes. A database never compacted needs no pass and no
//! map (nothing is filtered). A database with more is not hashed (the reason is reported, and
//! the backup is not blocked by it). Nothing else grows with the database:
//! the second pass keeps two running CRCs, one as if `keep` were empty (the server does not
//! filter then) and one filtering, and picks one at the end.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use serde::Serialize;

use crate::snapshot::bbolt::{self, Corruption, Db, EntryFn};

/// At most this many distinct user keys written since the last finished compaction are
/// tracked (see the module's memory bound).
pub const MAX_TRACKED: usize = 500_000;

/// A HashKV as etcd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HashKv {
    #[serde(rename = "hashKV")]
    pub hash: u32,
    /// The compact revision the hash was computed with (-1: never compacted).
    #[serde(rename = "hashKVCompactRevision")]
    pub compact_revision: i64,
    /// The revision hashed.
    #[serde(rename = "hashKVRevision")]
    pub revision: i64,
}

/// Why a file's HashKV could not be computed, although the file is a sound database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("more than {MAX_TRACKED} keys were written since the last finished compaction (revision {finished}); HashKV is not computed (compact etcd more often)")]
    TooManyKeys { finished: i64 },
}

/// The compaction state recorded in the `meta` bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    pub finished: Option<i64>,
    pub scheduled: Option<i64>,
}

impl Compaction {
    /// The compact revision a member opening the file uses: -1 when never compacted.
    pub fn revision(&self) -> i64 {
        self.finished.max(self.scheduled).unwrap_or(-1)
    }

    /// The last compaction that completed, below which each user key has one revision.
    pub fn finished(&self) -> i64 {
        self.finished.unwrap_or(-1)
    }
}

/// A revision as the `key` bucket stores it: (main, sub), and whether the key marks a
/// tombstone (an 18th byte `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

/// An entry of the `key` or `meta` bucket that bbolt accepts but etcd could not have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEntry {
    #[error("key bucket holds a {0}-byte key; etcd's are 17 or 18 bytes")]
    ShortKey(usize),
    #[error("key bucket holds a nested bucket")]
    NestedBucket,
    #[error("a compact revision of {0} bytes")]
    ShortRevision(usize),
    #[error("a truncated varint")]
    TruncatedVarint,
    #[error("a varint longer than 10 bytes")]
    LongVarint,
    #[error("wire type {0} in a KeyValue")]
    WireType(u64),
    #[error("a field longer than the value")]
    LongField,
}

/// Reads a `key` bucket key as etcd's `bytesToRev` does (big-endian; a value above `i64::MAX`
/// wraps as Go's `int64(...)` conversion does). Shorter than 17 bytes: etcd would panic, we
/// report it.
pub fn parse_key(k: &[u8]) -> Result<(Rev, bool), BadEntry> {
    if k.len() < 17 {
        return Err(BadEntry::ShortKey(k.len()));
    }
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes")) as i64;
    let rev = Rev {
        main: be(&k[..8]),
        sub: be(&k[9..17]),
    };
    Ok((rev, k.len() == 18 && k[17] == b't'))
}

/// The first 8 bytes of a revision value in the `meta` bucket, as `bytesToRev(v).main`.
fn meta_revision(v: &[u8]) -> Result<i64, BadEntry> {
    v.get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")) as i64)
        .ok_or(BadEntry::ShortRevision(v.len()))
}

/// The user key of an `mvccpb.KeyValue` (field 1), reading only as far as needed. A message
/// without the field has the empty key, as protobuf reads it.
pub fn user_key(v: &[u8]) -> Result<&[u8], BadEntry> {
    fn varint(v: &[u8], at: &mut usize) -> Result<u64, BadEntry> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *v.get(*at).ok_or(BadEntry::TruncatedVarint)?;
            *at += 1;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(BadEntry::LongVarint)
    }
    let mut at = 0;
    while at < v.len() {
        let tag = varint(v, &mut at)?;
        let len = match tag & 7 {
            0 => {
                varint(v, &mut at)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => varint(v, &mut at)?,
            w => return Err(BadEntry::WireType(w)),
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|n| at.checked_add(n))
            .filter(|&end| end <= v.len())
            .ok_or(BadEntry::LongField)?;
        if tag == (1 << 3) | 2 {
            return Ok(&v[at..end]);
        }
        at = end;
    }
    Ok(&[])
}

/// The latest revision at or below `R`, for each user key written after the last finished
/// compaction, under a keyed 128-bit fingerprint (two independent random SipHash keys: a
/// collision needs about 2^64 keys, and nobody can aim for one).
pub struct Latest {
    keys: (RandomState, RandomState),
    map: HashMap<u128, (Rev, bool)>,
}

impl Latest {
    fn new() -> Latest {
        Latest {
            keys: (RandomState::new(), RandomState::new()),
            map: HashMap::new(),
        }
    }

    fn fingerprint(&self, key: &[u8]) -> u128 {
        (u128::from(self.keys.0.hash_one(key)) << 64) | u128::from(self.keys.1.hash_one(key))
    }
}

/// Runs `f` over the `key` bucket entries from main revision `from` on (all of them with
/// `None`), turning its message into corruption.
fn scan_keys(
    file: &dyn bbolt::ReadAt,
    db_len: u64,
    from: Option<i64>,
    f: &mut EntryFn<'_, BadEntry>,
) -> Result<(), Corruption> {
    let mut db = Db::open(file, db_len)?;
    let mut start = Vec::with_capacity(17);
    if let Some(from) = from {
        start.extend_from_slice(&(from.max(0) as u64).to_be_bytes());
        start.push(b'_');
        start.extend_from_slice(&[0; 8]);
    }
    db.scan(b"key", &start, &mut |k, v| {
        f(k, v).map_err(|what| in_bucket("key", what))
    })?;
    Ok(())
}

/// A problem with an entry of `bucket` that bbolt itself accepts.
fn in_bucket(bucket: &str, what: BadEntry) -> Corruption {
    Corruption::Page {
        page: 0,
        offset: 0,
        what: format!("{bucket} bucket: {what}"),
    }
}

/// Reads the compaction state from the `meta` bucket.
pub fn compaction(file: &dyn bbolt::ReadAt, db_len: u64) -> Result<Compaction, Corruption> {
    let mut db = Db::open(file, db_len)?;
    let mut c = Compaction::default();
    db.scan(b"meta", b"", &mut |k, v| {
        let slot = match k {
            b"finishedCompactRev" => &mut c.finished,
            b"scheduledCompactRev" => &mut c.scheduled,
            _ => return Ok(()),
        };
        *slot = Some(meta_revision(v).map_err(|what| in_bucket("meta", what))?);
        Ok(())
    })?;
    Ok(c)
}

/// The first pass: [`Latest`] for the entries above `finished` and at or below `rev`. Without
/// a compaction (`compact` < 0) rule 2 filters nothing, so nothing is read or kept.
pub fn track(
    file: &dyn bbolt::ReadAt,
    db_len: u64,
    finished: i64,
    compact: i64,
    rev: i64,
) -> Result<Result<Latest, Skipped>, Corruption> {
    let mut latest = Latest::new();
    if compact < 0 {
        return Ok(Ok(latest));
    }
    let mut too_many = false;
    scan_keys(
        file,
        db_len,
        Some(finished.saturating_add(1)),
        &mut |k, v| {
            let (r, tomb) = parse_key(k)?;
            if r.main <= finished || r.main > rev || too_many {
                return Ok(());
            }
            let fp = latest.fingerprint(user_key(v)?);
            if latest.map.len() >= MAX_TRACKED && !latest.map.contains_key(&fp) {
                too_many = true;
                latest.map = HashMap::new();
                return Ok(());
            }
            latest.map.insert(fp, (r, tomb));
            Ok(())
        },
    )?;
    Ok(if too_many {
        Err(Skipped::TooManyKeys { finished })
    } else {
        Ok(latest)
    })
}

/// The second pass, entry by entry in bucket order: the rule of the module doc.
pub struct Hasher<'a> {
    rev: i64,
    compact: i64,
    finished: i64,
    latest: &'a Latest,
    /// As the server hashes when `keep` is not empty, and when it is.
    filtered: u32,
    unfiltered: u32,
    keep_is_empty: bool,
}

impl<'a> Hasher<'a> {
    /// Hashes at revision `rev` with compact revision `compact`; `latest` must come from
    /// [`track`] with the file's finished compaction `finished` and the same `rev`.
    pub fn new(rev: i64, compact: i64, finished: i64, latest: &'a Latest) -> Hasher<'a> {
        let start = crc32c::crc32c(b"key");
        Hasher {
            rev,
            compact,
            finished,
            latest,
            filtered: start,
            unfiltered: start,
            // Keys written since the compaction whose latest revision is not a tombstone.
            keep_is_empty: !latest.map.values().any(|&(_, tomb)| !tomb),
        }
    }

    pub fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<(), BadEntry> {
        let (r, tomb) = parse_key(k)?;
        if r.main > self.rev || (r.main == self.compact && tomb) {
            return Ok(());
        }
        let mut kept = true;
        if r.main <= self.compact {
            let fp = self.latest.fingerprint(user_key(v)?);
            let is_latest = match self.latest.map.get(&fp) {
                Some(&(newest, _)) => newest == r,
                // No revision after the finished compaction: this is the key's only one
                // below it (or an older one still awaiting the scheduled compaction's delete,
                // which cannot be: those are above `finished` and so tracked).
                None => r.main <= self.finished,
            };
            kept = is_latest && !tomb;
            if kept {
                self.keep_is_empty = false;
            }
        }
        self.unfiltered = crc32c::crc32c_append(crc32c::crc32c_append(self.unfiltered, k), v);
        if kept {
            self.filtered = crc32c::crc32c_append(crc32c::crc32c_append(self.filtered, k), v);
        }
        Ok(())
    }

    pub fn finish(self) -> HashKv {
        HashKv {
            hash: if self.keep_is_empty {
                self.unfiltered
            } else {
                self.filtered
            },
            compact_revision: self.compact,
            revision: self.rev,
        }
    }
}

/// HashKV of the database in the first `db_len` bytes of `file` at revision `rev`, with the
/// compact revision `compact` (the file's own, or a member's later one: see the module doc).
pub fn hash_at(
    file: &dyn bbolt::ReadAt,
    db_len: u64,
    rev: i64,
    compact: i64,
) -> Result<Result<HashKv, Skipped>, Corruption> {
    let finished = compaction(file, db_len)?.finished();
    let latest = match track(file, db_len, finished, compact, rev)? {
        Ok(l) => l,
        Err(skipped) => return Ok(Err(skipped)),
    };
    let mut h = Hasher::new(rev, compact, finished, &latest);
    scan_keys(file, db_len, None, &mut |k, v| h.entry(k, v))?;
    Ok(Ok(h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_etcd_reads_them() {
        let mut k = Vec::new();
        k.extend_from_slice(&35u64.to_be_bytes());
        k.push(b'_');
        k.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(parse_key(&k), Ok((Rev { main: 35, sub: 2 }, false)));
        k.push(b't');
        assert_eq!(parse_key(&k), Ok((Rev { main: 35, sub: 2 }, true)));
        assert!(parse_key(&k[..16]).is_err());
    }

    #[test]
    fn the_user_key_is_field_one_wherever_it_is() {
        // key "ab", create_revision 2: as gogo-proto writes it.
        assert_eq!(user_key(&[0x0a, 2, b'a', b'b', 0x10, 2]), Ok(&b"ab"[..]));
        // Field 1 after another field, and no field 1 at all.
        assert_eq!(user_key(&[0x10, 2, 0x0a, 1, b'z']), Ok(&b"z"[..]));
        assert_eq!(user_key(&[0x10, 2]), Ok(&b""[..]));
        // Hostile: a length past the end, a runaway varint, an unknown wire type.
        assert!(user_key(&[0x0a, 5, b'a']).is_err());
        assert!(user_key(&[
            0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ])
        .is_err());
        assert!(user_key(&[0x0b]).is_err());
    }

    /// etcd's `testutil.PickKey`.
    fn pick_key(i: i64) -> &'static str {
        if i % 142 == 30 {
            return "zenek";
        }
        if i % 71 == 30 {
            return "xavery";
        }
        [
            "alice",
            "bob",
            "celine",
            "dominik",
            "eve",
            "frederica",
            "gorge",
        ][(i % 7) as usize]
    }

    fn varint(out: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            out.push(x as u8 | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    /// The `key` bucket entries of etcd's `putKVs(s, 0, 71)`: `PickKey(i) = i` at revision
    /// `i + 2`, values as gogo-proto writes a `KeyValue` (fields in order, zeros left out).
    fn put_kvs() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut first: HashMap<&str, (i64, i64)> = HashMap::new();
        (0..=71i64)
            .map(|i| {
                let (key, rev) = (pick_key(i), i + 2);
                let e = first.entry(key).or_insert((rev, 0));
                e.1 += 1;
                let (create, version) = *e;
                let value = i.to_string();
                let mut v = vec![0x0a];
                varint(&mut v, key.len() as u64);
                v.extend_from_slice(key.as_bytes());
                for (tag, n) in [(0x10, create), (0x18, rev), (0x20, version)] {
                    v.push(tag);
                    varint(&mut v, n as u64);
                }
                v.push(0x2a);
                varint(&mut v, value.len() as u64);
                v.extend_from_slice(value.as_bytes());
                let mut k = (rev as u64).to_be_bytes().to_vec();
                k.push(b'_');
                k.extend_from_slice(&0u64.to_be_bytes());
                (k, v)
            })
            .collect()
    }

    #[test]
    fn a_file_never_compacted_is_not_tracked_at_all() {
        let db =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/medium.db")).unwrap();
        let len = db.len() as u64 - 32;
        let file: &[u8] = &db;
        let c = compaction(&file, len).unwrap();
        assert_eq!(c.revision(), -1, "the golden file was never compacted");
        let none = track(&file, len, -1, -1, i64::MAX).unwrap().unwrap();
        assert!(none.map.is_empty());
        // Had it been compacted at revision 0, every key would be tracked.
        let all = track(&file, len, -1, 0, i64::MAX).unwrap().unwrap();
        assert!(all.map.len() > 100, "{}", all.map.len());
    }

    #[test]
    fn etcds_own_vectors() {
        // etcd `server/storage/mvcc/hash_test.go`: TestHashByRevValue and
        // TestHashByRevValueLastRevision (never compacted).
        let latest = Latest::new();
        for (rev, want) in [(35, 4082599214), (73, 1913897190)] {
            let mut h = Hasher::new(rev, -1, -1, &latest);
            for (k, v) in put_kvs() {
                h.entry(&k, &v).unwrap();
            }
            let got = h.finish();
            assert_eq!(
                got,
                HashKv {
                    hash: want,
                    compact_revision: -1,
                    revision: rev
                }
            );
        }
    }

    #[test]
    fn compaction_filters_superseded_revisions_and_the_tombstone_at_the_compact_revision() {
        // Revisions 2..=73 as above, compacted at 40 (finished, so each key keeps its latest
        // revision at or below 40 only). Hash the compacted entries with the rule and compare
        // with the uncompacted entries hashed with the rule: equal, as etcd's compaction
        // tests require of HashKV before and after a compaction.
        let all = put_kvs();
        let key_of = |v: &[u8]| user_key(v).unwrap().to_vec();
        let rev_of = |k: &[u8]| parse_key(k).unwrap().0.main;
        let compacted: Vec<_> = all
            .iter()
            .filter(|(k, v)| {
                let r = rev_of(k);
                r > 40
                    || !all.iter().any(|(k2, v2)| {
                        key_of(v2) == key_of(v) && rev_of(k2) > r && rev_of(k2) <= 40
                    })
            })
            .cloned()
            .collect();
        assert!(compacted.len() < all.len());
        let hash = |entries: &[(Vec<u8>, Vec<u8>)], finished: i64| {
            let mut latest = Latest::new();
            for (k, v) in entries {
                let (r, tomb) = parse_key(k).unwrap();
                if r.main > finished {
                    let fp = latest.fingerprint(user_key(v).unwrap());
                    latest.map.insert(fp, (r, tomb));
                }
            }
            let mut h = Hasher::new(73, 40, finished, &latest);
            for (k, v) in entries {
                h.entry(k, v).unwrap();
            }
            h.finish().hash
        };
        // Scheduled but not finished (every old revision still there) and finished.
        assert_eq!(hash(&all, -1), hash(&compacted, 40));
        // A tombstone at the compact revision does not count.
        let mut with_tomb = compacted.clone();
        let mut k = 40u64.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&1u64.to_be_bytes());
        k.push(b't');
        with_tomb.push((k, vec![0x0a, 3, b'z', b'z', b'z']));
        with_tomb.sort();
        assert_eq!(hash(&with_tomb, 40), hash(&compacted, 40));
    }
}
