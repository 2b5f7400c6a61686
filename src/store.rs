//! Object storage: publish a file whole-or-nothing, list our backups, read and delete them.
//!
//! Built on `object_store`, whose `ObjectStore` trait has two real implementations we use: S3
//! (AWS, MinIO, Hetzner, SeaweedFS, GCS interop) and an in-memory store for unit tests.
//!
//! Publishing is a multipart upload: parts go up `concurrency` at a time, and the object
//! appears only when the upload is completed, which is the last step and happens only after
//! every part succeeded and the key is still free. Any failure aborts the upload, so no part
//! lingers and no reader ever sees a partial object. Memory is at most
//! `part_size x (concurrency + 1)`: the parts in flight and the one being read.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use crate::config::StoreConfig;
use crate::key::BackupKey;
use crate::shutdown::Shutdown;

/// A store failure, with what we were doing and a hint of what to check.
#[derive(Debug, thiserror::Error)]
#[error("{doing} {location}: {source}{}", hint(source))]
pub struct StoreError {
    pub doing: &'static str,
    pub location: String,
    #[source]
    pub source: object_store::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0} already exists; refusing to overwrite it (is another backup running at the same second?)")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the file to upload: {0}")]
    Read(#[from] std::io::Error),
    #[error("{0}: the upload was aborted")]
    Interrupted(#[from] crate::shutdown::Interrupted),
}

fn hint(e: &object_store::Error) -> &'static str {
    let text = e.to_string();
    match e {
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => "\ncheck that BACKUP_BUCKET names an existing bucket",
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            "\ncheck the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the role) and the bucket policy"
        }
        _ if text.contains("NoSuchBucket") => "\ncheck that BACKUP_BUCKET names an existing bucket",
        _ if ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"].iter().any(|s| text.contains(s)) => {
            "\ncheck the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the role) and the bucket policy"
        }
        _ if text.contains("connect") || text.contains("dns") => "\ncheck AWS_ENDPOINT_URL and that the object store is reachable",
        _ => "",
    }
}

/// One of our backups in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: BackupKey,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// The listing under the prefix: our backups (newest first) and the names we skipped.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub backups: Vec<Listed>,
    pub skipped: Vec<String>,
}

