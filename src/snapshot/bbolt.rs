//! A read-only walker for bbolt files (etcd's backend database), written for checking
//! snapshots: it validates every page reachable from the root and hands each bucket's keys and
//! values, in bbolt's iteration order, to a visitor.
//!
//! Why our own: the one Rust bbolt crate cannot open etcd files (etcd runs bbolt without a
//! synced freelist), and a checker must treat every byte as hostile: every offset is bounds-
//! checked, every page is read once (cycles are errors), depth is capped, and memory holds one
//! page per tree level plus a bitmap of visited pages, whatever the file size.
//!
//!
//! The format itself (layout, meta, accessors) is [`super::page`].

pub(super) use super::page::*;
pub use super::page::{field, seal_meta, Corruption, Entry, EntryFn, Meta, ReadAt, Visitor};

/// Called for each leaf element: (db, where, key, element flags, value).
type LeafFn<'v, 'f> = dyn FnMut(&mut Db<'f>, At, &[u8], u32, &[u8]) -> Result<(), Corruption> + 'v;
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
