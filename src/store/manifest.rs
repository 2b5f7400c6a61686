//! A backup's manifest (`<key>.json`, the verified figures as one flat JSON object) and its
//! signature (`<key>.json.sig`), written after the backup and read back by `list`, `check` and
//! `restore`. Both are read with a size limit: the bucket is not trusted to keep them small.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStoreExt};

use super::{Listed, Store, StoreError, MANIFEST_SUFFIX, SIGNATURE_SUFFIX};
use crate::key::BackupKey;

/// Ours are about 2 KB.
const MAX_MANIFEST: u64 = 1 << 20;

/// A manifest's bytes as written: the figures as one flat, pretty-printed JSON object. These
/// exact bytes are what a signature covers.
pub fn manifest_body(figures: &[(&str, String)]) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone().into()))
        .collect();
    serde_json::to_vec_pretty(&map).expect("a map of strings serializes")
}

/// A manifest and its signature as the bucket holds them, unparsed, each `None` when absent.
#[derive(Debug, Clone, Default)]
pub struct Signed {
    pub manifest: Option<Bytes>,
    pub signature: Option<Bytes>,
}

impl Store {
    pub(super) fn manifest_path(&self, key: &BackupKey) -> Path {
        Path::from(format!("{}{key}{MANIFEST_SUFFIX}", self.prefix))
    }

    pub(super) fn signature_path(&self, key: &BackupKey) -> Path {
        Path::from(format!("{}{key}{SIGNATURE_SUFFIX}", self.prefix))
    }

    /// Writes the manifest of a published backup.
    pub async fn put_manifest(&self, key: &BackupKey, body: Vec<u8>) -> Result<(), StoreError> {
        let url = format!("{}{MANIFEST_SUFFIX}", self.url(key));
        self.put_small(&self.manifest_path(key), body, "application/json", url)
            .await
    }

    /// Writes the signature of a backup's manifest (armored SSH signature).
    pub async fn put_signature(&self, key: &BackupKey, body: Vec<u8>) -> Result<(), StoreError> {
        let url = format!("{}{SIGNATURE_SUFFIX}", self.url(key));
        self.put_small(&self.signature_path(key), body, "text/plain", url)
            .await
    }

    async fn put_small(
        &self,
        path: &Path,
        body: Vec<u8>,
        content_type: &'static str,
        url: String,
    ) -> Result<(), StoreError> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, AttributeValue::from(content_type));
        let opts = object_store::PutOptions {
            attributes,
            ..Default::default()
        };
        self.inner
            .put_opts(path, body.into(), opts)
            .await
            .map_err(self.err("writing", url))?;
        Ok(())
    }

    /// What we recorded about a backup: its manifest if `listed` has one, else (backups from
    /// before manifests, or a manifest that failed to write) the user metadata of the object.
    pub async fn figures(&self, listed: &Listed) -> Result<Vec<(String, String)>, StoreError> {
        if !listed.manifest {
            return self.metadata(&listed.key).await;
        }
        Ok(self.manifest(&listed.key).await?.unwrap_or_default())
    }

    /// The manifest of `key`, or `None` when there is none. A manifest that is not a flat JSON
    /// object of strings, or is larger than a manifest can be, is reported and read as empty.
    pub async fn manifest(
        &self,
        key: &BackupKey,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        let url = format!("{}{MANIFEST_SUFFIX}", self.url(key));
        let Some(body) = self
            .read_small(&self.manifest_path(key), &url, MAX_MANIFEST)
            .await?
        else {
            return Ok(None);
        };
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .unwrap_or_else(|e| {
                tracing::warn!("{url} is not a JSON object ({e}); showing the backup without it");
                Default::default()
            });
        Ok(Some(
            map.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect(),
        ))
    }

    /// The manifest and signature of `key`, as stored, for [`crate::sign::judge`].
    pub async fn signed(&self, key: &BackupKey) -> Result<Signed, StoreError> {
        let manifest_url = format!("{}{MANIFEST_SUFFIX}", self.url(key));
        let signature_url = format!("{}{SIGNATURE_SUFFIX}", self.url(key));
        let (manifest_path, signature_path) = (self.manifest_path(key), self.signature_path(key));
        let (manifest, signature) = futures::try_join!(
            self.read_small(&manifest_path, &manifest_url, MAX_MANIFEST),
            self.read_small(&signature_path, &signature_url, crate::sign::MAX_SIGNATURE),
        )?;
        Ok(Signed {
            manifest,
            signature,
        })
    }

    /// A small object's bytes, `None` when it is not there. One larger than `max` is reported
    /// and read as empty, without reading more than `max` bytes of it (whatever its length
    /// header says).
    pub(super) async fn read_small(
        &self,
        path: &Path,
        url: &str,
        max: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .read_small_tagged(path, url, max)
            .await?
            .map(|(b, _)| b))
    }

    /// [`Store::read_small`], with the object's ETag when the store gives one.
    pub(super) async fn read_small_tagged(
        &self,
        path: &Path,
        url: &str,
        max: u64,
    ) -> Result<Option<(Bytes, Option<String>)>, StoreError> {
        let got = match self.inner.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("reading", url.to_string())(e)),
        };
        let e_tag = got.meta.e_tag.clone();
        let too_big = || {
            tracing::warn!("{url} is larger than {max} bytes: not one of ours; ignoring it");
            Ok(Some((Bytes::new(), None)))
        };
        if got.meta.size > max {
            return too_big();
        }
        let mut body = Vec::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(self.err("reading", url.to_string()))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return too_big();
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some((body.into(), e_tag)))
    }
}
