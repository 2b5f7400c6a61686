//! The snapshot checks on crafted files: a script mutates bbolt's fields in a golden snapshot
//! and recomputes the meta checksums and the SHA-256 trailer (`tests/mutate.rs`), so every input
//! reaches the walk. It may reject anything, but must never panic, hang or allocate without
//! bound. Crashes become regression files in `tests/data/fuzz/`.
#![no_main]

use etcd_backup::snapshot::verify;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/mutate.rs"]
mod mutate;

fuzz_target!(|script: &[u8]| {
    let snapshot = mutate::build(script);
    let mut t = verify::TrailerCheck::default();
    t.update(&snapshot);
    assert!(t.finish().is_ok(), "the mutator seals every file");
    let _ = verify::walk(&snapshot.as_slice(), snapshot.len() as u64 - 32);
});
