//! A paced write load on etcd that reports its latency: RATE puts per second of 2 KiB each,
//! each timed from its *scheduled* start (so a stalled etcd also delays the puts queued behind
//! the slow one, as a Kubernetes API server's writes would be), until the file STOP exists.
//! Prints `p50_ms p99_ms max_ms count over_25ms` on exit (25 ms: etcd's guidance for backend
//! commit latency). With LATENCY_TRACE=FILE, it also writes each put
//! slower than 20 ms to FILE as `unix_ms latency_ms` (scheduled start, latency), to line the
//! stalls up with the phases of what ran beside it.
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
            let _ = tx.send((scheduled, scheduled.elapsed()));
        });
        i += 1;
    }
    drop(tx);
    let mut lat = Vec::new();
    let mut slow = String::new();
    let epoch = std::time::SystemTime::now() - start.elapsed();
    while let Some((scheduled, d)) = rx.recv().await {
        let ms = d.as_secs_f64() * 1000.0;
        if ms > 20.0 {
            let at = epoch + (scheduled - start);
            let unix = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            slow.push_str(&format!("{} {ms:.1}\n", unix.as_millis()));
        }
        lat.push(ms);
    }
    if let Ok(path) = std::env::var("LATENCY_TRACE") {
        std::fs::write(path, slow).expect("LATENCY_TRACE");
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "{:.2} {:.2} {:.2} {} {}",
        q(0.5),
        q(0.99),
        lat.last().copied().unwrap_or(0.0),
        lat.len(),
        lat.iter().filter(|&&ms| ms > 25.0).count()
    );
}
