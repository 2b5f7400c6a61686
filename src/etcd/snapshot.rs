//! One member's snapshot stream, as chunks of bytes. It ends when etcd closes the stream, which
//! is after the message carrying the SHA-256 trailer (stopping at `remaining_bytes == 0` would
//! drop it).

use super::{EtcdError, Member};
use crate::describe as chain;

pub struct Snapshot {
    endpoint: String,
    stream: etcd_client::SnapshotStreaming,
    bytes: u64,
    /// The first chunk, read by [`Snapshot::start`] to prove the stream works.
    first: Option<bytes::Bytes>,
}

impl Snapshot {
    /// Starts the snapshot and reads its first chunk: a member that fails before any data
    /// arrives is as unusable as one that does not answer, and another member may serve.
    pub async fn start(member: &mut Member) -> Result<Snapshot, EtcdError> {
        let endpoint = member.status.endpoint.clone();
        let stream = member
            .client
            .snapshot()
            .await
            .map_err(|e| EtcdError::Stream {
                endpoint: endpoint.clone(),
                bytes: 0,
                error: chain(&e),
            })?;
        let mut s = Snapshot {
            endpoint,
            stream,
            bytes: 0,
            first: None,
        };
        s.first = Some(s.next_chunk().await?.ok_or_else(|| EtcdError::Stream {
            endpoint: s.endpoint.clone(),
            bytes: 0,
            error: "the stream ended before any data".into(),
        })?);
        Ok(s)
    }

    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, EtcdError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        match self.stream.message().await {
            Ok(Some(mut m)) => {
                self.bytes += m.blob().len() as u64;
                // The decoded message owns its bytes: take them rather than copy a gigabyte.
                Ok(Some(bytes::Bytes::from(std::mem::take(&mut m.0.blob))))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(EtcdError::Stream {
                endpoint: self.endpoint.clone(),
                bytes: self.bytes,
                error: chain(&e),
            }),
        }
    }

    /// The chunks as a stream; it ends after the first error.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, EtcdError>> + Send {
        futures::stream::unfold(Some(self), |s| async move {
            let mut s = s?;
            match s.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
