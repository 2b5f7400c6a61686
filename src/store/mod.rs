//! Object storage: publish a stream whole-or-nothing, list our backups and their manifests,
//! read and delete them.
//!
//! Built on `object_store`, whose `ObjectStore` trait has two real implementations we use: S3
//! (AWS, MinIO, Hetzner, SeaweedFS, GCS interop) and an in-memory store for unit tests.
//!
//! Publishing is a multipart upload: parts go up `concurrency` at a time while the caller is
//! still producing them, and the object appears only when the upload is completed, which is the
//! last step and happens only after the part stream ended cleanly, every part succeeded, the
//! caller's gate (the verification) passed and the key is still free. Any failure aborts the
//! upload, so no part lingers and no reader ever sees a partial object. The parts held here are
//! the `concurrency` in flight.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::future::Future;

use futures::stream::BoxStream;
use futures::{Stream, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, RetryConfig,
};

use crate::config::StoreConfig;
use crate::key::BackupKey;
use crate::shutdown::Shutdown;

pub mod bucket;
mod manifest;
pub mod objects;
mod upload;
use bucket::Bucket;
pub use manifest::{manifest_body, Signed};
use upload::upload_parts;
pub use upload::{Parts, Stored};

/// A store failure, with what we were doing and a hint of what to check.
#[derive(Debug, thiserror::Error)]
///
/// The message names the store's error (and the store's its causes), so it has no `source()`.
#[error("{doing} {location}: {error}{}", hint(error))]
pub struct StoreError {
    pub doing: &'static str,
    pub location: String,
    pub error: object_store::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0} already exists; refusing to overwrite it (is another backup running at the same second?)")]
    Exists(String),
    #[error("{0}: the upload was aborted")]
    Interrupted(crate::shutdown::Interrupted),
}

impl From<crate::shutdown::Interrupted> for PutError {
    fn from(i: crate::shutdown::Interrupted) -> Self {
        PutError::Interrupted(i)
    }
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
        // What reqwest says when it finds no CA certificate to trust (a binary copied into a
        // FROM scratch image), even for a plain http endpoint; or a proxy URL it cannot parse.
        _ if text.contains("builder error") => {
            "\nthe HTTP client could not be set up: check that CA certificates are installed (/etc/ssl/certs; a FROM scratch image has none, the released image does) and that HTTPS_PROXY, HTTP_PROXY and NO_PROXY, if set, are valid"
        }
        _ => "",
    }
}

/// One of our backups in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: BackupKey,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Whether its manifest (`<key>.json`, the verified figures) is there too.
    pub manifest: bool,
    /// Whether its manifest's signature (`<key>.json.sig`) is there too.
    pub signature: bool,
    /// Whether a files archive of the same time is there.
    pub files: bool,
}

/// The listing under the prefix: our backups (newest first) and the names we skipped.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub backups: Vec<Listed>,
    pub skipped: Vec<String>,
    /// Manifests and signatures whose backup is not there.
    pub orphan_manifests: usize,
    /// Objects of `stream` (under `stream/`): listed by [`crate::stream::records::StreamView`], never pruned
    /// as backups.
    pub stream_objects: usize,
}

/// A backup's manifest is its name with this suffix.
pub const MANIFEST_SUFFIX: &str = ".json";

/// A manifest's signature is the backup's name with this suffix.
pub const SIGNATURE_SUFFIX: &str = ".json.sig";

/// An object's bytes as they download.
pub type ByteStream = BoxStream<'static, Result<Bytes, object_store::Error>>;

