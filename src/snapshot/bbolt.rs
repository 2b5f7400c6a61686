//! A read-only walker for bbolt files (etcd's backend database), written for checking
//! snapshots: it validates every page reachable from the root and hands each bucket's keys and
//! values, in bbolt's iteration order, to a visitor.
//!
//! Why our own: the one Rust bbolt crate cannot open etcd files (etcd runs bbolt without a
//! synced freelist), and a checker must treat every byte as hostile: every offset is bounds-
//! checked, every page is read once (cycles are errors), depth is capped, and memory holds one
//! page per tree level plus a bitmap of visited pages, whatever the file size.
//!
//! Format facts (bbolt `page.go`, `meta.go`, `bucket.go`): a page starts with a 16-byte header
//! `{id u64, flags u16, count u16, overflow u32}`; pages 0 and 1 are meta pages whose body is
//! `{magic, version, page_size, flags u32; root {pgid, sequence u64}; freelist, pgid, txid,
//! checksum u64}` with an FNV-1a 64 checksum over the body before `checksum`. Branch elements
//! are `{pos, ksize u32, pgid u64}`, leaf elements `{flags, pos, ksize, vsize u32}`, with `pos`
//! relative to the element. A bucket value is `{root pgid, sequence u64}` and, when root is 0,
//! an inline leaf page follows it. All integers are little-endian.

use std::fmt;
use std::os::unix::fs::FileExt;

pub(super) const MAGIC: u32 = 0xED0C_DAED;
pub(super) const VERSION: u32 = 2;
pub(super) const PAGE_HEADER: usize = 16;
pub(super) const ELEMENT: usize = 16;
const META_BODY: usize = 64;
pub(super) const BRANCH: u16 = 0x01;
pub(super) const LEAF: u16 = 0x02;
pub(super) const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// bbolt's meta `freelist` value when the freelist is not synced to disk (etcd's setting).
pub(super) const NO_FREELIST: u64 = u64::MAX;
pub(super) const BUCKET_LEAF_FLAG: u32 = 0x01;
pub(super) const BUCKET_HEADER: usize = 16;
/// Deeper than any real B+tree of a file that fits on a disk; past it we call the file corrupt
/// rather than recurse without bound.
const MAX_DEPTH: usize = 64;
/// The largest page run (a page plus its overflow) we read into memory. etcd values are capped
/// by `--max-request-bytes` (1.5 MiB by default), so 128 MiB is far above any real value and
/// keeps a corrupted overflow count from allocating the whole file.
const MAX_RUN: u64 = 128 << 20;
/// Page sizes to try for meta page 1 when meta page 0 is damaged.
const PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

/// What is wrong with a file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("meta page {page} (offset {offset}): {what}")]
    Meta {
        page: u64,
        offset: u64,
        what: String,
    },
    #[error("page {page} (offset {offset}): {what}")]
    Page {
        page: u64,
        offset: u64,
        what: String,
    },
    #[error(
        "file is {len} bytes but its meta page says the database is {expected} bytes (truncated)"
    )]
    Truncated { len: u64, expected: u64 },
    #[error("reading offset {offset}: {error}")]
    Io { offset: u64, error: String },
}

/// The meta page a walk uses: the valid one with the higher transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u64,
    pub root: u64,
    /// The freelist page, or [`NO_FREELIST`] when it is not synced (etcd runs bbolt that way).
    pub freelist: u64,
    /// One past the highest page id in use: the database is `pgid * page_size` bytes.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// The database size the meta page claims; [`parse_meta`] refuses a meta page whose
    /// product overflows, so this cannot.
    pub fn db_size(&self) -> u64 {
        self.pgid * self.page_size
    }
}

/// Offsets of the meta body's fields, from the end of the page header.
pub mod field {
    pub const PAGE_SIZE: usize = 8;
    pub const ROOT: usize = 16;
    pub const FREELIST: usize = 32;
    pub const PGID: usize = 40;
    pub const TXID: usize = 48;
    pub const CHECKSUM: usize = 56;
}

