//! A segment: the revisions a stream received in one interval, stored as one object.
//!
//! The plaintext, before zstd and (with recipients) age:
//!
//! ```text
//! MAGIC                      16 bytes, "etcd-backup-seg1"
//! header length, header      u32 big-endian, then JSON (Header), at most 64 KiB
//! records, each a tag byte:
//!   1 REVISION  i64 revision, i64 received (Unix ms), u32 events, then per event:
//!               u8 kind (0 put, 1 delete), u32 length, etcd's KeyValue protobuf
//!   2 LEASE     i64 lease id, i64 granted TTL in seconds (-1: it had expired when asked)
//!   0 END       then the SHA-256 of every byte before it (32 bytes), then nothing
//! ```
//!
//! A signed segment (the stream has BACKUP_SIGNING_KEY_FILE) starts with [`MAGIC_SIGNED`]
//! instead, and after the SHA-256 holds a u32 length and an armored SSH signature (namespace
//! `etcd-backup-segment`) of [`signed_message`]: the header as stored and that SHA-256, so it
//! vouches for every byte of the segment. It sits inside the segment rather than beside it: no
//! second PUT every interval, and nothing to lose or mismatch apart from its segment.
//!
//! Integers are big-endian. The header names the generation, the first and last revision and
//! the SHA-256 of the previous segment's stored object, which chains the segments of a
//! generation. [`Reader`] treats every byte as hostile: it checks lengths against fixed limits
//! before allocating, that the revisions run from `first` to `last` one by one, that each
//! event belongs to its revision, the counts the header gives, and the hash at the end.

use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kv::{BadKeyValue, KeyValue};
use crate::sign::{SigningKey, MAX_SIGNATURE, SEGMENT_NAMESPACE};

pub const MAGIC: &[u8; 16] = b"etcd-backup-seg1";
pub const MAGIC_SIGNED: &[u8; 16] = b"etcd-backup-seg2";
const MAX_HEADER: u32 = 64 << 10;
/// A key and value are at most etcd's request limit (1.5 MiB by default, `--max-request-bytes`,
/// which etcd advises to keep under 10 MiB); this leaves room for any sane setting.
pub const MAX_KV: u32 = 64 << 20;
/// One revision's events in all: a DeleteRange of a million keys is about 100 MiB of events.
pub const MAX_REVISION: u64 = 256 << 20;

const END: u8 = 0;
const REVISION: u8 = 1;
const LEASE: u8 = 2;

/// What a segment says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub generation: String,
    pub cluster_id: String,
    pub first: i64,
    pub last: i64,
    pub revisions: u64,
    pub events: u64,
    /// Hex SHA-256 of the previous segment's stored object; the generation's base for the
    /// first segment (`base:` and the base revision).
    pub previous: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub kv: KeyValue,
}

/// Every event of one revision, and when the stream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub revision: i64,
    pub received_ms: i64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Revision(Revision),
    /// A lease first seen in this segment, with the TTL it was granted.
    Lease {
        id: i64,
        ttl: i64,
    },
}

/// The records of a segment being filled, on a scratch file (a revision can be larger than
/// memory should hold), with what its header will say.
pub struct Records {
    file: BufWriter<tempfile::NamedTempFile>,
    pub bytes: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub revisions: u64,
    pub events: u64,
}

