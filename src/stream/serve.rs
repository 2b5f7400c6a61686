//! `/metrics` and `/healthz` of a running stream, on BACKUP_METRICS_LISTEN: a long-running
//! process is scraped, not pushed. A minimal HTTP/1.1 responder: one request per connection,
//! read with a size and time limit, since anything on the network may connect.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::follow::Status;

/// The Prometheus text exposition of `s`.
pub fn render(s: &Status) -> String {
    let secs = |ms: &std::sync::atomic::AtomicI64| {
        format!("{:.3}", ms.load(Ordering::Relaxed) as f64 / 1000.0)
    };
    let int = |v: &std::sync::atomic::AtomicI64| v.load(Ordering::Relaxed).to_string();
    let count = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed).to_string();
    let (oldest_ms, newest_ms) = (
        s.restorable_oldest_ms.load(Ordering::Relaxed),
        s.safe_received_ms.load(Ordering::Relaxed),
    );
    let window = if oldest_ms > 0 && newest_ms > 0 {
        format!("{:.3}", (newest_ms - oldest_ms).max(0) as f64 / 1000.0)
    } else {
        "0".into()
    };
    // (name, kind, help, value)
    let metrics = [
        ("received_revision", "gauge", "The newest revision received from etcd's watch.", int(&s.received)),
        ("safe_revision", "gauge", "The newest revision in a segment in the bucket.", int(&s.safe)),
        ("safe_change_timestamp_seconds", "gauge", "When the stream received the newest revision that is now in the bucket (0: none yet).", secs(&s.safe_received_ms)),
        ("last_upload_timestamp_seconds", "gauge", "When the newest segment reached the bucket (0: none yet).", secs(&s.safe_at_ms)),
        ("generation_start_timestamp_seconds", "gauge", "When the current generation started.", int(&s.generation_started)),
        ("spooled_bytes", "gauge", "Bytes of sealed segments waiting on scratch disk for the bucket.", count(&s.spooled)),
        ("segments_total", "counter", "Segments uploaded.", count(&s.segments)),
        ("uploaded_bytes_total", "counter", "Bytes of segments uploaded, as stored.", count(&s.bytes)),
        ("generations_ended_total", "counter", "Generations that broke (a gap, a compaction, a cluster change) since the process started.", count(&s.generations_ended)),
        ("upload_failures_total", "counter", "Segment uploads that failed and were retried.", count(&s.upload_failures)),
        ("watch_restarts_total", "counter", "Times the watch broke and was reopened.", count(&s.watch_restarts)),
        ("restorable_oldest_revision", "gauge", "The oldest revision a restore can reach in the current generation (0: not known yet).", int(&s.restorable_oldest)),
        ("restorable_oldest_timestamp_seconds", "gauge", "When the base of the oldest restorable revision had been taken (0: not known yet).", secs(&s.restorable_oldest_ms)),
        ("restorable_window_seconds", "gauge", "How far back a restore can reach: from the oldest restorable base to the newest change in the bucket (0: not known yet).", window),
        ("pitr_window_seconds", "gauge", "BACKUP_PITR_WINDOW: how far back prune keeps the history.", int(&s.pitr_window_s)),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        let name = format!("etcd_backup_stream_{name}");
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

/// The response to one request head.
fn respond(head: &[u8], s: &Status) -> (u16, &'static str, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match (method, path) {
        (b"GET", b"/metrics") => (200, "text/plain; version=0.0.4", render(s)),
        (b"GET", b"/healthz") => (200, "text/plain", "ok\n".into()),
        (b"GET", _) => (
            404,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
        _ => (405, "text/plain", "only GET\n".into()),
    }
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(addr: std::net::SocketAddr, status: Arc<Status>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let read = async {
                    let mut buf = [0u8; 1024];
                    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = conn.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    std::io::Result::Ok(())
                };
                if !matches!(
                    tokio::time::timeout(Duration::from_secs(5), read).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                let (code, kind, body) = respond(&head, &status);
                let reason = match code {
                    200 => "OK",
                    404 => "Not Found",
                    _ => "Method Not Allowed",
                };
                let msg = format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), conn.write_all(msg.as_bytes()))
                        .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_figures() {
        let s = Status::default();
        s.safe.store(42, Ordering::Relaxed);
        s.safe_received_ms
            .store(1_700_000_000_250, Ordering::Relaxed);
        let (code, _, body) = respond(b"GET /metrics HTTP/1.1\r\n\r\n", &s);
        assert_eq!(code, 200);
        assert!(
            body.contains("\netcd_backup_stream_safe_revision 42\n"),
            "{body}"
        );
        assert!(body.contains("etcd_backup_stream_safe_change_timestamp_seconds 1700000000.250\n"));
        assert_eq!(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &s).0, 200);
        assert_eq!(respond(b"GET / HTTP/1.1\r\n\r\n", &s).0, 404);
        assert_eq!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &s).0, 405);
        assert_eq!(respond(b"\xff\xfe", &s).0, 405);
    }
}
