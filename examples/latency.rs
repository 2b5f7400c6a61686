//! A paced write load on etcd that reports its latency: RATE puts per second of 2 KiB each,
//! each timed from its *scheduled* start (so a stalled etcd also delays the puts queued behind
//! the slow one, as a Kubernetes API server's writes would be), until the file STOP exists.
//! Prints `p50_ms p99_ms max_ms count` on exit.
//!
//! cargo run --release --example latency -- http://127.0.0.1:2379 200 /tmp/stop

use std::time::{Duration, Instant};

use etcd_client::Client;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, rate, stop) = (
        args[1].clone(),
        args[2].parse::<u64>().expect("RATE"),
        std::path::PathBuf::from(&args[3]),
    );
    let client = Client::connect([endpoint], None).await.expect("connect");
    let value = vec![b'v'; 2048];
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut i = 0u64;
    while !stop.exists() {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (mut c, v, tx) = (client.clone(), value.clone(), tx.clone());
        tokio::spawn(async move {
            c.put(format!("/registry/latency/k{}", i % 1000), v, None)
                .await
                .expect("put");
            let _ = tx.send(scheduled.elapsed());
        });
        i += 1;
    }
    drop(tx);
    let mut lat = Vec::new();
    while let Some(d) = rx.recv().await {
        lat.push(d.as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "{:.2} {:.2} {:.2} {}",
        q(0.5),
        q(0.99),
        lat.last().copied().unwrap_or(0.0),
        lat.len()
    );
}