impl Records {
    pub fn new(dir: &Path) -> Result<Records, crate::scratch::ScratchError> {
        Ok(Records {
            file: BufWriter::new(crate::scratch::file(dir, ".records")?),
            bytes: 0,
            first: None,
            last: None,
            revisions: 0,
            events: 0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.revisions == 0
    }

    pub fn push(&mut self, record: &Record) -> io::Result<()> {
        let mut b = Vec::new();
        encode(record, &mut b);
        self.file.write_all(&b)?;
        self.bytes += b.len() as u64;
        if let Record::Revision(r) = record {
            self.first.get_or_insert(r.revision);
            self.last = Some(r.revision);
            self.revisions += 1;
            self.events += r.events.len() as u64;
        }
        Ok(())
    }

    /// Writes the whole segment (magic, `header`, the records, the end, and with `signing` the
    /// signature) to `out`.
    pub fn seal(
        self,
        header: &Header,
        signing: Option<&SigningKey>,
        out: impl Write,
    ) -> io::Result<()> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        let mut out = HashWriter::new(out);
        out.write_all(if signing.is_some() {
            MAGIC_SIGNED
        } else {
            MAGIC
        })?;
        let h = serde_json::to_vec(header).map_err(io::Error::other)?;
        out.write_all(&(h.len() as u32).to_be_bytes())?;
        out.write_all(&h)?;
        io::copy(&mut file, &mut out)?;
        out.write_all(&[END])?;
        let sha: [u8; 32] = out.sha.clone().finalize().into();
        out.inner.write_all(&sha)?;
        if let Some(key) = signing {
            let sig = key
                .sign_in(SEGMENT_NAMESPACE, &signed_message(&h, &sha))
                .map_err(io::Error::other)?;
            out.inner.write_all(&(sig.len() as u32).to_be_bytes())?;
            out.inner.write_all(sig.as_bytes())?;
        }
        out.inner.flush()
    }
}

/// What a segment's signature signs: its header as stored and the SHA-256 of its plaintext up
/// to its end, each on a line (`ssh-keygen -Y verify -n etcd-backup-segment` checks it).
pub fn signed_message(header: &[u8], sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = header.to_vec();
    m.push(b'\n');
    m.extend_from_slice(crate::snapshot::verify::hex(sha256).as_bytes());
    m.push(b'\n');
    m
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashWriter<W> {
    pub inner: W,
    pub sha: Sha256,
    pub len: u64,
}

impl<W> HashWriter<W> {
    pub fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Revision(r) => {
            out.push(REVISION);
            out.extend_from_slice(&r.revision.to_be_bytes());
            out.extend_from_slice(&r.received_ms.to_be_bytes());
            out.extend_from_slice(&(r.events.len() as u32).to_be_bytes());
            for e in &r.events {
                out.push(match e.kind {
                    Kind::Put => 0,
                    Kind::Delete => 1,
                });
                let kv = e.kv.encode();
                out.extend_from_slice(&(kv.len() as u32).to_be_bytes());
                out.extend_from_slice(&kv);
            }
        }
        Record::Lease { id, ttl } => {
            out.push(LEASE);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
        }
    }
}

/// Why a segment cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BadSegment {
    #[error("reading it: {0}")]
    Io(#[source] io::Error),
    #[error("it does not start with the segment magic")]
    Magic,
    #[error("its header is {0} bytes, more than a header can be")]
    HeaderTooLarge(u32),
    #[error("its header is not valid: {0}")]
    Header(String),
    #[error("unknown record tag {0}")]
    Tag(u8),
    #[error("an event of revision {revision} is {len} bytes, more than etcd allows")]
    KvTooLarge { revision: i64, len: u32 },
    #[error("revision {0} holds more event bytes than a revision can")]
    RevisionTooLarge(i64),
    #[error("unknown event kind {0}")]
    EventKind(u8),
    #[error("an event of revision {revision}: {error}")]
    KeyValue { revision: i64, error: BadKeyValue },
    #[error("revision {got} follows {after}: the revisions of a segment run one by one")]
    Sequence { after: i64, got: i64 },
    #[error("revision {revision} holds an event of revision {event}")]
    Misfiled { revision: i64, event: i64 },
    #[error("revision {0} has no events")]
    Empty(i64),
    #[error("it ends at revision {got:?}, counting {revisions} revisions and {events} events, where its header says {first}..{last}, {header_revisions} and {header_events}")]
    Counts {
        got: Option<i64>,
        revisions: u64,
        events: u64,
        first: i64,
        last: i64,
        header_revisions: u64,
        header_events: u64,
    },
    #[error("its SHA-256 does not match its contents: damaged")]
    Hash,
    #[error("bytes follow its end")]
    Trailing,
    #[error("its signature is {0} bytes, more than a signature can be")]
    SignatureTooLarge(u32),
}

/// Reads a segment's plaintext record by record.
pub struct Reader<R> {
    inner: R,
    sha: Sha256,
    header: Header,
    /// The header as stored, for the signature.
    header_bytes: Vec<u8>,
    /// Whether the magic says a signature follows the end.
    signed: bool,
    /// After the end: the message the signature signs, and the signature.
    signature: Option<(Vec<u8>, Vec<u8>)>,
    last: Option<i64>,
    revisions: u64,
    events: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the magic and the header.
    pub fn new(inner: R) -> Result<Reader<R>, BadSegment> {
        let mut r = Reader {
            inner,
            sha: Sha256::new(),
            header: Header {
                generation: String::new(),
                cluster_id: String::new(),
                first: 0,
                last: 0,
                revisions: 0,
                events: 0,
                previous: String::new(),
            },
            header_bytes: Vec::new(),
            signed: false,
            signature: None,
            last: None,
            revisions: 0,
            events: 0,
            done: false,
        };
        let mut magic = [0u8; 16];
        r.exact(&mut magic).map_err(|e| match e {
            BadSegment::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => BadSegment::Magic,
            e => e,
        })?;
        r.signed = match &magic {
            m if m == MAGIC => false,
            m if m == MAGIC_SIGNED => true,
            _ => return Err(BadSegment::Magic),
        };
        let len = r.u32()?;
        if len > MAX_HEADER {
            return Err(BadSegment::HeaderTooLarge(len));
        }
        let mut h = vec![0u8; len as usize];
        r.exact(&mut h)?;
        r.header = serde_json::from_slice(&h).map_err(|e| BadSegment::Header(e.to_string()))?;
        r.header_bytes = h;
        if r.header.first > r.header.last || r.header.first < 1 {
            return Err(BadSegment::Header(format!(
                "revisions {}..{} are not a range",
                r.header.first, r.header.last
            )));
        }
        Ok(r)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Once the end is read (and checked), the signed message and the armored signature of a
    /// signed segment; `None` before the end, or for a segment written without a signing key.
    pub fn signature(&self) -> Option<(&[u8], &[u8])> {
        self.signature
            .as_ref()
            .map(|(m, s)| (m.as_slice(), s.as_slice()))
    }

    /// Whether the magic says the segment is signed.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BadSegment> {
        self.inner.read_exact(buf).map_err(BadSegment::Io)?;
        self.sha.update(&*buf);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, BadSegment> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, BadSegment> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, BadSegment> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(i64::from_be_bytes(b))
    }

