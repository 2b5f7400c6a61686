//! A bulk loader for bbolt files: the other half of [`super::bbolt`]. It writes a database
//! from buckets and keys given in ascending order, as a B+tree built bottom-up: leaves are
//! filled and written one after another, and each full level hands its first keys to the level
//! above. Memory holds one page per tree level (a value larger than a page is one leaf with
//! overflow pages), whatever the number of keys.
//!
//! The file it writes is what etcd's own snapshot is: meta pages 0 and 1, then the pages, no
//! synced freelist (bbolt rebuilds it on open, as it does for etcd, which never syncs it), and
//! the SHA-256 trailer that `etcdutl snapshot restore` checks. Buckets are never inline and
//! never nested (etcd's are neither).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::bbolt::{
    fnv1a64, BRANCH, BUCKET_HEADER, BUCKET_LEAF_FLAG, ELEMENT, LEAF, MAGIC, META, NO_FREELIST,
    PAGE_HEADER, VERSION,
};

/// bbolt's page size on the machines etcd runs on (the file records it; readers take it from
/// there).
pub const PAGE_SIZE: usize = 4096;

/// Why a build was refused: the caller broke the order the tree needs, or the disk failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("bucket {0:?} is not after the previous bucket")]
    BucketOrder(String),
    #[error("key {key:?} of bucket {bucket:?} is not after the previous key")]
    KeyOrder { bucket: String, key: String },
    #[error("a key of {0} bytes (bbolt takes 1 to 32768)")]
    KeySize(usize),
    #[error("a put with no bucket begun")]
    NoBucket,
    #[error("writing the database: {0}")]
    Io(#[from] io::Error),
}

/// Pages written in id order to a file whose first two pages (the metas) are written last.
struct Pages {
    out: BufWriter<File>,
    next: u64,
}

impl Pages {
    /// Writes `body` (a page header's worth of room at its start is filled here) as the next
    /// page, with overflow pages as it needs; returns its id.
    fn write(&mut self, flags: u16, count: usize, mut body: Vec<u8>) -> io::Result<u64> {
        let pages = body.len().div_ceil(PAGE_SIZE).max(1);
        body.resize(pages * PAGE_SIZE, 0);
        let id = self.next;
        body[0..8].copy_from_slice(&id.to_le_bytes());
        body[8..10].copy_from_slice(&flags.to_le_bytes());
        body[10..12].copy_from_slice(&(count as u16).to_le_bytes());
        body[12..16].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
        self.out.write_all(&body)?;
        self.next += pages as u64;
        Ok(id)
    }
}

/// One node being filled: its elements' (flags, key, value) as offsets into `data`. A branch's
/// "value" is the child's page id.
#[derive(Default)]
struct Node {
    elements: Vec<(u32, usize, usize, usize)>,
    data: Vec<u8>,
    /// The page size this node would take.
    size: usize,
}