/// Recomputes the checksum of the meta page whose header starts at `page[0]`, as bbolt writes
/// it. For tests and the fuzz target, which change meta fields and must get past the checksum
/// to reach the checks behind it.
pub fn seal_meta(page: &mut [u8]) {
    let body = PAGE_HEADER..PAGE_HEADER + field::CHECKSUM;
    let sum = fnv1a64(&page[body]);
    let at = PAGE_HEADER + field::CHECKSUM;
    page[at..at + 8].copy_from_slice(&sum.to_le_bytes());
}

/// One entry of a bucket, as bbolt's `Bucket.ForEach` yields it: a nested bucket's value is
/// `None`.
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Called with each (key, value) of a scanned bucket.
pub type EntryFn<'a, E> = dyn FnMut(&[u8], &[u8]) -> Result<(), E> + 'a;

/// Receives the walk in bbolt's iteration order: each top-level bucket, then its entries.
pub trait Visitor {
    fn bucket(&mut self, name: &[u8]);
    fn entry(&mut self, bucket: &[u8], entry: Entry<'_>);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(super) fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Parses and checks the meta page whose header starts at `buf[0]`.
fn parse_meta(buf: &[u8], page: u64, offset: u64) -> Result<Meta, Corruption> {
    let bad = |what: String| Corruption::Meta { page, offset, what };
    if buf.len() < PAGE_HEADER + META_BODY {
        return Err(bad("shorter than a meta page".into()));
    }
    let body = &buf[PAGE_HEADER..PAGE_HEADER + META_BODY];
    let stored = u64_at(body, 56);
    let computed = fnv1a64(&body[..56]);
    if stored != computed {
        return Err(bad(format!(
            "checksum {stored:#018x} does not match contents ({computed:#018x})"
        )));
    }
    if u32_at(body, 0) != MAGIC {
        return Err(bad(format!(
            "magic {:#010x} is not bbolt's {MAGIC:#010x}",
            u32_at(body, 0)
        )));
    }
    if u32_at(body, 4) != VERSION {
        return Err(bad(format!("version {} is not {VERSION}", u32_at(body, 4))));
    }
    if u16_at(buf, 8) != META || u64_at(buf, 0) != page {
        return Err(bad(format!(
            "header says page {} with flags {:#x}",
            u64_at(buf, 0),
            u16_at(buf, 8)
        )));
    }
    let page_size = u32_at(body, 8) as u64;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(bad(format!(
            "page size {page_size} is not a power of two between 512 and 65536"
        )));
    }
    let meta = Meta {
        page_size,
        root: u64_at(body, field::ROOT),
        freelist: u64_at(body, field::FREELIST),
        pgid: u64_at(body, field::PGID),
        txid: u64_at(body, field::TXID),
    };
    if meta.pgid < 3 || meta.root < 2 || meta.root >= meta.pgid {
        return Err(bad(format!(
            "root page {} and high-water page {} are out of range",
            meta.root, meta.pgid
        )));
    }
    if meta.pgid.checked_mul(page_size).is_none() {
        return Err(bad(format!(
            "high-water page {} times page size {page_size} overflows",
            meta.pgid
        )));
    }
    if meta.freelist != NO_FREELIST && !(2..meta.pgid).contains(&meta.freelist) {
        return Err(bad(format!(
            "freelist page {} is out of range 2..{} (bbolt could not open this file)",
            meta.freelist, meta.pgid
        )));
    }
    Ok(meta)
}

/// Positional reads: a file on disk, or bytes in memory (tests, the fuzz target).
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&o| o <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// A bbolt file opened for checking. `len` is the length of the database bytes (a snapshot's
/// length without its 32-byte trailer).
pub struct Db<'f> {
    file: &'f dyn ReadAt,
    len: u64,
    meta: Meta,
    visited: Vec<u64>,
    /// While [`Db::scan`] runs: subtrees holding only keys below this are not read.
    seek: Option<Vec<u8>>,
}

