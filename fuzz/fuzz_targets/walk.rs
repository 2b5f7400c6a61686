//! The bbolt walker and the trailer check on arbitrary bytes: they may reject anything, but
//! must never panic, hang or allocate without bound.
#![no_main]

use etcd_backup::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify::walk(&data, data.len() as u64);
    let mut t = verify::TrailerCheck::default();
    t.update(data);
    if t.finish().is_ok() {
        let _ = verify::walk(&data, data.len() as u64 - 32);
    }
});
