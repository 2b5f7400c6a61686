//! Structure-aware mutation of the golden snapshots, shared by the fuzz target
//! (`fuzz/fuzz_targets/walk.rs`) and the regression test that replays what it found
//! (`tests/data/fuzz/`). A script of bytes picks a seed and then edits bbolt's fields: meta
//! fields, page headers, element fields, single bytes, the length, whole pages. Afterwards both
//! meta checksums and the SHA-256 trailer are recomputed, so every input gets past the checksums
//! to the checks behind them, which is where a crafted file does harm.

use etcd_backup::snapshot::bbolt::{field, seal_meta};
use sha2::{Digest, Sha256};

const PAGE: usize = 4096;
const SEEDS: [&[u8]; 3] = [
    include_bytes!("data/empty.db"),
    include_bytes!("data/small.db"),
    include_bytes!("data/medium.db"),
];

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| v << 8 | self.u8() as u64)
    }
    /// A value for a field: the edges of the file's page range and of the integer types are
    /// where bounds checks are missing, so they come up far more often than at random.
    fn value(&mut self, pages: u64) -> u64 {
        match self.u8() % 9 {
            0 => 0,
            1 => 1,
            2 => pages.saturating_sub(1),
            3 => pages,
            4 => pages + 1,
            5 => u64::MAX,
            6 => 1 << (40 + self.u8() % 24),
            7 => u32::MAX as u64,
            _ => self.u64(),
        }
    }
}

fn put(db: &mut [u8], at: usize, width: usize, v: u64) {
    if let Some(dst) = at.checked_add(width).and_then(|end| db.get_mut(at..end)) {
        dst.copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

/// The snapshot (database and trailer) that `script` describes.
pub fn build(script: &[u8]) -> Vec<u8> {
    let mut s = Script(script);
    let seed = SEEDS[s.u8() as usize % SEEDS.len()];
    let mut db = seed[..seed.len() - 32].to_vec();
    let mut ops = 0;
    while !s.0.is_empty() && ops < 64 {
        ops += 1;
        let pages = (db.len() / PAGE).max(1) as u64;
        let page = |s: &mut Script| (s.u64() % pages) as usize * PAGE;
        match s.u8() % 7 {
            0 => {
                let meta = (s.u8() % 2) as usize * PAGE + 16;
                let (at, width) = match s.u8() % 5 {
                    0 => (field::PAGE_SIZE, 4),
                    1 => (field::ROOT, 8),
                    2 => (field::FREELIST, 8),
                    3 => (field::PGID, 8),
                    _ => (field::TXID, 8),
                };
                let v = s.value(pages);
                put(&mut db, meta + at, width, v);
            }
            1 => {
                let p = page(&mut s);
                let (at, width) = [(0, 8), (8, 2), (10, 2), (12, 4)][s.u8() as usize % 4];
                let v = s.value(pages);
                put(&mut db, p + at, width, v);
            }
            2 => {
                let p = page(&mut s);
                let at = p + 16 + (s.u8() as usize) * 16 + (s.u8() % 4) as usize * 4;
                let v = s.value(pages);
                put(&mut db, at, 4, v);
            }
            3 => {
                let at = (s.u64() % db.len().max(1) as u64) as usize;
                let v = s.u8();
                if let Some(b) = db.get_mut(at) {
                    *b = v;
                }
            }
            4 => {
                let len = (s.u64() % (db.len() as u64 + PAGE as u64 + 1)) as usize;
                db.resize(len, 0);
            }
            5 => {
                // A page copied over another: shared pages, cycles, stale ids.
                let (from, to) = (page(&mut s), page(&mut s));
                if from + PAGE <= db.len() && to + PAGE <= db.len() {
                    db.copy_within(from..from + PAGE, to);
                }
            }
            _ => {
                let p = page(&mut s);
                let flags = [0x01, 0x02, 0x04, 0x10, 0x00, 0xff][s.u8() as usize % 6];
                put(&mut db, p + 8, 2, flags);
            }
        }
    }
    for meta in [0, PAGE] {
        if meta + PAGE <= db.len() {
            seal_meta(&mut db[meta..]);
        }
    }
    let sum = Sha256::digest(&db);
    db.extend_from_slice(&sum);
    db
}

/// A golden snapshot with one meta field of both meta pages set to `value` (`width` bytes),
/// checksums and trailer recomputed.
pub fn with_meta_field(seed: &[u8], at: usize, width: usize, value: u64) -> Vec<u8> {
    let mut db = seed[..seed.len() - 32].to_vec();
    for meta in [0, PAGE] {
        put(&mut db, meta + 16 + at, width, value);
        seal_meta(&mut db[meta..]);
    }
    let sum = Sha256::digest(&db);
    db.extend_from_slice(&sum);
    db
}