impl<'f> Db<'f> {
    /// Reads both meta pages. A snapshot's two meta pages are written together and must both be
    /// valid (bbolt itself would fall back to the other one; for a backup, a damaged meta page is
    /// damage). Checks that the file holds every page the meta page counts.
    pub fn open(file: &'f dyn ReadAt, len: u64) -> Result<Self, Corruption> {
        let read = |offset: u64, n: usize| -> Result<Vec<u8>, Corruption> {
            let mut buf = vec![0; n];
            let avail = len.saturating_sub(offset).min(n as u64) as usize;
            file.read_exact_at(&mut buf[..avail], offset)
                .map_err(|e| Corruption::Io {
                    offset,
                    error: e.to_string(),
                })?;
            buf.truncate(avail);
            Ok(buf)
        };
        let m0 = parse_meta(&read(0, PAGE_HEADER + META_BODY)?, 0, 0);
        let m1 = match &m0 {
            Ok(m) => parse_meta(&read(m.page_size, PAGE_HEADER + META_BODY)?, 1, m.page_size),
            Err(_) => {
                // Find meta 1 by trying the page sizes bbolt is built with.
                let mut found = Err(Corruption::Meta {
                    page: 1,
                    offset: 4096,
                    what: "not found".into(),
                });
                for size in PAGE_SIZES {
                    found = parse_meta(&read(size, PAGE_HEADER + META_BODY)?, 1, size);
                    if found.is_ok() {
                        break;
                    }
                }
                found
            }
        };
        let (m0, m1) = (m0?, m1?);
        if m0.page_size != m1.page_size {
            return Err(Corruption::Meta {
                page: 1,
                offset: m0.page_size,
                what: format!(
                    "page size {} differs from meta page 0's {}",
                    m1.page_size, m0.page_size
                ),
            });
        }
        let meta = if m1.txid > m0.txid { m1 } else { m0 };
        if len < meta.db_size() {
            // Also what bounds the allocation below.
            return Err(Corruption::Truncated {
                len,
                expected: meta.db_size(),
            });
        }
        // Bounded by the file: `pgid * page_size <= len`, so one bit per page of the file.
        let visited = vec![0; meta.pgid.div_ceil(64) as usize];
        let mut db = Db {
            file,
            len,
            meta,
            visited,
            seek: None,
        };
        if meta.freelist != NO_FREELIST {
            db.check_freelist(meta.freelist)?;
        }
        Ok(db)
    }

