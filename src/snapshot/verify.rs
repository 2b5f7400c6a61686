//! Checks a snapshot two ways, and reports what `etcdutl snapshot status` reports.
//!
//! 1. The SHA-256 trailer: etcd appends the SHA-256 of the database to the snapshot stream.
//!    [`TrailerCheck`] is a pass-through adapter that hashes everything but the last 32 bytes
//!    it has seen, so it works on any chunking of the stream; the trailer stays in the data,
//!    which is what `etcdutl snapshot restore` checks without `--skip-hash-check`.
//! 2. The bbolt walk ([`crate::snapshot::bbolt`]), which computes [`Status`] exactly as etcdutl does:
//!    `hash` is CRC-32C over each bucket's name and then its keys and values in iteration order,
//!    `revision` is the main revision of the last key of the `key` bucket, `totalKey` counts the
//!    entries of every bucket, `totalSize` is the database size from the meta page.
//!
//! The trailer catches any flipped byte; the walk catches a file that was whole when hashed but
//! is not a database (and checks files whose trailer is gone).

use std::fs::File;
use std::io::Read;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::snapshot::bbolt::{self, Corruption, Entry, Visitor};
use crate::snapshot::hashkv::{self, BadEntry, HashKv, Hasher};

pub const TRAILER_LEN: usize = 32;

/// Hashes a stream whose last 32 bytes are the SHA-256 of the bytes before them.
#[derive(Default, Clone)]
pub struct TrailerCheck {
    hasher: Sha256,
    /// The last (at most 32) bytes seen: possibly the trailer, so not hashed yet.
    held: Vec<u8>,
    len: u64,
}

/// The trailer did not match, or the stream was too short to hold one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SHA-256 trailer mismatch: the last 32 bytes are {} but the {} bytes before them hash to {}",
    hex(stored),
    data_len,
    hex(computed)
)]
pub struct TrailerMismatch {
    pub stored: Vec<u8>,
    pub computed: [u8; 32],
    /// The length of the data before the (supposed) trailer.
    pub data_len: u64,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TrailerCheck {
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if chunk.len() >= TRAILER_LEN {
            self.hasher.update(&self.held);
            let (body, tail) = chunk.split_at(chunk.len() - TRAILER_LEN);
            self.hasher.update(body);
            self.held.clear();
            self.held.extend_from_slice(tail);
        } else {
            self.held.extend_from_slice(chunk);
            let excess = self.held.len().saturating_sub(TRAILER_LEN);
            self.hasher.update(&self.held[..excess]);
            self.held.drain(..excess);
        }
    }

    /// Total bytes seen, trailer included.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The verified SHA-256 of the database (equal to the trailer), or the mismatch.
    pub fn finish(self) -> Result<[u8; 32], TrailerMismatch> {
        let computed: [u8; 32] = self.hasher.finalize().into();
        if self.held.len() == TRAILER_LEN && self.held[..] == computed[..] {
            Ok(computed)
        } else {
            Err(TrailerMismatch {
                stored: self.held,
                computed,
                data_len: self.len.saturating_sub(TRAILER_LEN as u64),
            })
        }
    }
}

/// What `etcdutl snapshot status -w json` reports (same field names), and what we add beside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    /// The storage version in the `meta` bucket (written by etcd 3.6 and later).
    #[serde(rename = "storageVersion", skip_serializing_if = "Option::is_none")]
    pub storage_version: Option<String>,
    #[serde(rename = "consistentIndex", skip_serializing_if = "Option::is_none")]
    pub consistent_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(rename = "pageSize")]
    pub page_size: u64,
    pub txid: u64,
    /// etcd's HashKV at the snapshot's revision, with the file's compact revision.
    #[serde(flatten)]
    pub hash_kv: Option<HashKv>,
    /// Why there is no HashKV, for a sound file whose HashKV was not computed.
    #[serde(rename = "hashKVSkipped", skip_serializing_if = "Option::is_none")]
    pub hash_kv_skipped: Option<String>,
    /// The compact revision recorded in the file (the larger of the scheduled and the finished
    /// one; -1 or 0 when never compacted). Not in etcdutl's status.
    #[serde(skip)]
    pub compact_revision: i64,
}

