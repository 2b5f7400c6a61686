//! A stream segment's reader on what a bucket writer can put there. Each input is a mode byte,
//! then the segment between its magic and its SHA-256, which the target computes, so the
//! checksum is always valid and every check behind it is reached. With the mode's low bit set
//! the segment is a signed one (the signed magic), and the mode's other bits say how many of
//! the last bytes follow the SHA-256 as its signature trailer. It may refuse anything, but must
//! never panic or allocate more than the input backs, and what it accepts must hold its
//! invariants.
#![no_main]

use etcd_backup::stream::segment::{Reader, Record, MAGIC, MAGIC_SIGNED};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, input)) = input.split_first() else {
        return;
    };
    let signed = mode & 1 == 1;
    let tail = if signed {
        usize::from(mode >> 1).min(input.len())
    } else {
        0
    };
    let (body, trailer) = input.split_at(input.len() - tail);
    let mut bytes = if signed { MAGIC_SIGNED } else { MAGIC }.to_vec();
    bytes.extend_from_slice(body);
    let sha = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sha);
    bytes.extend_from_slice(trailer);
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
                // A signed one holds its signature, no longer than the trailer it came in.
                assert_eq!(r.signature().is_some(), signed);
                if let Some((_, sig)) = r.signature() {
                    assert!(sig.len() + 4 <= trailer.len());
                }
                return;
            }
            Err(_) => return,
        }
    }
});