    /// A synced freelist, as bbolt reads it on open: a freelist page whose ids are all pages of
    /// the file. Its pages count as reached, so a tree page that is also the freelist is caught.
    fn check_freelist(&mut self, id: u64) -> Result<(), Corruption> {
        let page = self.read_page(id)?;
        let at = At {
            page: id,
            offset: id * self.meta.page_size,
        };
        if u16_at(&page, 8) != FREELIST {
            return Err(at.err(format!(
                "flags {:#x}: the meta page names it the freelist",
                u16_at(&page, 8)
            )));
        }
        // A count of 0xFFFF means the real count is the first u64 of the body (bbolt).
        let (count, start) = match u16_at(&page, 10) {
            0xFFFF if page.len() >= PAGE_HEADER + 8 => {
                (u64_at(&page, PAGE_HEADER), PAGE_HEADER + 8)
            }
            0xFFFF => return Err(at.err("freelist count does not fit in the page".into())),
            n => (n as u64, PAGE_HEADER),
        };
        let ids = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(8))
            .and_then(|n| page.get(start..start.checked_add(n)?))
            .ok_or_else(|| at.err(format!("{count} free page ids do not fit in the page")))?;
        for free in ids.chunks_exact(8).map(|c| u64_at(c, 0)) {
            if !(2..self.meta.pgid).contains(&free) {
                return Err(at.err(format!(
                    "free page id {free} is out of range 2..{}",
                    self.meta.pgid
                )));
            }
        }
        Ok(())
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Whether the walk so far read page `id` (as a page or as overflow of one).
    pub fn reached(&self, id: u64) -> bool {
        id < self.meta.pgid && self.visited[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// The names of the top-level buckets, in order. Every entry of the root must be a bucket.
    pub fn buckets(&mut self) -> Result<Vec<Vec<u8>>, Corruption> {
        let mut names = Vec::new();
        self.walk_tree(self.meta.root, 0, &mut |_, at, key, flags, _| {
            if flags & BUCKET_LEAF_FLAG == 0 {
                return Err(at.err(format!(
                    "root bucket entry {:?} is not a bucket",
                    String::from_utf8_lossy(key)
                )));
            }
            names.push(key.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    /// Walks every bucket from the root, checking each page, and reports entries to `visitor`.
    pub fn walk(&mut self, visitor: &mut dyn Visitor) -> Result<(), Corruption> {
        let root = self.meta.root;
        let mut buckets = Vec::new();
        // The root bucket holds only buckets; collect their headers first so the visitor sees
        // bucket by bucket, as bbolt's cursor over the root does.
        self.walk_tree(root, 0, &mut |_, at, key, flags, value| {
            if flags & BUCKET_LEAF_FLAG == 0 {
                return Err(at.err(format!(
                    "root bucket entry {:?} is not a bucket",
                    String::from_utf8_lossy(key)
                )));
            }
            buckets.push((key.to_vec(), value.to_vec(), at));
            Ok(())
        })?;
        for (name, header, at) in buckets {
            visitor.bucket(&name);
            self.walk_bucket(&header, at, 1, &mut |db, at, key, flags, value| {
                let nested = flags & BUCKET_LEAF_FLAG != 0;
                visitor.entry(
                    &name,
                    Entry {
                        key,
                        value: (!nested).then_some(value),
                    },
                );
                if nested {
                    // etcdutl counts a nested bucket as one key and does not descend, but its
                    // pages are still part of the file and still checked.
                    db.walk_bucket(value, at, 2, &mut |_, _, _, _, _| Ok(()))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Calls `f` with each entry of the top-level bucket `name` whose key is at least `from`, in
    /// order, reading only the pages that can hold such keys (a branch's child is skipped when
    /// the next child starts at or below `from`). Returns false when there is no such bucket.
    /// The pages read are checked as [`Db::walk`] checks them; a nested bucket is an error,
    /// since the buckets scanned (etcd's `key` and `meta`) hold none.
    pub fn scan(
        &mut self,
        name: &[u8],
        from: &[u8],
        f: &mut EntryFn<'_, Corruption>,
    ) -> Result<bool, Corruption> {
        let mut found = None;
        self.walk_tree(self.meta.root, 0, &mut |_, at, key, flags, value| {
            if key == name && flags & BUCKET_LEAF_FLAG != 0 {
                found = Some((value.to_vec(), at));
            }
            Ok(())
        })?;
        let Some((header, at)) = found else {
            return Ok(false);
        };
        self.seek = Some(from.to_vec());
        let scanned = self.walk_bucket(&header, at, 1, &mut |_, at, key, flags, value| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                return Err(at.err(format!(
                    "bucket {:?} holds a nested bucket {:?}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(key)
                )));
            }
            if key >= from {
                f(key, value)?;
            }
            Ok(())
        });
        self.seek = None;
        scanned.map(|()| true)
    }

    fn walk_bucket(
        &mut self,
        header: &[u8],
        at: At,
        depth: usize,
        f: &mut LeafFn<'_, 'f>,
    ) -> Result<(), Corruption> {
        if header.len() < BUCKET_HEADER {
            return Err(at.err(format!(
                "bucket value is {} bytes, shorter than a bucket header",
                header.len()
            )));
        }
        let root = u64_at(header, 0);
        if root != 0 {
            return self.walk_tree(root, depth, f);
        }
        // An inline bucket: a leaf page stored inside the value.
        let page = &header[BUCKET_HEADER..];
        if page.len() < PAGE_HEADER || u16_at(page, 8) & LEAF == 0 {
            return Err(at.err("inline bucket does not hold a leaf page".into()));
        }
        let mut last = None;
        for_each_leaf(page, at, &mut last, &mut |at, k, fl, v| {
            f(self, at, k, fl, v)
        })
    }

    fn walk_tree(
        &mut self,
        root: u64,
        depth: usize,
        f: &mut LeafFn<'_, 'f>,
    ) -> Result<(), Corruption> {
        let mut last: Option<Vec<u8>> = None;
        self.walk_page(root, depth, None, &mut last, f)
    }

    /// Visits page `id` and its subtree. Every key must be greater than `last` (the previous key
    /// in iteration order) and, under a branch, no smaller than the branch key that points here.
    fn walk_page(
        &mut self,
        id: u64,
        depth: usize,
        low: Option<&[u8]>,
        last: &mut Option<Vec<u8>>,
        f: &mut LeafFn<'_, 'f>,
    ) -> Result<(), Corruption> {
        let offset = id.wrapping_mul(self.meta.page_size);
        let at = At { page: id, offset };
        if depth > MAX_DEPTH {
            return Err(at.err(format!("tree deeper than {MAX_DEPTH} levels")));
        }
        if id < 2 || id >= self.meta.pgid {
            return Err(at.err(format!("page id out of range 2..{}", self.meta.pgid)));
        }
        let page = self.read_page(id)?;
        match u16_at(&page, 8) {
            BRANCH => {
                let count = u16_at(&page, 10) as usize;
                if count == 0 {
                    return Err(at.err("branch page with no elements".into()));
                }
                check_elements(&page, count, at)?;
                let mut children = Vec::with_capacity(count);
                for i in 0..count {
                    let e = PAGE_HEADER + i * ELEMENT;
                    let (pos, ksize, child) = (
                        u32_at(&page, e) as usize,
                        u32_at(&page, e + 4) as usize,
                        u64_at(&page, e + 8),
                    );
                    let key = slice(&page, e, pos, ksize).ok_or_else(|| {
                        at.err(format!("branch element {i} points outside the page"))
                    })?;
                    let prev: Option<&(&[u8], u64)> = children.last();
                    if prev.is_some_and(|p| p.0 >= key) || (i == 0 && low.is_some_and(|l| key < l))
                    {
                        return Err(at.err(format!("branch element {i}: keys out of order")));
                    }
                    children.push((key, child));
                }
                for (i, &(key, child)) in children.iter().enumerate() {
                    // Every key under this child is below the next child's first key.
                    let next = children.get(i + 1).map(|c| c.0);
                    if let (Some(seek), Some(next)) = (&self.seek, next) {
                        if next <= seek.as_slice() {
                            continue;
                        }
                    }
                    let key = key.to_vec();
                    self.walk_page(child, depth + 1, Some(&key), last, f)?;
                }
                Ok(())
            }
            LEAF => {
                if let (Some(low), Some(first)) = (low, first_leaf_key(&page)) {
                    if first < low {
                        return Err(at.err("first key is below its branch key".into()));
                    }
                }
                for_each_leaf(&page, at, last, &mut |at, k, fl, v| f(self, at, k, fl, v))
            }
            flags => Err(at.err(format!("flags {flags:#x}: expected a branch or leaf page"))),
        }
    }

    /// Reads a page and its overflow pages, once: a second visit means a cycle or a shared page.
    fn read_page(&mut self, id: u64) -> Result<Vec<u8>, Corruption> {
        let ps = self.meta.page_size;
        if !(2..self.meta.pgid).contains(&id) {
            return Err(At {
                page: id,
                offset: id.wrapping_mul(ps),
            }
            .err(format!("page id out of range 2..{}", self.meta.pgid)));
        }
        let offset = id * ps;
        let at = At { page: id, offset };
        let (word, bit) = ((id / 64) as usize, id % 64);
        if self.visited[word] & (1 << bit) != 0 {
            return Err(at.err("reached twice (a cycle or a shared page)".into()));
        }
        self.visited[word] |= 1 << bit;
        let mut header = [0u8; PAGE_HEADER];
        self.pread(&mut header, offset)?;
        if u64_at(&header, 0) != id {
            return Err(at.err(format!("header says page {}", u64_at(&header, 0))));
        }
        let overflow = u32_at(&header, 12) as u64;
        if id + overflow >= self.meta.pgid {
            return Err(at.err(format!(
                "{overflow} overflow pages run past the last page {}",
                self.meta.pgid - 1
            )));
        }
        let run = (1 + overflow) * ps;
        if run > MAX_RUN {
            return Err(at.err(format!(
                "{overflow} overflow pages ({run} bytes) exceed the {MAX_RUN}-byte limit"
            )));
        }
        for o in 1..=overflow {
            let (w, b) = (((id + o) / 64) as usize, (id + o) % 64);
            if self.visited[w] & (1 << b) != 0 {
                return Err(at.err(format!(
                    "overflow page {} is also reached elsewhere",
                    id + o
                )));
            }
            self.visited[w] |= 1 << b;
        }
        let mut page = vec![0; run as usize];
        self.pread(&mut page, offset)?;
        Ok(page)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<(), Corruption> {
        if offset + buf.len() as u64 > self.len {
            return Err(Corruption::Truncated {
                len: self.len,
                expected: offset + buf.len() as u64,
            });
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Corruption::Io {
                offset,
                error: e.to_string(),
            })
    }
}

/// Where an element was found, for error messages.
#[derive(Debug, Clone, Copy)]
struct At {
    page: u64,
    offset: u64,
}

impl At {
    fn err(self, what: String) -> Corruption {
        Corruption::Page {
            page: self.page,
            offset: self.offset,
            what,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {} (offset {})", self.page, self.offset)
    }
}

/// Called for each leaf element: (db, where, key, element flags, value).
type LeafFn<'v, 'f> = dyn FnMut(&mut Db<'f>, At, &[u8], u32, &[u8]) -> Result<(), Corruption> + 'v;

/// Called for each leaf element of one page: (where, key, element flags, value).
type ElementFn<'v> = dyn FnMut(At, &[u8], u32, &[u8]) -> Result<(), Corruption> + 'v;

fn slice(page: &[u8], elem: usize, pos: usize, len: usize) -> Option<&[u8]> {
    let start = elem.checked_add(pos)?;
    page.get(start..start.checked_add(len)?)
}

fn check_elements(page: &[u8], count: usize, at: At) -> Result<(), Corruption> {
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(at.err(format!("{count} elements do not fit in the page")));
    }
    Ok(())
}

fn first_leaf_key(page: &[u8]) -> Option<&[u8]> {
    if u16_at(page, 10) == 0 || page.len() < PAGE_HEADER + ELEMENT {
        return None;
    }
    let e = PAGE_HEADER;
    slice(
        page,
        e,
        u32_at(page, e + 4) as usize,
        u32_at(page, e + 8) as usize,
    )
}

/// Checks a leaf page's elements and passes each to `f`, in order; keys must increase strictly
/// across the whole bucket (`last` carries the previous key between pages).
fn for_each_leaf(
    page: &[u8],
    at: At,
    last: &mut Option<Vec<u8>>,
    f: &mut ElementFn<'_>,
) -> Result<(), Corruption> {
    let count = u16_at(page, 10) as usize;
    check_elements(page, count, at)?;
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        let (flags, pos, ksize, vsize) = (
            u32_at(page, e),
            u32_at(page, e + 4) as usize,
            u32_at(page, e + 8) as usize,
            u32_at(page, e + 12) as usize,
        );
        let kv = slice(page, e, pos, ksize + vsize)
            .ok_or_else(|| at.err(format!("leaf element {i} points outside the page")))?;
        let (key, value) = kv.split_at(ksize);
        if flags & !BUCKET_LEAF_FLAG != 0 {
            return Err(at.err(format!("leaf element {i} has unknown flags {flags:#x}")));
        }
        if last.as_deref().is_some_and(|l| l >= key) {
            return Err(at.err(format!("leaf element {i}: keys out of order")));
        }
        *last = Some(key.to_vec());
        f(at, key, flags, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
