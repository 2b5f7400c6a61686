//! What signing costs the stream per segment: one 10 s segment at 200 and at 2,000 puts/s of
//! 2 KiB, sealed (zstd, as the stream does) with and without a signing key, and read back on
//! the way back with and without a verify key, rounds alternating. Prints, per rate, the mean
//! time of each and the ratio signed/unsigned, and the bytes a signature adds.
//!
//! cargo run --release --example sign_cost -- [ROUNDS]

use std::time::Instant;

use etcd_backup::sign::{keygen, SigningKey, VerifyKeys, SEGMENT_NAMESPACE};
use etcd_backup::stream::kv::KeyValue;
use etcd_backup::stream::names::{Generation, Name};
use etcd_backup::stream::seal::{open, seal, Keys};
use etcd_backup::stream::segment::{Event, Header, Kind, Record, Records, Revision};

fn segment(dir: &std::path::Path, revisions: i64) -> (Records, Header) {
    let mut records = Records::new(dir).unwrap();
    let value: Vec<u8> = (0..2048u32).map(|i| (i * 31 % 251) as u8).collect();
    for r in 1..=revisions {
        let kv = KeyValue {
            key: format!("/registry/configmaps/default/cm-{}", r % 5000).into_bytes(),
            create_revision: r,
            mod_revision: r,
            version: 1,
            value: value.clone(),
            lease: 0,
        };
        let events = vec![Event {
            kind: Kind::Put,
            kv,
        }];
        records
            .push(&Record::Revision(Revision {
                revision: r,
                received_ms: r,
                events,
            }))
            .unwrap();
    }
    let header = Header {
        generation: "20261207T000000Z".into(),
        cluster_id: "cafe".into(),
        first: 1,
        last: revisions,
        revisions: revisions as u64,
        events: revisions as u64,
        previous: "base:0".into(),
    };
    (records, header)
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(5, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let made = keygen(&dir.path().join("k")).unwrap();
    let key = SigningKey::read(&made.private).unwrap();
    let verify = VerifyKeys::parse(&made.public_key).unwrap();
    let generation = Generation::parse("20261207T000000Z").unwrap();
    println!("rate_per_s  revisions  seal_unsigned_ms  seal_signed_ms  seal_ratio  read_unsigned_ms  read_checked_ms  read_ratio  bytes_unsigned  bytes_signed  added");
    for rate in [200i64, 2000] {
        let revisions = rate * 10;
        let name = Name::Segment {
            generation,
            first: 1,
            last: revisions,
            encrypted: false,
        };
        let (mut seal_t, mut read_t, mut bytes) = ([0f64; 2], [0f64; 2], [0u64; 2]);
        for _ in 0..rounds {
            for (i, signing) in [None, Some(&key)].into_iter().enumerate() {
                let (records, header) = segment(dir.path(), revisions);
                let keys = Keys {
                    recipients: &[],
                    signing,
                };
                let t = Instant::now();
                let sealed = seal(records, &header, name, dir.path(), &keys, 0).unwrap();
                seal_t[i] += t.elapsed().as_secs_f64() * 1e3;
                bytes[i] = sealed.len;
                let stored = std::fs::read(&sealed.path).unwrap();
                let t = Instant::now();
                let mut r = open(&stored[..], None).unwrap();
                while r.next_record().unwrap().is_some() {}
                if signing.is_some() {
                    let (msg, sig) = r.signature().unwrap();
                    verify.check_in(SEGMENT_NAMESPACE, msg, sig).unwrap();
                }
                read_t[i] += t.elapsed().as_secs_f64() * 1e3;
            }
        }
        let n = rounds as f64;
        println!(
            "{rate:>10}  {revisions:>9}  {:>16.2}  {:>14.2}  {:>10.3}  {:>16.2}  {:>15.2}  {:>10.3}  {:>14}  {:>12}  {:>5}",
            seal_t[0] / n,
            seal_t[1] / n,
            seal_t[1] / seal_t[0],
            read_t[0] / n,
            read_t[1] / n,
            read_t[1] / read_t[0],
            bytes[0],
            bytes[1],
            bytes[1] as i64 - bytes[0] as i64
        );
    }
}
