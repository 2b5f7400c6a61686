//! Fault-injecting proxies on loopback, for the fault suite: one cuts a TCP stream after a
//! number of bytes from the server (etcd dying mid-snapshot, TLS passes through untouched),
//! one answers the first HTTP requests with 503 Slow Down (an S3 server under load).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Forwards to `target`, but closes every connection once `limit` bytes came from the server.
pub async fn cut_after(target: u16, limit: usize) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0;
                let mut buf = vec![0; 16384];
                while sent < limit {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                up.abort();
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
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(resp.as_bytes()).await;
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

/// What happens to a connection once the client has sent `limit` bytes through it.
#[derive(Clone, Copy)]
pub enum OnLimit {
    /// The connection is closed: the server died mid-upload.
    Cut,
    /// Nothing more is forwarded, and nothing is closed: a hung server.
    Stall,
}

/// Forwards to `target`; each connection may carry `limit` bytes from the client, then `on`.
/// Small requests (listings, aborts) still pass on fresh connections.
pub async fn upload_limit(target: u16, limit: usize, on: OnLimit) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut sent = 0;
                let mut buf = vec![0; 16384];
                while sent < limit {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                match on {
                    OnLimit::Cut => down.abort(),
                    OnLimit::Stall => {
                        // Hold both halves open, forwarding nothing, until the client leaves.
                        let _ = tokio::io::copy(&mut cr, &mut tokio::io::sink()).await;
                        down.abort();
                    }
                }
            });
        }
    });
    Proxy {
        port,
        task,
        connections: Arc::default(),
    }
}
