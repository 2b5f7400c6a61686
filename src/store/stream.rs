//! The objects of `etcd-backup stream` ([`crate::stream::names`]): segments, written whole by
//! one PUT (an S3 PUT is atomic: readers see all of it or nothing), and the small JSON records
//! of a generation.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStoreExt, PutMode, PutOptions};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::stream::names::{Name, DIR};

/// A generation record or end record is small; anything larger is not ours.
pub const MAX_RECORD: u64 = 64 << 10;

/// One listed stream object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamObject {
    pub name: Name,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl Store {
    fn stream_path(&self, name: &Name) -> Path {
        Path::from(format!("{}{DIR}{name}", self.prefix))
    }

    /// The full URL of a stream object, for messages.
    pub fn stream_url(&self, name: &Name) -> String {
        format!("{}{DIR}{name}", self.url)
    }

    /// Every stream object under the prefix, sorted by name (so by generation, then revision).
    /// Names we did not write are left out.
    pub async fn list_stream(&self) -> Result<Vec<StreamObject>, StoreError> {
        let dir = format!("{}{}", self.prefix, DIR.trim_end_matches('/'));
        let objects: Vec<_> = self
            .inner
            .list(Some(&Path::from(dir.as_str())))
            .try_collect()
            .await
            .map_err(self.err("listing", format!("{}{DIR}", self.url)))?;
        let below = format!("{}{DIR}", self.prefix);
        let mut listed: Vec<StreamObject> = objects
            .into_iter()
            .filter_map(|o| {
                let name = Name::parse(o.location.as_ref().strip_prefix(&below)?)?;
                Some(StreamObject {
                    name,
                    size: o.size,
                    last_modified: o.last_modified,
                })
            })
            .collect();
        listed.sort_by_key(|o| o.name);
        Ok(listed)
    }

    /// Writes a stream object whole. Names are unique by construction (a generation by its
    /// start time, a segment by its revisions), so this does not ask the server to refuse an
    /// existing name, which not every S3-compatible server supports.
    pub async fn put_stream_object(&self, name: &Name, body: Bytes) -> Result<(), StoreError> {
        let mut attributes = Attributes::new();
        let content_type = match name {
            Name::Segment { .. } => "application/octet-stream",
            _ => "application/json",
        };
        attributes.insert(Attribute::ContentType, AttributeValue::from(content_type));
        if let (Name::Segment { .. }, Some(class)) = (name, &self.storage_class) {
            attributes.insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        let opts = PutOptions {
            attributes,
            mode: PutMode::Overwrite,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.stream_path(name), body.into(), opts)
            .await
            .map_err(self.err("writing", self.stream_url(name)))?;
        Ok(())
    }

    /// A stream object's bytes, at most `max` of them (a larger one is an error: not ours);
    /// `None` when it is not there.
    pub async fn get_stream_object(
        &self,
        name: &Name,
        max: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let url = self.stream_url(name);
        self.read_small(&self.stream_path(name), &url, max).await
    }
}

impl Store {
    /// The SHA-256 and length of a stream object as stored, read as it downloads; `None` when
    /// it is not there.
    pub async fn stream_object_sha256(
        &self,
        name: &Name,
    ) -> Result<Option<([u8; 32], u64)>, StoreError> {
        let url = self.stream_url(name);
        let got = match self.inner.get(&self.stream_path(name)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("reading", url)(e)),
        };
        let mut sha = Sha256::new();
        let mut len = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(self.err("reading", url.clone()))?
        {
            sha.update(&chunk);
            len += chunk.len() as u64;
        }
        Ok(Some((sha.finalize().into(), len)))
    }

    /// A stream object's bytes as they download, with its length.
    pub async fn get_stream_object_stream(
        &self,
        name: &Name,
    ) -> Result<(u64, super::ByteStream), StoreError> {
        let got = self
            .inner
            .get(&self.stream_path(name))
            .await
            .map_err(self.err("reading", self.stream_url(name)))?;
        Ok((got.meta.size, got.into_stream()))
    }
}

impl Store {
    /// Deletes a stream object (prune); one already gone is not an error.
    pub async fn delete_stream_object(&self, name: &Name) -> Result<(), StoreError> {
        self.delete_if_there(&self.stream_path(name), self.stream_url(name))
            .await
    }
}

/// The writer lock of the prefix's stream ([`crate::stream::lock`]), beside the generations.
const LOCK: &str = "lock.json";

impl Store {
    fn lock_path(&self) -> Path {
        Path::from(format!("{}{DIR}{LOCK}", self.prefix))
    }

    /// The lock object's URL, for messages.
    pub fn lock_url(&self) -> String {
        format!("{}{DIR}{LOCK}", self.url)
    }

    /// The lock as stored; `None` when there is none, or it is not a lock we wrote (which a
    /// stream may then take: only streams write it).
    pub async fn get_lock(&self) -> Result<Option<crate::stream::lock::Lock>, StoreError> {
        let url = self.lock_url();
        let body = self.read_small(&self.lock_path(), &url, MAX_RECORD).await?;
        Ok(body.and_then(|b| match serde_json::from_slice(&b) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("{url} is not a lock ({e}); taking it over");
                None
            }
        }))
    }

    pub async fn put_lock(&self, lock: &crate::stream::lock::Lock) -> Result<(), StoreError> {
        let body = serde_json::to_vec(lock).expect("plain struct");
        self.inner
            .put(&self.lock_path(), body.into())
            .await
            .map_err(self.err("writing", self.lock_url()))?;
        Ok(())
    }

    pub async fn delete_lock(&self) -> Result<(), StoreError> {
        self.delete_if_there(&self.lock_path(), self.lock_url())
            .await
    }
}