impl Node {
    fn new() -> Node {
        Node {
            size: PAGE_HEADER,
            ..Node::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    fn fits(&self, key: usize, value: usize) -> bool {
        self.is_empty() || self.size + ELEMENT + key + value <= PAGE_SIZE
    }

    fn push(&mut self, flags: u32, key: &[u8], value: &[u8]) {
        let at = self.data.len();
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.elements.push((flags, at, key.len(), value.len()));
        self.size += ELEMENT + key.len() + value.len();
    }

    /// The first key, or none for an empty leaf (an empty bucket's root).
    fn first_key(&self) -> Vec<u8> {
        self.elements
            .first()
            .map(|&(_, at, k, _)| self.data[at..at + k].to_vec())
            .unwrap_or_default()
    }

    /// The page: a leaf's elements are `{flags, pos, ksize, vsize}`, a branch's `{pos, ksize,
    /// pgid}`, with `pos` counted from the element; keys (and values) follow the elements.
    fn write(self, pages: &mut Pages, leaf: bool) -> io::Result<(Vec<u8>, u64)> {
        let first = self.first_key();
        let n = self.elements.len();
        let mut body = vec![0; PAGE_HEADER + n * ELEMENT];
        for (i, &(flags, at, k, v)) in self.elements.iter().enumerate() {
            let e = PAGE_HEADER + i * ELEMENT;
            let pos = (body.len() - e) as u32;
            if leaf {
                body[e..e + 4].copy_from_slice(&flags.to_le_bytes());
                body[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                body[e + 8..e + 12].copy_from_slice(&(k as u32).to_le_bytes());
                body[e + 12..e + 16].copy_from_slice(&(v as u32).to_le_bytes());
                body.extend_from_slice(&self.data[at..at + k + v]);
            } else {
                let child = &self.data[at + k..at + k + v];
                body[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                body[e + 4..e + 8].copy_from_slice(&(k as u32).to_le_bytes());
                body[e + 8..e + 16].copy_from_slice(child);
                body.extend_from_slice(&self.data[at..at + k]);
            }
        }
        let id = pages.write(if leaf { LEAF } else { BRANCH }, n, body)?;
        Ok((first, id))
    }
}

/// One B+tree being built bottom-up: `levels[0]` is the leaf being filled, `levels[i]` the
/// branch above, and `written[i]` how many nodes level `i` has written so far.
struct Tree {
    levels: Vec<Node>,
    written: Vec<u64>,
    last: Option<Vec<u8>>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            levels: vec![Node::new()],
            written: vec![0],
            last: None,
        }
    }

    fn put(&mut self, pages: &mut Pages, flags: u32, key: &[u8], value: &[u8]) -> io::Result<()> {
        if !self.levels[0].fits(key.len(), value.len()) {
            self.flush(pages, 0)?;
        }
        self.levels[0].push(flags, key, value);
        Ok(())
    }

    /// Writes the node of `level` and hands its first key and page to the level above.
    fn flush(&mut self, pages: &mut Pages, level: usize) -> io::Result<()> {
        let node = std::mem::replace(&mut self.levels[level], Node::new());
        let (first, id) = node.write(pages, level == 0)?;
        self.written[level] += 1;
        if self.levels.len() == level + 1 {
            self.levels.push(Node::new());
            self.written.push(0);
        }
        let id = id.to_le_bytes();
        if !self.levels[level + 1].fits(first.len(), id.len()) {
            self.flush(pages, level + 1)?;
        }
        self.levels[level + 1].push(0, &first, &id);
        Ok(())
    }

    /// Writes what is left, level by level, and returns the root's page id.
    fn finish(mut self, pages: &mut Pages) -> io::Result<u64> {
        if self.written[0] == 0 {
            // A tree of one leaf (perhaps empty): the leaf is the root.
            let node = std::mem::replace(&mut self.levels[0], Node::new());
            return Ok(node.write(pages, true)?.1);
        }
        let mut level = 0;
        loop {
            if !self.levels[level].is_empty() {
                self.flush(pages, level)?;
            }
            let top = level + 1 == self.levels.len() - 1;
            let above = &self.levels[level + 1];
            if top && self.written[level + 1] == 0 && above.elements.len() == 1 {
                let (_, at, k, _) = above.elements[0];
                let id = &above.data[at + k..at + k + 8];
                return Ok(u64::from_le_bytes(id.try_into().expect("8 bytes")));
            }
            level += 1;
        }
    }
}

/// A database being written. Begin each bucket in ascending name order and put its keys in
/// ascending order; [`Builder::finish`] writes the root, the meta pages and the trailer.
pub struct Builder {
    pages: Pages,
    buckets: Vec<(Vec<u8>, u64)>,
    current: Option<(Vec<u8>, Tree)>,
}

impl Builder {
    /// Starts a database in `file`, which must be empty.
    pub fn new(mut file: File) -> io::Result<Builder> {
        file.set_len(0)?;
        // Pages 0 and 1 (the metas) are written at the end; the tree starts at page 2.
        file.seek(SeekFrom::Start(2 * PAGE_SIZE as u64))?;
        Ok(Builder {
            pages: Pages {
                out: BufWriter::with_capacity(1 << 20, file),
                next: 2,
            },
            buckets: Vec::new(),
            current: None,
        })
    }

    /// Ends the bucket being written, if any, and begins `name`.
    pub fn bucket(&mut self, name: &[u8]) -> Result<(), BuildError> {
        self.end_bucket()?;
        if self
            .buckets
            .last()
            .is_some_and(|(last, _)| last.as_slice() >= name)
            || name.is_empty()
        {
            return Err(BuildError::BucketOrder(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        self.current = Some((name.to_vec(), Tree::new()));
        Ok(())
    }

    fn end_bucket(&mut self) -> Result<(), BuildError> {
        if let Some((name, tree)) = self.current.take() {
            let root = tree.finish(&mut self.pages)?;
            self.buckets.push((name, root));
        }
        Ok(())
    }

    /// Adds `key` = `value` to the current bucket; keys must increase strictly.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BuildError> {
        let Some((bucket, tree)) = self.current.as_mut() else {
            return Err(BuildError::NoBucket);
        };
        if key.is_empty() || key.len() > 32768 {
            return Err(BuildError::KeySize(key.len()));
        }
        if tree.last.as_deref().is_some_and(|l| l >= key) {
            return Err(BuildError::KeyOrder {
                bucket: String::from_utf8_lossy(bucket).into_owned(),
                key: String::from_utf8_lossy(key).into_owned(),
            });
        }
        // One buffer for the whole bucket: a put is the hot path of a rebuild.
        let last = tree.last.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        tree.put(&mut self.pages, 0, key, value)?;
        Ok(())
    }

    /// Writes the root bucket, both meta pages and the SHA-256 trailer, syncs, and returns the
    /// file, the database's length (without the trailer) and its SHA-256 (the trailer).
    pub fn finish(mut self, txid: u64) -> Result<(File, u64, [u8; 32]), BuildError> {
        self.end_bucket()?;
        let mut root = Tree::new();
        for (name, bucket_root) in std::mem::take(&mut self.buckets) {
            let mut header = [0u8; BUCKET_HEADER];
            header[..8].copy_from_slice(&bucket_root.to_le_bytes());
            root.put(&mut self.pages, BUCKET_LEAF_FLAG, &name, &header)?;
        }
        let root = root.finish(&mut self.pages)?;
        let pgid = self.pages.next;
        let mut file = self.pages.out.into_inner().map_err(|e| e.into_error())?;
        for (page, txid) in [(0u64, txid.saturating_sub(1)), (1, txid)] {
            file.write_all_at(&meta(page, root, pgid, txid), page * PAGE_SIZE as u64)?;
        }
        let len = pgid * PAGE_SIZE as u64;
        // The trailer covers the pages as written: read them back rather than trust a hash
        // kept while the metas were still unwritten.
        file.seek(SeekFrom::Start(0))?;
        let mut sha = Sha256::new();
        io::copy(&mut (&file).take(len), &mut sha)?;
        let sha: [u8; 32] = sha.finalize().into();
        file.seek(SeekFrom::Start(len))?;
        file.write_all(&sha)?;
        file.sync_all()?;
        Ok((file, len, sha))
    }
}

/// Meta page `page`: bbolt's `meta` struct after the page header, checksummed.
fn meta(page: u64, root: u64, pgid: u64, txid: u64) -> Vec<u8> {
    let mut b = vec![0u8; PAGE_SIZE];
    b[0..8].copy_from_slice(&page.to_le_bytes());
    b[8..10].copy_from_slice(&META.to_le_bytes());
    let m = PAGE_HEADER;
    b[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
    b[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
    b[m + 8..m + 12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    b[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
    b[m + 32..m + 40].copy_from_slice(&NO_FREELIST.to_le_bytes());
    b[m + 40..m + 48].copy_from_slice(&pgid.to_le_bytes());
    b[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
    let sum = fnv1a64(&b[m..m + 56]);
    b[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::bbolt::{Db, Entry, Visitor};
    use proptest::prelude::*;

    type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

    #[derive(Default)]
    struct Collect(Buckets);

    impl Visitor for Collect {
        fn bucket(&mut self, name: &[u8]) {
            self.0.push((name.to_vec(), Vec::new()));
        }
        fn entry(&mut self, _: &[u8], e: Entry<'_>) {
            let v = e.value.expect("no nested buckets").to_vec();
            self.0.last_mut().unwrap().1.push((e.key.to_vec(), v));
        }
    }

    fn build(buckets: &Buckets) -> Vec<u8> {
        let mut b = Builder::new(tempfile::tempfile().unwrap()).unwrap();
        for (name, entries) in buckets {
            b.bucket(name).unwrap();
            for (k, v) in entries {
                b.put(k, v).unwrap();
            }
        }
        let (mut file, len, sha) = b.finish(7).unwrap();
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, len + 32);
        let digest = Sha256::digest(&bytes[..len as usize]);
        assert_eq!(&bytes[len as usize..], &digest[..], "trailer");
        assert_eq!(sha, <[u8; 32]>::from(digest));
        bytes.truncate(len as usize);
        bytes
    }

    fn read(bytes: &[u8]) -> Buckets {
        let mut db = Db::open(&bytes, bytes.len() as u64).unwrap();
        let mut c = Collect::default();
        db.walk(&mut c).unwrap();
        for id in 2..db.meta().pgid {
            assert!(db.reached(id), "page {id} is not reachable from the root");
        }
        c.0
    }

    fn bucket_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        // Sizes from empty to several pages, so that leaves overflow and branches split.
        let value = prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..64),
            1 => proptest::collection::vec(any::<u8>(), 4000..20000),
        ];
        proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..40),
            value,
            0..600,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// What is put is what the walker reads back, bucket by bucket and key by key, and
        /// every page written is reachable (nothing is leaked as garbage).
        #[test]
        fn the_walker_reads_back_what_was_built(
            buckets in proptest::collection::btree_map(
                proptest::collection::vec(b'a'..=b'z', 1..8), bucket_strategy(), 0..5)
        ) {
            let buckets: Buckets = buckets.into_iter().collect();
            prop_assert_eq!(read(&build(&buckets)), buckets);
        }
    }

    #[test]
    fn a_deep_tree_of_many_keys_reads_back() {
        let entries: Vec<_> = (0u64..200_000)
            .map(|i| {
                (
                    i.to_be_bytes().to_vec(),
                    vec![(i % 251) as u8; (i % 50) as usize],
                )
            })
            .collect();
        let buckets = vec![(b"key".to_vec(), entries)];
        let bytes = build(&buckets);
        assert_eq!(read(&bytes), buckets);
        // Three levels at least: 200,000 keys do not fit under one branch page.
        let slice = &bytes[..];
        let mut db = Db::open(&slice, bytes.len() as u64).unwrap();
        let mut n = 0;
        db.scan(b"key", &150_000u64.to_be_bytes(), &mut |_, _| {
            n += 1;
            Ok::<_, crate::snapshot::bbolt::Corruption>(())
        })
        .unwrap();
        assert_eq!(n, 50_000);
    }

    #[test]
    fn order_is_enforced() {
        let mut b = Builder::new(tempfile::tempfile().unwrap()).unwrap();
        assert!(matches!(b.put(b"k", b""), Err(BuildError::NoBucket)));
        b.bucket(b"b").unwrap();
        b.put(b"k2", b"").unwrap();
        assert!(matches!(
            b.put(b"k1", b""),
            Err(BuildError::KeyOrder { .. })
        ));
        assert!(matches!(b.put(b"", b""), Err(BuildError::KeySize(0))));
        assert!(matches!(b.bucket(b"a"), Err(BuildError::BucketOrder(_))));
    }
}