    /// The next record; `None` after the end, once the counts and the hash are checked.
    pub fn next_record(&mut self) -> Result<Option<Record>, BadSegment> {
        if self.done {
            return Ok(None);
        }
        match self.u8()? {
            END => self.end().map(|()| None),
            LEASE => {
                let id = self.i64()?;
                let ttl = self.i64()?;
                Ok(Some(Record::Lease { id, ttl }))
            }
            REVISION => self.revision().map(|r| Some(Record::Revision(r))),
            t => Err(BadSegment::Tag(t)),
        }
    }

    fn revision(&mut self) -> Result<Revision, BadSegment> {
        let revision = self.i64()?;
        let expected = self.last.map_or(self.header.first, |l| l.saturating_add(1));
        if revision != expected || revision > self.header.last {
            return Err(BadSegment::Sequence {
                after: self.last.unwrap_or(self.header.first - 1),
                got: revision,
            });
        }
        let received_ms = self.i64()?;
        let count = self.u32()?;
        if count == 0 {
            return Err(BadSegment::Empty(revision));
        }
        let mut events = Vec::new();
        let mut bytes = 0u64;
        for _ in 0..count {
            let kind = match self.u8()? {
                0 => Kind::Put,
                1 => Kind::Delete,
                k => return Err(BadSegment::EventKind(k)),
            };
            let len = self.u32()?;
            if len > MAX_KV {
                return Err(BadSegment::KvTooLarge { revision, len });
            }
            bytes += u64::from(len) + 5;
            if bytes > MAX_REVISION {
                return Err(BadSegment::RevisionTooLarge(revision));
            }
            // Read through `take`, so a length the data does not back allocates nothing.
            let mut kv = Vec::new();
            (&mut self.inner)
                .take(u64::from(len))
                .read_to_end(&mut kv)
                .map_err(BadSegment::Io)?;
            if kv.len() != len as usize {
                return Err(BadSegment::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.sha.update(&kv);
            let kv =
                KeyValue::decode(&kv).map_err(|error| BadSegment::KeyValue { revision, error })?;
            if kv.mod_revision != revision {
                return Err(BadSegment::Misfiled {
                    revision,
                    event: kv.mod_revision,
                });
            }
            events.push(Event { kind, kv });
        }
        self.last = Some(revision);
        self.revisions += 1;
        self.events += u64::from(count);
        Ok(Revision {
            revision,
            received_ms,
            events,
        })
    }

    fn end(&mut self) -> Result<(), BadSegment> {
        let h = &self.header;
        if self.last != Some(h.last) || self.revisions != h.revisions || self.events != h.events {
            return Err(BadSegment::Counts {
                got: self.last,
                revisions: self.revisions,
                events: self.events,
                first: h.first,
                last: h.last,
                header_revisions: h.revisions,
                header_events: h.events,
            });
        }
        let want = self.sha.clone().finalize();
        let mut got = [0u8; 32];
        self.inner.read_exact(&mut got).map_err(BadSegment::Io)?;
        if got[..] != want[..] {
            return Err(BadSegment::Hash);
        }
        if self.signed {
            let mut len = [0u8; 4];
            self.inner.read_exact(&mut len).map_err(BadSegment::Io)?;
            let len = u32::from_be_bytes(len);
            if u64::from(len) > MAX_SIGNATURE {
                return Err(BadSegment::SignatureTooLarge(len));
            }
            let mut sig = vec![0u8; len as usize];
            self.inner.read_exact(&mut sig).map_err(BadSegment::Io)?;
            self.signature = Some((signed_message(&self.header_bytes, &got), sig));
        }
        if self.inner.read(&mut [0u8; 1]).map_err(BadSegment::Io)? != 0 {
            return Err(BadSegment::Trailing);
        }
        self.done = true;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn put(rev: i64, key: &str, value: &[u8]) -> Event {
        Event {
            kind: Kind::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: value.to_vec(),
                lease: 0,
            },
        }
    }

    pub(crate) fn sealed(records: &[Record], header: &Header) -> Vec<u8> {
        sealed_by(records, header, None)
    }

    /// [`sealed`], signed with `key` when there is one.
    pub(crate) fn sealed_by(
        records: &[Record],
        header: &Header,
        key: Option<&SigningKey>,
    ) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Records::new(dir.path()).unwrap();
        for rec in records {
            r.push(rec).unwrap();
        }
        let mut out = Vec::new();
        r.seal(header, key, &mut out).unwrap();
        out
    }

    fn header(first: i64, last: i64, revisions: u64, events: u64) -> Header {
        Header {
            generation: "20261204T170000Z".into(),
            cluster_id: "cdf818194e3a8c32".into(),
            first,
            last,
            revisions,
            events,
            previous: "base:41".into(),
        }
    }

    fn sample() -> (Vec<Record>, Header) {
        let deleted = Event {
            kind: Kind::Delete,
            kv: KeyValue {
                key: b"a".to_vec(),
                mod_revision: 44,
                ..Default::default()
            },
        };
        let records = vec![
            Record::Lease { id: 7, ttl: 60 },
            Record::Revision(Revision {
                revision: 42,
                received_ms: 1_700_000_000_000,
                events: vec![put(42, "a", b"1"), put(42, "b", &[9; 2000])],
            }),
            Record::Revision(Revision {
                revision: 43,
                received_ms: 1_700_000_000_001,
                events: vec![put(43, "c", b"")],
            }),
            Record::Revision(Revision {
                revision: 44,
                received_ms: 1_700_000_000_002,
                events: vec![deleted],
            }),
        ];
        (records, header(42, 44, 3, 4))
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Record>), BadSegment> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok((r.header().clone(), out))
    }

