//! Small objects by their path under the prefix: the stream's segments and records, its lock.
//! The store knows paths, not what is in them: [`crate::stream`] names its objects and reads
//! and writes them through these calls. A PUT is whole (an S3 PUT is atomic: readers see all
//! of it or nothing).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStoreExt, PutMode, PutOptions};
use sha2::{Digest, Sha256};

use super::{ByteStream, Store, StoreError};

/// Where the stream's objects live under the prefix; a backup listing counts them apart.
pub const STREAM_DIR: &str = "stream/";

/// One listed object, by its path under the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub path: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// How an object is written: its content type, and whether it takes the configured storage
/// class (bulk data does; small records that are read often do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data,
    Record,
}

/// What a conditional write must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No object at the path (S3's `If-None-Match: *`).
    Absent,
    /// The object as it was read, by its ETag (`If-Match`).
    Unchanged(String),
}

/// How a conditional write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// Written; the new object's ETag when the store gives one.
    Written(Option<String>),
    /// The object was not as the condition said: another writer came first.
    Lost,
    /// The store does not do conditional writes.
    Unsupported,
}

impl Store {
    fn at(&self, path: &str) -> Path {
        Path::from(format!("{}{path}", self.prefix))
    }

    /// The full URL of the object at `path`, for messages.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Every object under `dir` (a path under the prefix ending in '/').
    pub async fn list_under(&self, dir: &str) -> Result<Vec<Object>, StoreError> {
        let full = format!("{}{}", self.prefix, dir.trim_end_matches('/'));
        let objects: Vec<_> = self
            .inner
            .list(Some(&Path::from(full.as_str())))
            .try_collect()
            .await
            .map_err(self.err("listing", self.url_of(dir)))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let path = o.location.as_ref().strip_prefix(&self.prefix)?.to_string();
                Some(Object {
                    path,
                    size: o.size,
                    last_modified: o.last_modified,
                })
            })
            .collect())
    }

    /// Writes the object at `path` whole, replacing any there.
    pub async fn put_object(&self, path: &str, body: Bytes, kind: Kind) -> Result<(), StoreError> {
        let mut attributes = Attributes::new();
        let content_type = match kind {
            Kind::Data => "application/octet-stream",
            Kind::Record => "application/json",
        };
        attributes.insert(Attribute::ContentType, AttributeValue::from(content_type));
        if let (Kind::Data, Some(class)) = (kind, &self.storage_class) {
            attributes.insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        let opts = PutOptions {
            attributes,
            mode: PutMode::Overwrite,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.at(path), body.into(), opts)
            .await
            .map_err(self.err("writing", self.url_of(path)))?;
        Ok(())
    }

    /// Writes the object at `path` whole only if it is as `condition` says, so that of two
    /// writers that read the same object, one writes and the other learns it lost.
    pub async fn put_if(
        &self,
        path: &str,
        body: Bytes,
        condition: Condition,
    ) -> Result<Conditional, StoreError> {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from("application/json"),
        );
        let mode = match condition {
            Condition::Absent => PutMode::Create,
            Condition::Unchanged(e_tag) => PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(e_tag),
                version: None,
            }),
        };
        let opts = PutOptions {
            attributes,
            mode,
            ..Default::default()
        };
        match self.inner.put_opts(&self.at(path), body.into(), opts).await {
            Ok(r) => Ok(Conditional::Written(r.e_tag)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Conditional::Lost),
            Err(object_store::Error::NotImplemented { .. }) => Ok(Conditional::Unsupported),
            // A server that does not know the headers answers 501 or 400.
            Err(e)
                if ["501", "NotImplemented"]
                    .iter()
                    .any(|s| e.to_string().contains(s)) =>
            {
                Ok(Conditional::Unsupported)
            }
            Err(e) => Err(self.err("writing", self.url_of(path))(e)),
        }
    }

    /// [`Store::get_small`] with the object's ETag, for a later [`Condition::Unchanged`].
    pub async fn get_small_tagged(
        &self,
        path: &str,
        max: u64,
    ) -> Result<Option<(Bytes, Option<String>)>, StoreError> {
        self.read_small_tagged(&self.at(path), &self.url_of(path), max)
            .await
    }

    /// The object's bytes, at most `max` of them (a larger one is reported and read as empty:
    /// not ours); `None` when it is not there.
    pub async fn get_small(&self, path: &str, max: u64) -> Result<Option<Bytes>, StoreError> {
        self.read_small(&self.at(path), &self.url_of(path), max)
            .await
    }

    /// The SHA-256 and length of the object as stored, read as it downloads; `None` when it is
    /// not there.
    pub async fn sha256_of(&self, path: &str) -> Result<Option<([u8; 32], u64)>, StoreError> {
        let url = self.url_of(path);
        let got = match self.inner.get(&self.at(path)).await {
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

    /// The object's bytes as they download, with its length.
    pub async fn get_object(&self, path: &str) -> Result<(u64, ByteStream), StoreError> {
        let got = self
            .inner
            .get(&self.at(path))
            .await
            .map_err(self.err("reading", self.url_of(path)))?;
        Ok((got.meta.size, got.into_stream()))
    }

    /// Deletes the object; one already gone is not an error.
    pub async fn delete_object(&self, path: &str) -> Result<(), StoreError> {
        self.delete_if_there(&self.at(path), self.url_of(path))
            .await
    }
}