/// User metadata stored with an object, as `x-amz-meta-*` headers on S3.
pub type Metadata = Vec<(&'static str, String)>;

pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    storage_class: Option<String>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// Bucket settings object_store does not read (S3 only).
    bucket: Option<Bucket>,
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
        // A SHA-256 checksum on every request body: S3 requires one on a bucket with object
        // lock, and the server then checks each part end to end.
        b = b
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(false)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        if let Some(ep) = &cfg.endpoint {
            b = b
                .with_endpoint(ep.as_str().trim_end_matches('/'))
                .with_allow_http(ep.scheme() == "http");
        }
        let inner = b.build().map_err(|error| StoreError {
            doing: "configuring the S3 client for",
            location: format!("s3://{}", cfg.bucket),
            error,
        })?;
        let bucket = Bucket::new(
            inner.credentials().clone(),
            cfg.endpoint.as_ref(),
            &cfg.bucket,
            &cfg.region,
            cfg.request_timeout,
            cfg.retries,
        );
        let mut store = Store::new(
            Arc::new(inner),
            &format!("s3://{}", cfg.bucket),
            &cfg.prefix,
            cfg.storage_class.clone(),
        );
        store.bucket = Some(bucket);
        Ok(store)
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
            bucket: None,
        }
    }

    /// The bucket's settings, on S3 (none for the in-memory store of the tests).
    pub fn bucket(&self) -> Option<&Bucket> {
        self.bucket.as_ref()
    }

    /// Writes a throwaway object under the prefix (a name `list` and `prune` never take for a
    /// backup), reads it back, checks it, and deletes it.
    pub async fn round_trip(&self) -> Result<(), StoreError> {
        let name = format!("{}.etcd-backup-doctor-{}", self.prefix, std::process::id());
        let (path, url) = (
            Path::from(name.as_str()),
            format!("{}.etcd-backup-doctor", self.url),
        );
        let body = Bytes::from(format!("etcd-backup doctor {}", chrono::Utc::now()));
        self.inner
            .put(&path, body.clone().into())
            .await
            .map_err(self.err("writing", url.clone()))?;
        let read = async { self.inner.get(&path).await?.bytes().await };
        let got = read.await.map_err(self.err("reading back", url.clone()));
        let deleted = self.delete_if_there(&path, url.clone()).await;
        let got = got?;
        deleted?;
        if got != body {
            return Err(StoreError {
                doing: "reading back",
                location: url,
                error: object_store::Error::Generic {
                    store: "S3",
                    source: format!("{} bytes came back for {} written", got.len(), body.len())
                        .into(),
                },
            });
        }
        Ok(())
    }

    /// Starts a multipart upload under the prefix, sends one small part, and aborts it.
    pub async fn multipart_probe(&self) -> Result<(), StoreError> {
        let path = Path::from(format!("{}.etcd-backup-doctor-multipart", self.prefix));
        let url = format!("{}.etcd-backup-doctor-multipart", self.url);
        let mut upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(self.err("starting a multipart upload of", url.clone()))?;
        let part = upload
            .put_part(object_store::PutPayload::from_static(b"doctor"))
            .await;
        let aborted = upload.abort().await;
        part.map_err(self.err("uploading a part of", url.clone()))?;
        aborted.map_err(self.err("aborting the multipart upload of", url))?;
        Ok(())
    }

    pub fn path(&self, key: &BackupKey) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    /// The key prefix of our objects.
    pub fn prefix(&self) -> &str {
        &self.prefix
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
        move |error| StoreError {
            doing,
            location,
            error,
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
        let mut manifests = std::collections::HashSet::new();
        let mut signatures = std::collections::HashSet::new();
        let mut files = std::collections::HashSet::new();
        for o in objects {
            let name = o.location.as_ref();
            let ours = name.strip_prefix(&self.prefix);
            if ours.is_some_and(|n| n.starts_with(objects::STREAM_DIR)) {
                listing.stream_objects += 1;
                continue;
            }
            let signature = ours.and_then(|n| n.strip_suffix(SIGNATURE_SUFFIX));
            if let Some(Ok(key)) = signature.map(str::parse::<BackupKey>) {
                signatures.insert(key);
                continue;
            }
            let manifest = ours.and_then(|n| n.strip_suffix(MANIFEST_SUFFIX));
            if let Some(Ok(key)) = manifest.map(str::parse::<BackupKey>) {
                manifests.insert(key);
                continue;
            }
            // A files archive is named by the time alone.
            if let Some(time) = ours.and_then(BackupKey::files_time) {
                files.insert(time);
                continue;
            }
            match ours.map(str::parse::<BackupKey>) {
                Some(Ok(key)) => listing.backups.push(Listed {
                    key,
                    size: o.size,
                    last_modified: o.last_modified,
                    manifest: false,
                    signature: false,
                    files: false,
                }),
                _ => listing.skipped.push(name.to_string()),
            }
        }
        for b in &mut listing.backups {
            b.manifest = manifests.remove(&b.key);
            b.signature = signatures.remove(&b.key);
            b.files = files.contains(&b.key.time);
        }
        // A manifest without its backup is one of ours, but nothing of value: prune deletes a
        // manifest before its backup, so only a hand-deleted backup leaves one. Left alone.
        listing.orphan_manifests = manifests.len() + signatures.len();
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
        self.exists_at(&self.path(key), &self.url(key)).await
    }

    async fn exists_at(&self, path: &Path, url: &str) -> Result<bool, StoreError> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("checking", url.to_string())(e)),
        }
    }

    fn files_path(&self, key: &BackupKey) -> Path {
        Path::from(format!("{}{}", self.prefix, key.files_name()))
    }

    /// The full URL of a backup's files archive, for messages.
    pub fn files_url(&self, key: &BackupKey) -> String {
        format!("{}{}", self.url, key.files_name())
    }

    /// The stored size of a backup's files archive and its bytes, as a stream.
    pub async fn get_files(&self, key: &BackupKey) -> Result<(u64, ByteStream), StoreError> {
        self.get_at(&self.files_path(key), self.files_url(key))
            .await
    }

    /// Deletes a backup's files archive; one that is not there is fine.
    pub async fn delete_files(&self, key: &BackupKey) -> Result<(), StoreError> {
        self.delete_if_there(&self.files_path(key), self.files_url(key))
            .await
    }

    /// Deletes an object; S3's DELETE of a missing one succeeds, and so does ours.
    async fn delete_if_there(&self, path: &Path, url: String) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", url)(e)),
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

    /// The stored size of a backup and its bytes, as a stream.
    pub async fn get(&self, key: &BackupKey) -> Result<(u64, ByteStream), StoreError> {
        self.get_at(&self.path(key), self.url(key)).await
    }

    async fn get_at(&self, path: &Path, url: String) -> Result<(u64, ByteStream), StoreError> {
        let r = self
            .inner
            .get(path)
            .await
            .map_err(self.err("downloading", url))?;
        Ok((r.meta.size, r.into_stream()))
    }

    /// Deletes a backup, its signature and its manifest, the backup last: a failure between
    /// them leaves a backup without its figures (which the next prune deletes), never a stray
    /// manifest. Deleting one that is not there succeeds (S3 DELETE is idempotent).
    pub async fn delete(&self, key: &BackupKey) -> Result<(), StoreError> {
        let signature = format!("{}{SIGNATURE_SUFFIX}", self.url(key));
        self.delete_if_there(&self.signature_path(key), signature)
            .await?;
        let manifest = format!("{}{MANIFEST_SUFFIX}", self.url(key));
        self.delete_if_there(&self.manifest_path(key), manifest)
            .await?;
        if key.encrypted {
            // Only encrypted backups have one; deleted before the backup, like the manifest.
            self.delete_files(key).await?;
        }
        self.inner
            .delete(&self.path(key))
            .await
            .map_err(self.err("deleting", self.url(key)))
    }

    /// Uploads the parts of `parts` as `key`, at most `concurrency` at once, and publishes the
    /// object only if the stream ended cleanly and then `gate` passed. `gate` is polled only
    /// after the last part was handed over (it is what checks the data those parts held) and
    /// runs while the last parts finish; its value is returned with the byte count.
    ///
    /// The object exists afterwards only if this returns `Ok`; on any error (an `Err` from the
    /// stream, a failed part, the gate, a shutdown) the multipart upload is aborted. An existing
    /// object is never overwritten. Every part but the last must be at least 5 MiB (S3's rule);
    /// the caller cuts them.
    pub async fn put_stream<S, G, T>(
        &self,
        key: &BackupKey,
        metadata: Metadata,
        parts: S,
        concurrency: usize,
        gate: G,
        shutdown: &Shutdown,
    ) -> anyhow::Result<(u64, T)>
    where
        S: Stream<Item = anyhow::Result<Bytes>>,
        G: Future<Output = anyhow::Result<T>>,
    {
        let to = (self.path(key), self.url(key));
        self.put_stream_at(to, metadata, parts, concurrency, gate, shutdown)
            .await
    }

    /// [`Store::put_stream`] for the files archive of `key` (`{key time}.files.tar.age`).
    pub async fn put_files_stream<S, G, T>(
        &self,
        key: &BackupKey,
        parts: S,
        concurrency: usize,
        gate: G,
        shutdown: &Shutdown,
    ) -> anyhow::Result<(u64, T)>
    where
        S: Stream<Item = anyhow::Result<Bytes>>,
        G: Future<Output = anyhow::Result<T>>,
    {
        let to = (self.files_path(key), self.files_url(key));
        let metadata = vec![("encryption", "age".to_string())];
        self.put_stream_at(to, metadata, parts, concurrency, gate, shutdown)
            .await
    }

    async fn put_stream_at<S, G, T>(
        &self,
        (path, url): (Path, String),
        metadata: Metadata,
        parts: S,
        concurrency: usize,
        gate: G,
        shutdown: &Shutdown,
    ) -> anyhow::Result<(u64, T)>
    where
        S: Stream<Item = anyhow::Result<Bytes>>,
        G: Future<Output = anyhow::Result<T>>,
    {
        if self.exists_at(&path, &url).await? {
            return Err(PutError::Exists(url).into());
        }
        let mut upload = self
            .inner
            .put_multipart_opts(&path, self.put_options(metadata))
            .await
            .map_err(self.err("starting the upload of", url.clone()))?;
        let work = async {
            let sent = upload_parts(upload.as_mut(), parts, concurrency, gate, || {
                self.err("uploading a part of", url.clone())
            })
            .await?;
            // Checked again just before publishing: the window for a same-second race is the
            // length of one request, and concurrencyPolicy: Forbid closes it in Kubernetes.
            if self.exists_at(&path, &url).await? {
                return Err(PutError::Exists(url.clone()).into());
            }
            anyhow::Ok(sent)
        };
        // A shutdown stops the parts; once completing has begun it runs to the end, so that
        // what we report matches what the bucket holds.
        let work = tokio::select! {
            r = work => r,
            i = shutdown.requested() => Err(PutError::Interrupted(i).into()),
        };
        let result = match work {
            Ok(sent) => upload
                .complete()
                .await
                .map(|_| sent)
                .map_err(|e| self.err("completing the upload of", url.clone())(e).into()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            if let Err(e) = upload.abort().await {
                tracing::error!("aborting the multipart upload of {url} failed: {e}; the bucket may hold an incomplete upload until its lifecycle rule removes it");
            }
        }
        result
    }

    fn put_options(&self, metadata: Metadata) -> PutMultipartOptions {
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
        PutMultipartOptions {
            attributes,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
