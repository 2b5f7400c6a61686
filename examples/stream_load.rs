//! A steady write load for `bench/stream.sh`: RATE puts a second for SECONDS, values of about
//! 1 KiB over 5,000 keys (a Kubernetes cluster's churn: leases, endpoints, events), issued in
//! batches every 10 ms so that rates above one put's round trip are reached. Writes each put's
//! revision and the moment etcd acknowledged it (Unix ms) to OUT, one "revision ms" a line.
//!
//! cargo run --release --example stream_load -- http://127.0.0.1:2379 200 60 puts.txt

use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, rate, seconds, out] = &args[..] else {
        eprintln!("usage: stream_load ENDPOINT RATE SECONDS OUT");
        std::process::exit(2);
    };
    let rate: u64 = rate.parse().unwrap();
    let seconds: u64 = seconds.parse().unwrap();
    let client = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .unwrap();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut issued = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let value = "v".repeat(1000);
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while issued < due {
            let mut kv = client.kv_client();
            let key = format!("/registry/bench/k{:05}", issued % 5000);
            let value = format!("{issued}:{value}");
            tasks.spawn(async move {
                let r = kv.put(key, value, None).await.unwrap();
                let ms = chrono::Utc::now().timestamp_millis();
                (r.header().unwrap().revision(), ms)
            });
            issued += 1;
        }
    }
    let mut lines = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lines.push(r.unwrap());
    }
    lines.sort();
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for (rev, ms) in &lines {
        writeln!(f, "{rev} {ms}").unwrap();
    }
    eprintln!(
        "{} puts in {:.1}s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
}
