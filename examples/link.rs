//! A link emulator for the benchmark (this kernel has no netem): a TCP proxy on loopback that
//! delays every byte by a fixed one-way delay in each direction and caps each direction's
//! bandwidth, shared by all connections, as one network path would (or, with `per-connection`
//! last, each connection's own, as across regions where one TCP stream is held back by its
//! window and losses rather than by the path). Prints its port, then serves until killed.
//!
//! cargo run --release --example link -- 127.0.0.1:8333 20 1000   # 40 ms round trip, 1 Gbit/s
//! cargo run --release --example link -- 127.0.0.1:8333 20 200 per-connection

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One direction of the path: when it is next free to start sending, at `rate` bytes/s.
struct Direction {
    rate: f64,
    free_at: Mutex<Instant>,
}

impl Direction {
    /// Reserves the time to put `n` bytes on the wire; returns when they are all sent.
    fn reserve(&self, n: usize) -> Instant {
        let mut free = self.free_at.lock().unwrap();
        let start = (*free).max(Instant::now());
        *free = start + Duration::from_secs_f64(n as f64 / self.rate);
        *free
    }
}

/// Copies `from` to `to`, each chunk sent once the path is free and arriving `delay` later.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    path: Arc<Direction>,
) {
    // Enough chunks in flight for the bandwidth-delay product (1 Gbit/s x 20 ms = 2.5 MB).
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(128);
    let read = async move {
        let mut buf = vec![0; 64 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let sent = path.reserve(n);
            if tx.send((sent + delay, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((arrives, chunk)) = rx.recv().await {
            tokio::time::sleep_until(arrives).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args[1].clone();
    let delay = Duration::from_millis(args[2].parse().expect("one-way delay in ms"));
    let rate = args[3].parse::<f64>().expect("Mbit/s") * 1e6 / 8.0;
    let per_connection = args.get(4).is_some_and(|a| a == "per-connection");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let direction = || {
        Arc::new(Direction {
            rate,
            free_at: Mutex::new(Instant::now()),
        })
    };
    let (up, down) = (direction(), direction());
    loop {
        let (client, _) = listener.accept().await.unwrap();
        let (up, down) = if per_connection {
            (direction(), direction())
        } else {
            (up.clone(), down.clone())
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pump(cr, sw, delay, up), pump(sr, cw, delay, down));
        });
    }
}
