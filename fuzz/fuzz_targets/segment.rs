//! A stream segment's reader on what a bucket writer can put there. Each input is the segment
//! between its magic and its SHA-256, which the target computes, so the checksum is always
//! valid and every check behind it is reached. It may refuse anything, but must never panic or
//! allocate more than the input backs, and what it accepts must hold its invariants.
#![no_main]

use etcd_backup::stream::segment::{Reader, Record, MAGIC};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|input: &[u8]| {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(input);
    let sha = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sha);
    let Ok(mut r) = Reader::new(&bytes[..]) else {
        return;
    };
    let header = r.header().clone();
    let mut next = header.first;
    let mut events = 0u64;
    loop {
        match r.next_record() {
            Ok(Some(Record::Revision(rev))) => {
                assert_eq!(rev.revision, next);
                assert!(rev.revision <= header.last);
                assert!(!rev.events.is_empty());
                assert!(rev.events.iter().all(|e| e.kv.mod_revision == rev.revision));
                events += rev.events.len() as u64;
                next += 1;
            }
            Ok(Some(Record::Lease { .. })) => {}
            // Accepted whole: it ended where its header said, with the counts it gave.
            Ok(None) => {
                assert_eq!(next - 1, header.last);
                assert_eq!(events, header.events);
                return;
            }
            Err(_) => return,
        }
    }
});
