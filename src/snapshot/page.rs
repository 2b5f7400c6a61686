//! The bbolt file format as the walker reads it: page and element layout, the meta page and
//! its checksum, the corruptions found, and the bounds-checked accessors every read goes
//! through. Format facts (bbolt `page.go`, `meta.go`, `bucket.go`): a page starts with a 16-byte
//! header `{id u64, flags u16, count u16, overflow u32}`; pages 0 and 1 are meta pages whose
//! body is `{magic, version, page_size, flags u32; root {pgid, sequence u64}; freelist, pgid,
//! txid, checksum u64}` with an FNV-1a 64 checksum over the body before `checksum`. Branch
//! elements are `{pos, ksize u32, pgid u64}`, leaf elements `{flags, pos, ksize, vsize u32}`,
//! with `pos` relative to the element. A bucket value is `{root pgid, sequence u64}` and, when
//! root is 0, an inline leaf page follows it. All integers are little-endian.
use std::fmt;
use std::os::unix::fs::FileExt;

pub(super) const MAGIC: u32 = 0xED0C_DAED;
pub(super) const VERSION: u32 = 2;
pub(super) const PAGE_HEADER: usize = 16;
pub(super) const ELEMENT: usize = 16;
pub(super) const META_BODY: usize = 64;
pub(super) const BRANCH: u16 = 0x01;
pub(super) const LEAF: u16 = 0x02;
pub(super) const META: u16 = 0x04;
pub(super) const FREELIST: u16 = 0x10;
/// bbolt's meta `freelist` value when the freelist is not synced to disk (etcd's setting).
pub(super) const NO_FREELIST: u64 = u64::MAX;
pub(super) const BUCKET_LEAF_FLAG: u32 = 0x01;
pub(super) const BUCKET_HEADER: usize = 16;
/// Deeper than any real B+tree of a file that fits on a disk; past it we call the file corrupt
/// rather than recurse without bound.
pub(super) const MAX_DEPTH: usize = 64;
/// The largest page run (a page plus its overflow) we read into memory. etcd values are capped
/// by `--max-request-bytes` (1.5 MiB by default), so 128 MiB is far above any real value and
/// keeps a corrupted overflow count from allocating the whole file.
pub(super) const MAX_RUN: u64 = 128 << 20;
/// Page sizes to try for meta page 1 when meta page 0 is damaged.
pub(super) const PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

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

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(super) fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Parses and checks the meta page whose header starts at `buf[0]`.
pub(super) fn parse_meta(buf: &[u8], page: u64, offset: u64) -> Result<Meta, Corruption> {
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

/// Where an element was found, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    pub(super) page: u64,
    pub(super) offset: u64,
}

impl At {
    pub(super) fn err(self, what: String) -> Corruption {
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

/// Called for each leaf element of one page: (where, key, element flags, value).
pub(super) type ElementFn<'v> = dyn FnMut(At, &[u8], u32, &[u8]) -> Result<(), Corruption> + 'v;

pub(super) fn slice(page: &[u8], elem: usize, pos: usize, len: usize) -> Option<&[u8]> {
    let start = elem.checked_add(pos)?;
    page.get(start..start.checked_add(len)?)
}

pub(super) fn check_elements(page: &[u8], count: usize, at: At) -> Result<(), Corruption> {
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(at.err(format!("{count} elements do not fit in the page")));
    }
    Ok(())
}

pub(super) fn first_leaf_key(page: &[u8]) -> Option<&[u8]> {
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
pub(super) fn for_each_leaf(
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