    #[test]
    fn what_is_sealed_reads_back_whole() {
        let (records, header) = sample();
        let bytes = sealed(&records, &header);
        assert!(bytes.starts_with(MAGIC));
        let (h, got) = read_all(&bytes).unwrap();
        assert_eq!((h, got), (header, records));
    }

    #[test]
    fn damage_with_a_valid_checksum_is_still_refused() {
        let (records, good) = sample();
        // Each case is sealed by the writer, so its SHA-256 is right: only the reader's own
        // checks can refuse it.
        let gap = vec![records[1].clone(), records[3].clone()];
        let cases: Vec<(Vec<Record>, Header, &str)> = vec![
            (gap, header(42, 44, 2, 3), "revision 44 follows 42"),
            (
                records.clone(),
                header(42, 45, 3, 4),
                "ends at revision Some(44)",
            ),
            (records.clone(), header(42, 44, 3, 5), "4 events"),
            (
                records[2..].to_vec(),
                header(42, 44, 2, 2),
                "revision 43 follows 41",
            ),
            (
                vec![Record::Revision(Revision {
                    revision: 42,
                    received_ms: 0,
                    events: vec![put(41, "x", b"")],
                })],
                header(42, 42, 1, 1),
                "holds an event of revision 41",
            ),
            (
                vec![Record::Revision(Revision {
                    revision: 42,
                    received_ms: 0,
                    events: vec![],
                })],
                header(42, 42, 1, 0),
                "has no events",
            ),
            (records.clone(), header(45, 44, 3, 4), "not a range"),
        ];
        for (recs, h, want) in cases {
            let e = read_all(&sealed(&recs, &h)).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // A flipped byte is caught by the hash (or, in a length, before it).
        let bytes = sealed(&records, &good);
        for at in [40, bytes.len() / 2, bytes.len() - 40] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(read_all(&bad).is_err(), "flip at {at}");
        }
        // Truncated anywhere, or extended: an error, never a panic or a hang.
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(BadSegment::Trailing)));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_allocated() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read_all(&b), Err(BadSegment::HeaderTooLarge(_))));
        let h = serde_json::to_vec(&header(1, 1, 1, 1)).unwrap();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(h.len() as u32).to_be_bytes());
        b.extend_from_slice(&h);
        b.push(REVISION);
        b.extend_from_slice(&1i64.to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut big = b.clone();
        big.push(0);
        big.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read_all(&big), Err(BadSegment::KvTooLarge { .. })));
        // A plausible length with nothing behind it.
        b.push(0);
        b.extend_from_slice(&(MAX_KV).to_be_bytes());
        assert!(matches!(read_all(&b), Err(BadSegment::Io(_))));
    }
}