impl Status {
    /// The revision etcd opens the file at: its newest key's, or its compact revision when that
    /// is higher (a compaction at a delete removes the tombstone before etcd's fix #18274, so
    /// the newest key can be older than the compaction).
    pub fn opened_at(&self) -> i64 {
        self.revision.max(self.compact_revision)
    }
}

struct StatusVisitor<'l> {
    crc: u32,
    status: Status,
    short_revision: Option<Vec<u8>>,
    /// HashKV, computed in the same walk (see [`crate::snapshot::hashkv`]).
    kv: Option<Hasher<'l>>,
    kv_error: Option<BadEntry>,
}

impl Visitor for StatusVisitor<'_> {
    fn bucket(&mut self, name: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, name);
    }

    fn entry(&mut self, bucket: &[u8], e: Entry<'_>) {
        self.crc = crc32c::crc32c_append(self.crc, e.key);
        if let Some(v) = e.value {
            self.crc = crc32c::crc32c_append(self.crc, v);
        }
        self.status.total_key += 1;
        if let (b"key", Some(kv), None) = (bucket, &mut self.kv, &self.kv_error) {
            self.kv_error = match e.value {
                Some(v) => kv.entry(e.key, v).err(),
                None => Some(BadEntry::NestedBucket),
            };
        }
        match bucket {
            b"key" => match e.key.get(..8) {
                Some(main) => {
                    self.status.revision = i64::from_be_bytes(main.try_into().expect("8 bytes"))
                }
                None => self.short_revision = Some(e.key.to_vec()),
            },
            b"meta" => {
                let u64_value = || {
                    e.value
                        .and_then(|v| v.try_into().ok())
                        .map(u64::from_be_bytes)
                };
                match e.key {
                    b"consistent_index" => self.status.consistent_index = u64_value(),
                    b"term" => self.status.term = u64_value(),
                    b"storageVersion" => {
                        self.status.storage_version =
                            e.value.map(|v| String::from_utf8_lossy(v).into_owned())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Walks the database in the first `db_len` bytes of `file` and computes its status, HashKV
/// included. Reads the `meta` bucket and the tail of the `key` bucket first (what HashKV needs
/// before the walk), then walks everything once.
pub fn walk(file: &dyn bbolt::ReadAt, db_len: u64) -> Result<Status, Corruption> {
    let compaction = hashkv::compaction(file, db_len)?;
    let (compact, finished) = (compaction.revision(), compaction.finished());
    // No entry lies above the file's last revision, so "every revision" is the snapshot's.
    let tracked = hashkv::track(file, db_len, finished, compact, i64::MAX)?;
    let mut db = bbolt::Db::open(file, db_len)?;
    let meta = db.meta();
    let mut v = StatusVisitor {
        crc: 0,
        status: Status::default(),
        short_revision: None,
        kv: tracked
            .as_ref()
            .ok()
            .map(|latest| Hasher::new(i64::MAX, compact, finished, latest)),
        kv_error: None,
    };
    db.walk(&mut v)?;
    if let Some(key) = v.short_revision {
        return Err(Corruption::Page {
            page: 0,
            offset: 0,
            what: format!(
                "key bucket holds a {}-byte key; revisions are at least 8 bytes",
                key.len()
            ),
        });
    }
    if let Some(bad) = v.kv_error {
        return Err(Corruption::Page {
            page: 0,
            offset: 0,
            what: bad.to_string(),
        });
    }
    // etcd opens a file at the larger of its last revision and its compact revision.
    let revision = v.status.revision.max(compact);
    let hash_kv = v.kv.take().map(|h| HashKv {
        revision,
        ..h.finish()
    });
    let status = v.status;
    let skipped = tracked.as_ref().err().map(|s| s.to_string());
    Ok(Status {
        hash: v.crc,
        total_size: meta.db_size(),
        page_size: meta.page_size,
        txid: meta.txid,
        hash_kv,
        hash_kv_skipped: skipped,
        compact_revision: compact,
        ..status
    })
}

/// Why a snapshot file failed its check.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("no SHA-256 trailer: the file is exactly the {0}-byte database (was it saved by a tool that strips it?)")]
    MissingTrailer(u64),
    #[error(transparent)]
    Trailer(#[from] TrailerMismatch),
    #[error("bbolt check failed: {0}")]
    Corrupt(Corruption),
    #[error("reading the snapshot: {0}")]
    Io(std::io::Error),
}

// By hand, not `#[from]`: the messages above already name the cause, and `#[from]` would
// return it from `source()` too, printing it twice in an error chain.
impl From<Corruption> for Invalid {
    fn from(c: Corruption) -> Self {
        Invalid::Corrupt(c)
    }
}

impl From<std::io::Error> for Invalid {
    fn from(e: std::io::Error) -> Self {
        Invalid::Io(e)
    }
}

/// The result of a full check: the database digest (the trailer) and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sha256: [u8; 32],
    pub status: Status,
}

/// Checks a raw snapshot file whose trailer was already hashed by `trailer` (for example while
/// it was written): the trailer result, then the walk of the bytes before the trailer.
pub fn check_spooled(file: &File, trailer: TrailerCheck) -> Result<Verified, Invalid> {
    let total = trailer.len();
    match trailer.finish() {
        Ok(sha256) => Ok(Verified {
            sha256,
            status: walk(file, total - TRAILER_LEN as u64)?,
        }),
        Err(mismatch) => {
            // Tell a stripped trailer from damage: a whole database with nothing after it.
            if let Ok(db) = bbolt::Db::open(file, total) {
                if db.meta().db_size() == total {
                    return Err(Invalid::MissingTrailer(total));
                }
            }
            Err(mismatch.into())
        }
    }
}

/// Checks a raw snapshot file on disk: hashes it, then walks it.
pub fn check_file(file: &mut File) -> Result<Verified, Invalid> {
    let trailer = copy_hashed(file, &mut std::io::sink()).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => Invalid::Io(e),
    })?;
    check_spooled(file, trailer)
}

/// Which side of a copy failed: the source (a truncated download, corrupt compressed data) or
/// the destination (a full disk).
#[derive(Debug)]
pub enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `from` to `to` in 1 MiB reads, hashing for the trailer check on the way.
pub fn copy_hashed(
    from: &mut dyn Read,
    to: &mut dyn std::io::Write,
) -> Result<TrailerCheck, CopyError> {
    let mut trailer = TrailerCheck::default();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            return Ok(trailer);
        }
        trailer.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: &[u8]) -> Vec<u8> {
        let mut s = body.to_vec();
        s.extend_from_slice(&Sha256::digest(body));
        s
    }

    #[test]
    fn trailer_checks_at_every_chunk_boundary() {
        let body: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let s = stream(&body);
        let want: [u8; 32] = Sha256::digest(&body).into();
        for chunk in 1..=s.len() {
            let mut t = TrailerCheck::default();
            s.chunks(chunk).for_each(|c| t.update(c));
            assert_eq!(t.finish(), Ok(want), "chunk size {chunk}");
        }
        // Two-way splits at every offset, including splits inside the trailer.
        for cut in 0..=s.len() {
            let mut t = TrailerCheck::default();
            t.update(&s[..cut]);
            t.update(&s[cut..]);
            assert_eq!(t.finish(), Ok(want), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_fails() {
        let s = stream(b"a small database, and then its hash");
        for i in 0..s.len() {
            let mut bad = s.clone();
            bad[i] ^= 0x01;
            let mut t = TrailerCheck::default();
            t.update(&bad);
            assert!(t.finish().is_err(), "flip at {i} passed");
        }
    }

    #[test]
    fn missing_or_short_trailer_fails() {
        let body = vec![7u8; 100];
        let mut t = TrailerCheck::default();
        t.update(&body);
        let err = t.finish().unwrap_err();
        assert_eq!(err.data_len, 68);
        let mut t = TrailerCheck::default();
        t.update(&[1, 2, 3]);
        assert!(t.finish().is_err());
        assert!(TrailerCheck::default().finish().is_err());
    }
}