/// User metadata stored with an object, as `x-amz-meta-*` headers on S3.
pub type Metadata = Vec<(&'static str, String)>;

pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    storage_class: Option<String>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

impl Store {
    /// An S3 client configured from the validated settings. Path-style addressing whenever an
    /// endpoint is given (what MinIO and most S3-compatible stores want), plain http only when
    /// the endpoint URL says http.
    pub fn s3(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let mut b = AmazonS3Builder::new();
        for (name, value) in &cfg.aws {
            // The same names object_store's `from_env` understands; unknown AWS_* are ignored.
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                b = b.with_config(key, value.expose());
            }
        }
        // Client options first: `with_allow_http` below writes into them.
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(cfg.request_timeout);
        // object_store retries 5xx, throttling, timeouts and connection resets with
        // exponential backoff and jitter; 4xx such as access denied fail at once.
        let retry = RetryConfig {
            max_retries: cfg.retries,
            retry_timeout: Duration::from_secs(300),
            backoff: BackoffConfig::default(),
        };
        b = b.with_client_options(client).with_retry(retry);
        b = b
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(false);
        if let Some(ep) = &cfg.endpoint {
            b = b
                .with_endpoint(ep.as_str().trim_end_matches('/'))
                .with_allow_http(ep.scheme() == "http");
        }
        let inner = b.build().map_err(|source| StoreError {
            doing: "configuring the S3 client for",
            location: format!("s3://{}", cfg.bucket),
            source,
        })?;
        Ok(Store::new(
            Arc::new(inner),
            &format!("s3://{}", cfg.bucket),
            &cfg.prefix,
            cfg.storage_class.clone(),
        ))
    }

    pub fn new(
        inner: Arc<dyn ObjectStore>,
        base_url: &str,
        prefix: &str,
        storage_class: Option<String>,
    ) -> Store {
        Store {
            inner,
            prefix: prefix.to_string(),
            storage_class,
            url: format!("{base_url}/{prefix}"),
        }
    }

    pub fn path(&self, key: &BackupKey) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url_prefix(&self) -> &str {
        &self.url
    }

    /// The full URL of a backup, for messages.
    pub fn url(&self, key: &BackupKey) -> String {
        format!("{}{key}", self.url)
    }

    fn err(
        &self,
        doing: &'static str,
        location: String,
    ) -> impl FnOnce(object_store::Error) -> StoreError {
        move |source| StoreError {
            doing,
            location,
            source,
        }
    }

    /// The prefix as an object_store path (which has no trailing '/'); `None` for the root.
    fn prefix_path(&self) -> Option<Path> {
        let prefix = self.prefix.trim_end_matches('/');
        (!prefix.is_empty()).then(|| Path::from(prefix))
    }

    /// Our backups under the prefix, newest first. Objects whose names we did not write are
    /// skipped and reported, never returned: this is what keeps prune away from them.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let prefix = self.prefix_path();
        let objects: Vec<_> = self
            .inner
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(self.err("listing", self.url.clone()))?;
        let mut listing = Listing::default();
        for o in objects {
            let name = o.location.as_ref();
            match name.strip_prefix(&self.prefix).map(str::parse::<BackupKey>) {
                Some(Ok(key)) => listing.backups.push(Listed {
                    key,
                    size: o.size,
                    last_modified: o.last_modified,
                }),
                _ => listing.skipped.push(name.to_string()),
            }
        }
        listing.backups.sort_by_key(|b| std::cmp::Reverse(b.key));
        Ok(listing)
    }

    /// One cheap listing request, to find a missing bucket or wrong credentials before any
    /// snapshot is taken (some S3-compatible servers would create a missing bucket on upload).
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = self.prefix_path();
        self.inner
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(self.err("listing", self.url.clone()))?;
        Ok(())
    }

    pub async fn exists(&self, key: &BackupKey) -> Result<bool, StoreError> {
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("checking", self.url(key))(e)),
        }
    }

    /// The user metadata stored with a backup.
    pub async fn metadata(&self, key: &BackupKey) -> Result<Vec<(String, String)>, StoreError> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let r = self
            .inner
            .get_opts(&self.path(key), opts)
            .await
            .map_err(self.err("reading metadata of", self.url(key)))?;
        Ok(r.attributes
            .iter()
            .filter_map(|(k, v)| match k {
                Attribute::Metadata(k) => Some((k.to_string(), v.as_ref().to_string())),
                _ => None,
            })
            .collect())
    }

    /// The stored bytes of a backup, as a stream.
    pub async fn get(
        &self,
        key: &BackupKey,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, StoreError> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(self.err("downloading", self.url(key)))?;
        Ok(r.into_stream())
    }

    pub async fn delete(&self, key: &BackupKey) -> Result<(), StoreError> {
        self.inner
            .delete(&self.path(key))
            .await
            .map_err(self.err("deleting", self.url(key)))
    }

    /// Uploads `file` as `key`. The object exists afterwards only if this returns `Ok`; on any
    /// error the multipart upload is aborted. An existing object is never overwritten.
    pub async fn put_file(
        &self,
        key: &BackupKey,
        file: tokio::fs::File,
        metadata: Metadata,
        part_size: usize,
        concurrency: usize,
        shutdown: &Shutdown,
    ) -> Result<u64, PutError> {
        let url = self.url(key);
        if self.exists(key).await? {
            return Err(PutError::Exists(url));
        }
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from("application/octet-stream"),
        );
        if let Some(class) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        for (k, v) in metadata {
            attributes.insert(
                Attribute::Metadata(Cow::Borrowed(k)),
                AttributeValue::from(v),
            );
        }
        let path = self.path(key);
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let mut upload = self
            .inner
            .put_multipart_opts(&path, opts)
            .await
            .map_err(self.err("starting the upload of", url.clone()))?;
        let parts = async {
            let sent = upload_parts(upload.as_mut(), file, part_size, concurrency)
                .await
                .map_err(|e| match e {
                    PartError::Read(e) => PutError::Read(e),
                    PartError::Store(e) => {
                        PutError::Store(self.err("uploading a part of", url.clone())(e))
                    }
                })?;
            // Checked again just before publishing: the window for a same-second race is the
            // length of one request, and concurrencyPolicy: Forbid closes it in Kubernetes.
            if self.exists(key).await? {
                return Err(PutError::Exists(url.clone()));
            }
            Ok(sent)
        };
        // A shutdown stops the parts; once completing has begun it runs to the end, so that
        // what we report matches what the bucket holds.
        let parts = tokio::select! {
            r = parts => r,
            i = shutdown.requested() => Err(PutError::Interrupted(i)),
        };
        let result =
            match parts {
                Ok(sent) => upload.complete().await.map(|_| sent).map_err(|e| {
                    PutError::Store(self.err("completing the upload of", url.clone())(e))
                }),
                Err(e) => Err(e),
            };
        if result.is_err() {
            if let Err(e) = upload.abort().await {
                tracing::error!("aborting the multipart upload of {url} failed: {e}; the bucket may hold an incomplete upload until its lifecycle rule removes it");
            }
        }
        result
    }
}

enum PartError {
    Read(std::io::Error),
    Store(object_store::Error),
}

/// Reads `file` in `part_size` parts and uploads them, at most `concurrency` at once.
async fn upload_parts(
    upload: &mut dyn object_store::MultipartUpload,
    mut file: tokio::fs::File,
    part_size: usize,
    concurrency: usize,
) -> Result<u64, PartError> {
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    loop {
        let mut part = Vec::with_capacity(part_size);
        // `take` + `read_to_end` fills the part unless the file ends first.
        (&mut file)
            .take(part_size as u64)
            .read_to_end(&mut part)
            .await
            .map_err(PartError::Read)?;
        if part.is_empty() && sent > 0 {
            break;
        }
        let last = part.len() < part_size;
        sent += part.len() as u64;
        in_flight.push(upload.put_part(PutPayload::from(Bytes::from(part))));
        while in_flight.len() >= concurrency {
            in_flight
                .next()
                .await
                .expect("not empty")
                .map_err(PartError::Store)?;
        }
        if last {
            break;
        }
    }
    while let Some(r) = in_flight.next().await {
        r.map_err(PartError::Store)?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests;
