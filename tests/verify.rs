//! `verify` agrees with `etcdutl snapshot status` on real snapshots, and rejects damage.

use std::io::Write;

use etcd_backup::snapshot::verify::{self, Invalid};
use sha2::{Digest, Sha256};

use crate::common::{golden_status, read_data, GOLDEN};

fn file_with(bytes: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn check(bytes: &[u8]) -> Result<verify::Verified, Invalid> {
    let mut f = file_with(bytes);
    std::io::Seek::rewind(&mut f).unwrap();
    verify::check_file(&mut f)
}

#[test]
fn agrees_with_etcdutl_on_every_golden_file() {
    for name in GOLDEN {
        let v = check(&read_data(&format!("{name}.db"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = serde_json::to_value(&v.status).unwrap();
        let theirs = golden_status(name);
        for field in ["hash", "revision", "totalKey", "totalSize"] {
            assert_eq!(ours[field], theirs[field], "{name}: {field}");
        }
        // The trailer is the SHA-256 of the database, which is what we report.
        let db = read_data(&format!("{name}.db"));
        assert_eq!(v.sha256[..], Sha256::digest(&db[..db.len() - 32])[..]);
    }
}

#[test]
fn agrees_with_etcd_3_4_on_status_and_hash_kv() {
    // Snapshots of a live etcd 3.4.23 (tests/data/make-golden-3.4.sh): etcdctl 3.4's status,
    // and the member's own HashKV at the snapshot's revision (with leases, deletes, and for
    // the second a compaction followed by more writes).
    for name in ["v34-medium", "v34-compacted"] {
        let v = check(&read_data(&format!("{name}.db"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = serde_json::to_value(&v.status).unwrap();
        let theirs = golden_status(name);
        for field in ["hash", "revision", "totalKey", "totalSize"] {
            assert_eq!(ours[field], theirs[field], "{name}: {field}");
        }
        let member: serde_json::Value =
            serde_json::from_slice(&read_data(&format!("{name}.hashkv.json"))).unwrap();
        let member = &member[0]["HashKV"];
        assert_eq!(ours["hashKV"], member["hash"], "{name}: hashKV");
        assert_eq!(
            ours["hashKVCompactRevision"], member["compact_revision"],
            "{name}: compact revision"
        );
    }
}

/// Offsets of interest in a snapshot: both meta pages (header, magic, root, pgid, checksum),
/// every page header, and bytes inside leaf and overflow pages.
fn interesting_offsets(len: usize) -> Vec<usize> {
    let mut v = vec![
        0,
        8,
        16,
        20,
        24,
        32,
        48,
        56,
        64,
        72,
        79,
        4096,
        4096 + 8,
        4096 + 16,
        4096 + 72,
    ];
    v.extend((2..len / 4096).map(|p| p * 4096)); // page ids
    v.extend((2..len / 4096).map(|p| p * 4096 + 8)); // page flags
    v.extend((2..len / 4096).map(|p| p * 4096 + 10)); // element counts
    v.extend((2..len / 4096).map(|p| p * 4096 + 20)); // first element
    v.extend((2..len / 4096).map(|p| p * 4096 + 2048)); // data
    v.extend([len - 32, len - 17, len - 1]); // the trailer
    v.retain(|&o| o < len);
    v
}

#[test]
fn every_flipped_byte_is_reported() {
    // Every byte of a small snapshot, at a stride; chosen offsets of a larger one.
    let small = read_data("small.db");
    let offsets: Vec<usize> = (0..small.len())
        .step_by(7)
        .chain(interesting_offsets(small.len()))
        .collect();
    for o in offsets {
        let mut bad = small.clone();
        bad[o] ^= 0x10;
        assert!(check(&bad).is_err(), "small.db: flip at {o} passed");
    }
    let medium = read_data("medium.db");
    for o in interesting_offsets(medium.len()).into_iter().step_by(11) {
        let mut bad = medium.clone();
        bad[o] ^= 0x01;
        assert!(check(&bad).is_err(), "medium.db: flip at {o} passed");
    }
}

#[test]
fn truncated_appended_zeroed_and_stripped_files_are_reported() {
    let db = read_data("medium.db");
    for len in [
        0,
        1,
        31,
        32,
        100,
        4096,
        8191,
        8192,
        100_000,
        db.len() / 2,
        db.len() - 33,
        db.len() - 32,
        db.len() - 1,
    ] {
        assert!(check(&db[..len]).is_err(), "truncated to {len} passed");
    }
    let mut appended = db.clone();
    appended.push(0);
    assert!(check(&appended).is_err());
    let mut zeroed = db.clone();
    zeroed[5 * 4096..6 * 4096].fill(0);
    assert!(check(&zeroed).is_err());
    match check(&db[..db.len() - 32]) {
        Err(Invalid::MissingTrailer(n)) => assert_eq!(n as usize, db.len() - 32),
        other => panic!("stripped trailer: {other:?}"),
    }
}

/// A damaged database with a freshly computed, valid trailer: only the walk can catch it.
fn rehashed(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(&Sha256::digest(body));
    v
}

#[test]
fn the_walk_catches_structural_damage_behind_a_valid_trailer() {
    let db = read_data("medium.db");
    let body = &db[..db.len() - 32];
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("meta 0 magic", Box::new(|b| b[16] ^= 1)),
        ("meta 1 checksum", Box::new(|b| b[4096 + 16 + 56] ^= 1)),
        ("zeroed page 3", Box::new(|b| b[3 * 4096..4 * 4096].fill(0))),
        ("page id of page 2", Box::new(|b| b[2 * 4096] ^= 1)),
        ("truncated body", Box::new(|b| b.truncate(b.len() - 4096))),
    ];
    for (what, damage) in cases {
        let mut b = body.to_vec();
        damage(&mut b);
        match check(&rehashed(&b)) {
            Err(Invalid::Corrupt(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // Damage to every page the walk reads, in turn: a flipped page type must be caught.
    let f = file_with(body);
    let mut db = etcd_backup::snapshot::bbolt::Db::open(&f, body.len() as u64).unwrap();
    db.walk(&mut NoOp).unwrap();
    let mut heads = Vec::new();
    let mut p = 2;
    while p < body.len() / 4096 {
        let header = &body[p * 4096..p * 4096 + 16];
        let overflow = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
        if db.reached(p as u64) && u64::from_le_bytes(header[..8].try_into().unwrap()) == p as u64 {
            heads.push(p);
            p += 1 + overflow;
        } else {
            p += 1;
        }
    }
    assert!(heads.len() > 100, "only {} pages reached", heads.len());
    for p in heads {
        let mut b = body.to_vec();
        b[p * 4096 + 8] ^= 0x07; // page flags
        match check(&rehashed(&b)) {
            Err(Invalid::Corrupt(_)) => {}
            other => panic!("page {p} with damaged flags: {other:?}"),
        }
    }
}

struct NoOp;
impl etcd_backup::snapshot::bbolt::Visitor for NoOp {
    fn bucket(&mut self, _: &[u8]) {}
    fn entry(&mut self, _: &[u8], _: etcd_backup::snapshot::bbolt::Entry<'_>) {}
}

#[test]
fn no_flip_panics_or_hangs_the_walk() {
    // Every byte of a small database, several flips each, walked without the trailer check.
    let db = read_data("small.db");
    let body = &db[..db.len() - 32];
    let f = file_with(body);
    for o in 0..body.len() as u64 {
        for bit in [0x01u8, 0x80, 0xff] {
            // Flip in place, walk, flip back: one file for the whole sweep.
            use std::os::unix::fs::FileExt;
            let mut byte = [0u8];
            f.read_exact_at(&mut byte, o).unwrap();
            f.write_all_at(&[byte[0] ^ bit], o).unwrap();
            let _ = verify::walk(&f, body.len() as u64);
            f.write_all_at(&byte, o).unwrap();
        }
    }
}

#[test]
fn a_huge_high_water_page_with_a_valid_checksum_is_rejected_not_allocated() {
    use etcd_backup::snapshot::bbolt::field;
    // 2^53 pages: 2^65 bytes overflows; bbolt's bitmap of it would be 2^50 bytes.
    for pgid in [1u64 << 53, u64::MAX / 4096 + 1, u64::MAX] {
        let snap = crate::mutate::with_meta_field(&read_data("small.db"), field::PGID, 8, pgid);
        match check(&snap) {
            Err(Invalid::Corrupt(c)) => assert!(c.to_string().contains("meta page"), "{c}"),
            other => panic!("pgid {pgid}: {other:?}"),
        }
    }
    // Valid but larger than the file: truncated, still no allocation of the claimed size.
    let snap = crate::mutate::with_meta_field(&read_data("small.db"), field::PGID, 8, 1 << 40);
    assert!(matches!(check(&snap), Err(Invalid::Corrupt(_))));
}

#[test]
fn a_freelist_page_beyond_the_file_is_rejected() {
    use etcd_backup::snapshot::bbolt::field;
    let small = read_data("small.db");
    // small.db has 5 pages and no synced freelist (u64::MAX), which stays valid.
    assert!(check(&small).is_ok());
    for freelist in [5u64, 6, 1 << 40, 0, 1] {
        let snap = crate::mutate::with_meta_field(&small, field::FREELIST, 8, freelist);
        match check(&snap) {
            Err(Invalid::Corrupt(c)) => assert!(c.to_string().contains("freelist"), "{c}"),
            other => panic!("freelist {freelist}: {other:?}"),
        }
    }
    // In range, but not a freelist page: bbolt would read a tree page as its freelist.
    let snap = crate::mutate::with_meta_field(&small, field::FREELIST, 8, 2);
    match check(&snap) {
        Err(Invalid::Corrupt(c)) => assert!(c.to_string().contains("freelist"), "{c}"),
        other => panic!("freelist on a leaf: {other:?}"),
    }
}

#[test]
fn the_fuzzer_regression_files_are_rejected_without_panic() {
    // Each file is a mutation script (tests/mutate.rs) that once crashed or hung the walk.
    let dir = crate::common::data("fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let snap = crate::mutate::build(&std::fs::read(&path).unwrap());
        // Each once crashed or passed a file bbolt cannot open: now each is rejected.
        assert!(check(&snap).is_err(), "{} passes the check", path.display());
        n += 1;
    }
    // The mutator itself: its output always has a valid trailer, so the walk is what judges.
    for script in [
        &b"\x01"[..],
        b"\x02\x00\x00\x03\x05",
        b"\x00\x04\x00\x00\x00",
    ] {
        let snap = crate::mutate::build(script);
        let mut t = verify::TrailerCheck::default();
        t.update(&snap);
        assert!(t.finish().is_ok());
    }
    assert!(n >= 2, "only {n} regression files in {}", dir.display());
}
