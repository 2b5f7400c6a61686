//! Fault-injecting proxies on loopback, for the fault suite: one cuts or stalls a TCP
//! connection after a number of bytes one way (etcd dying mid-snapshot, S3 dying or hanging
//! mid-upload; TLS passes through untouched), one answers the first HTTP requests with 503
//! SlowDown (an S3 server under load), one refuses the PUTs of some names (a bucket policy
//! that lets one write through and not the next).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
    /// Connections accepted so far (for `slow_down`: the first ones were refused).
    pub connections: Arc<AtomicUsize>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which direction of a connection a limit counts.
#[derive(Clone, Copy)]
pub enum Direction {
    /// Bytes from the server (a snapshot stream).
    FromServer,
    /// Bytes from the client (an upload).
    FromClient,
}

/// What happens to a connection once `limit` bytes went through it.
#[derive(Clone, Copy)]
pub enum OnLimit {
    /// The connection is closed: the server died.
    Cut,
    /// Nothing more is forwarded that way, and nothing is closed: a hung server.
    Stall,
}

/// Forwards to `target`, but closes every connection once `limit` bytes came from the server
/// (TLS passes through untouched).
pub async fn cut_after(target: u16, limit: usize) -> Proxy {
    limited(target, limit, Direction::FromServer, OnLimit::Cut).await
}

/// Forwards to `target`; each connection may carry `limit` bytes from the client, then `on`.
/// Small requests (listings, aborts) still pass on fresh connections.
pub async fn upload_limit(target: u16, limit: usize, on: OnLimit) -> Proxy {
    limited(target, limit, Direction::FromClient, on).await
}

/// Forwards to `target`; each connection may carry `limit` bytes from the server, then `on`
/// (a download that hangs midway).
pub async fn download_limit(target: u16, limit: usize, on: OnLimit) -> Proxy {
    limited(target, limit, Direction::FromServer, on).await
}

/// Forwards to `target`; the `dir` side of each connection may carry `limit` bytes, then `on`.
async fn limited(target: u16, limit: usize, dir: Direction, on: OnLimit) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                // `from`/`to` is the limited direction; the other one is copied freely.
                let (mut from, mut to, mut back_from, mut back_to): (
                    OwnedReadHalf,
                    OwnedWriteHalf,
                    OwnedReadHalf,
                    OwnedWriteHalf,
                ) = match dir {
                    Direction::FromServer => (sr, cw, cr, sw),
                    Direction::FromClient => (cr, sw, sr, cw),
                };
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut back_from, &mut back_to).await;
                });
                let mut sent = 0;
                let mut buf = vec![0; 16384];
                while sent < limit {
                    let n = match from.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                if let OnLimit::Stall = on {
                    // Hold both halves open, forwarding nothing more, until the peer leaves.
                    let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
                }
                back.abort();
            });
        }
    });
    Proxy {
        port,
        task,
        connections: Arc::default(),
    }
}

/// Forwards HTTP to `target`, but answers the first `refuse` requests with 503 SlowDown (and
/// closes those connections).
pub async fn slow_down(target: u16, refuse: usize) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                if count.fetch_add(1, Ordering::SeqCst) < refuse {
                    // Read the request head, then refuse it.
                    if read_head(&mut client).await.is_some() {
                        let reduce = "Please reduce your request rate.";
                        s3_error(&mut client, "503 Service Unavailable", "SlowDown", reduce).await;
                    }
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Proxy {
        port,
        task,
        connections,
    }
}

/// Forwards HTTP to `target`, one request a connection, but answers every PUT whose path ends
/// with `suffix` with 403 AccessDenied. Each forwarded request is sent with `Connection: close`,
/// so the client opens a new connection (and this proxy sees the head) for the next one.
pub async fn refuse_puts(target: u16, suffix: &'static str) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Some((head, end)) = read_head(&mut client).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                let line = text.lines().next().unwrap_or_default();
                let path = line.split(' ').nth(1).unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default();
                if line.starts_with("PUT ") && path.ends_with(suffix) {
                    count.fetch_add(1, Ordering::SeqCst);
                    s3_error(
                        &mut client,
                        "403 Forbidden",
                        "AccessDenied",
                        "Access Denied",
                    )
                    .await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let mut forwarded: String = text
                    .trim_end()
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                forwarded.push_str("Connection: close\r\n\r\n");
                if server.write_all(forwarded.as_bytes()).await.is_err()
                    || server.write_all(&head[end..]).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Proxy {
        port,
        task,
        connections: refused,
    }
}

/// The bytes read until the end of the first request's head (they may run into its body), and
/// where the head ends; `None` when the client leaves first.
async fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, usize)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some((head, at + 4));
        }
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Answers with an S3 error document and closes the connection.
async fn s3_error(client: &mut TcpStream, status: &str, code: &str, message: &str) {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>");
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
}

/// Forwards TCP to `target` while the switch says up; set it to `true` and every connection is
/// cut and new ones are closed at once (an S3 server that went away), until it is `false`.
pub async fn switchable(target: u16) -> (Proxy, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (down, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut watch = watch.clone();
            tokio::spawn(async move {
                if *watch.borrow() {
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = watch.wait_for(|down| *down) => {}
                }
            });
        }
    });
    let proxy = Proxy {
        port,
        task,
        connections: Arc::default(),
    };
    (proxy, down)
}
