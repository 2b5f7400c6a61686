//! Fills an etcd with Kubernetes-like data for benchmarks: keys under /registry/, values of
//! 1-20 KiB, half JSON-like text (as specs compress) and half random bytes (as encrypted
//! Secrets do not), written in transactions of 128 puts by a few concurrent writers.
//!
//! cargo run --release --example load -- http://127.0.0.1:2379 1GiB

use std::time::Instant;

use etcd_client::{Client, Txn, TxnOp};

const WRITERS: usize = 4;
const PER_TXN: usize = 128;

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn value(rng: &mut Rng, i: u64) -> Vec<u8> {
    let len = 1024 + (rng.next() % (19 * 1024)) as usize;
    if i % 2 == 0 {
        let mut s = format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm-{i}\",\"namespace\":\"ns-{}\",\"uid\":\"{:016x}\"}},\"data\":{{", i % 97, rng.next());
        while s.len() < len {
            s.push_str(&format!(
                "\"key-{}\":\"value {} for replica {}\",",
                rng.next() % 1000,
                rng.next() % 100_000,
                rng.next() % 7
            ));
        }
        s.truncate(len);
        s.into_bytes()
    } else {
        (0..len.div_ceil(8))
            .flat_map(|_| rng.next().to_le_bytes())
            .take(len)
            .collect()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let target = etcd_backup::config::parse_size(args.get(2).map(String::as_str).unwrap_or("1GiB"))
        .expect("a size such as 1GiB");
    let client = Client::connect([endpoint.as_str()], None)
        .await
        .expect("connecting to etcd");
    let start = Instant::now();
    let per_writer = target / WRITERS as u64;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut kv = client.kv_client();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            let (mut written, mut i) = (0u64, 0u64);
            while written < per_writer {
                let mut ops = Vec::with_capacity(PER_TXN);
                let mut bytes = 0;
                // etcd takes at most 128 operations and 1.5 MiB per request.
                while ops.len() < PER_TXN && bytes < 1_200_000 && written + bytes < per_writer {
                    let n = (w as u64) << 40 | i;
                    let v = value(&mut rng, n);
                    bytes += v.len() as u64;
                    ops.push(TxnOp::put(
                        format!("/registry/objects/ns-{}/obj-{n:012}", n % 97),
                        v,
                        None,
                    ));
                    i += 1;
                }
                kv.txn(Txn::new().and_then(ops)).await.expect("txn");
                written += bytes;
            }
            written
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    eprintln!(
        "loaded {} MiB in {:.1}s",
        total >> 20,
        start.elapsed().as_secs_f64()
    );
}
