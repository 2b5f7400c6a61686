//! The upload side of publishing: the encoder's output cut into parts ([`Parts`]), and the loop
//! that keeps `concurrency` of them in flight ([`upload_parts`]).
//!
//! The spooling thread writes into [`Parts`], a blocking `Write` that sends each full part down
//! a bounded channel; [`upload_parts`] takes them from the other end. The memory held is the
//! parts in the channel and in flight, each `part_size` bytes.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::PutPayload;
use std::future::Future;
use std::io::Write;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::StoreError;

/// The encoder's output, cut into upload parts of `size` bytes (the last may be shorter).
///
/// Part buffers are recycled: a part's `Bytes` hands its buffer back when the upload drops it.
/// Without this, each part is a fresh allocation of several MiB freed on another thread, and
/// the allocator keeps the freed ones around: measured 10-20 MiB more peak RSS.
pub struct Parts {
    tx: mpsc::Sender<anyhow::Result<Bytes>>,
    size: usize,
    part: Vec<u8>,
    count: u64,
    spare_tx: std::sync::mpsc::Sender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The SHA-256 of every byte written, when a signed manifest will need it.
    sha256: Option<sha2::Sha256>,
}

/// What [`Parts`] sent in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub len: u64,
    /// Only from [`Parts::hashing`].
    pub sha256: Option<[u8; 32]>,
}

/// A part's buffer, which goes back to `Parts` when the last `Bytes` of it is dropped.
struct Recycled {
    buf: Vec<u8>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // After the spooling thread ended nobody takes it back, and the buffer is freed.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

impl Parts {
    pub fn new(tx: mpsc::Sender<anyhow::Result<Bytes>>, size: usize) -> Self {
        let (spare_tx, spare) = std::sync::mpsc::channel();
        Parts {
            tx,
            size,
            part: Vec::new(),
            count: 0,
            spare_tx,
            spare,
            sha256: None,
        }
    }

    /// Also hashes what is written (SHA-256 of the stored object, for its signed manifest).
    pub fn hashing(mut self) -> Self {
        self.sha256 = Some(sha2::Sha256::default());
        self
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = Recycled {
            buf: std::mem::take(&mut self.part),
            back: self.spare_tx.clone(),
        };
        self.tx
            .blocking_send(Ok(Bytes::from_owner(part)))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the last part; returns what was written in all.
    pub fn finish(mut self) -> std::io::Result<Stored> {
        if !self.part.is_empty() {
            self.send()?;
        }
        Ok(Stored {
            len: self.count,
            sha256: self.sha256.take().map(|h| sha2::Digest::finalize(h).into()),
        })
    }
}

impl Write for Parts {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.part.capacity() == 0 {
            self.part = match self.spare.try_recv() {
                Ok(mut buf) => {
                    buf.clear();
                    buf
                }
                Err(_) => Vec::with_capacity(self.size),
            };
        }
        let n = buf.len().min(self.size - self.part.len());
        self.part.extend_from_slice(&buf[..n]);
        if let Some(h) = &mut self.sha256 {
            sha2::Digest::update(h, &buf[..n]);
        }
        self.count += n as u64;
        if self.part.len() == self.size {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Uploads every part of `parts`, at most `concurrency` at once, then waits for the last ones
/// and for `gate` together. The first error wins: the stream's, a part's, then the gate's.
///
/// Each part is spawned as it arrives, so it uploads while we wait for the next one: a part
/// future does nothing until polled, and polling only while the window is full would leave a
/// part idle until the next one exists (half the upload rate against a distant endpoint).
/// Parts still running when this returns early are aborted with the [`JoinSet`].
pub(super) async fn upload_parts<S, G, T, E>(
    upload: &mut dyn object_store::MultipartUpload,
    parts: S,
    concurrency: usize,
    gate: G,
    part_error: impl Fn() -> E,
) -> anyhow::Result<(u64, T)>
where
    S: Stream<Item = anyhow::Result<Bytes>>,
    G: Future<Output = anyhow::Result<T>>,
    E: FnOnce(object_store::Error) -> StoreError,
{
    let mut in_flight = JoinSet::new();
    let mut sent = 0u64;
    let joined = |r: Result<object_store::Result<()>, tokio::task::JoinError>| match r {
        Ok(r) => r.map_err(|e| anyhow::Error::from(part_error()(e))),
        Err(e) => Err(anyhow::anyhow!("an upload part's task failed: {e}")),
    };
    futures::pin_mut!(parts);
    while let Some(part) = parts.next().await {
        let part = part?;
        sent += part.len() as u64;
        in_flight.spawn(upload.put_part(PutPayload::from(part)));
        while in_flight.len() >= concurrency {
            joined(in_flight.join_next().await.expect("not empty"))?;
        }
    }
    if sent == 0 {
        // S3 needs at least one part, even for an empty object.
        in_flight.spawn(upload.put_part(PutPayload::default()));
    }
    let drain = async {
        while let Some(r) = in_flight.join_next().await {
            joined(r)?;
        }
        anyhow::Ok(())
    };
    let (drained, gated) = tokio::join!(drain, gate);
    drained?;
    Ok((sent, gated?))
}
