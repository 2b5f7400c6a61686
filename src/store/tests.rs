//! Whole-or-nothing publishing against the in-memory store, with a wrapper that fails a chosen
//! part and counts aborts: the least powerful test that proves no partial object is left.

use super::*;
use crate::shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{FutureExt, StreamExt};
use object_store::memory::InMemory;
use object_store::{
    CopyOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutOptions, PutPayload,
    PutResult, UploadPart,
};

use crate::compress::Codec;

#[derive(Debug, Default)]
struct Faulty {
    inner: InMemory,
    /// Fail the part with this index (0-based), if set.
    fail_part: Option<usize>,
    /// Parts never finish (a stalled network).
    hang: bool,
    aborts: Arc<AtomicUsize>,
    /// Parts stored so far.
    stored: Arc<AtomicUsize>,
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty")
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    parts: usize,
    fail_part: Option<usize>,
    hang: bool,
    aborts: Arc<AtomicUsize>,
    stored: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.parts;
        self.parts += 1;
        if self.hang {
            return futures::future::pending().boxed();
        }
        if Some(n) == self.fail_part {
            return async move {
                Err(object_store::Error::Generic {
                    store: "Faulty",
                    source: format!("part {n} failed").into(),
                })
            }
            .boxed();
        }
        let stored = self.stored.clone();
        self.inner
            .put_part(data)
            .map(move |r| {
                stored.fetch_add(1, Ordering::SeqCst);
                r
            })
            .boxed()
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            parts: 0,
            fail_part: self.fail_part,
            hang: self.hang,
            aborts: self.aborts.clone(),
            stored: self.stored.clone(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

const PART: usize = 5 << 20;

/// `len` bytes cut into parts of `PART`, as the backup's spooling thread cuts them.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

fn parts_of(data: &[u8]) -> impl Stream<Item = anyhow::Result<Bytes>> {
    let parts: Vec<_> = data
        .chunks(PART)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts)
}

/// A gate that passes.
async fn pass() -> anyhow::Result<()> {
    Ok(())
}

/// A store under `prefix` on an in-memory bucket holding an object at each of `names`.
async fn holding(prefix: &str, names: &[&str]) -> Store {
    let inner = Arc::new(InMemory::new());
    for name in names {
        inner
            .put(&Path::from(*name), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    Store::new(inner, "mem://b", prefix, None)
}

fn key() -> BackupKey {
    "20260529-060000.db.gz".parse().unwrap()
}

#[tokio::test]
async fn uploads_whole_with_metadata_and_storage_class() {
    let inner = Arc::new(Faulty::default());
    let store = Store::new(
        inner.clone(),
        "mem://b",
        "etcd/",
        Some("STANDARD_IA".into()),
    );
    let input = data(PART * 2 + 123);
    let (sent, ()) = store
        .put_stream(
            &key(),
            vec![("etcd-version", "3.5.1".into())],
            parts_of(&input),
            2,
            pass(),
            &Shutdown::never(),
        )
        .await
        .unwrap();
    assert_eq!(sent, input.len() as u64);
    let got = inner
        .inner
        .get(&Path::from("etcd/20260529-060000.db.gz"))
        .await
        .unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::StorageClass)
            .map(|v| v.as_ref()),
        Some("STANDARD_IA")
    );
    assert!(got.bytes().await.unwrap() == input);
    assert_eq!(
        store.metadata(&key()).await.unwrap(),
        [("etcd-version".to_string(), "3.5.1".to_string())]
    );
}

#[tokio::test]
async fn parts_are_stored_while_the_stream_is_still_open() {
    let inner = Arc::new(Faulty::default());
    let store = Store::new(inner.clone(), "mem://b", "etcd/", None);
    let input = data(PART * 4);
    let stored = inner.stored.clone();
    // Three parts, then the stream holds its last one back until two parts are stored: if
    // the upload waited for the end of the stream, this would time out.
    let first = parts_of(&input[..PART * 3]);
    let last = futures::stream::once(async move {
        let wait = async {
            while stored.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow::anyhow!("no part was stored while the stream was open"))?;
        Ok(Bytes::copy_from_slice(&input[PART * 3..]))
    });
    let (sent, ()) = store
        .put_stream(
            &key(),
            vec![],
            first.chain(last),
            2,
            pass(),
            &Shutdown::never(),
        )
        .await
        .unwrap();
    assert_eq!(sent, (PART * 4) as u64);
    assert_eq!(inner.stored.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_part_uploads_while_the_next_one_is_still_being_made() {
    // The stream hands over one part, then makes the next only once the first is stored. An
    // upload that polls its parts only while its window is full (2) never stores the first.
    let inner = Arc::new(Faulty::default());
    let store = Store::new(inner.clone(), "mem://b", "etcd/", None);
    let input = data(PART * 2);
    let stored = inner.stored.clone();
    let first = parts_of(&input[..PART]);
    let second = futures::stream::once(async move {
        let wait = async {
            while stored.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .map_err(|_| anyhow::anyhow!("the first part sat idle while the second was made"))?;
        Ok(Bytes::copy_from_slice(&input[PART..]))
    });
    let (sent, ()) = store
        .put_stream(
            &key(),
            vec![],
            first.chain(second),
            2,
            pass(),
            &Shutdown::never(),
        )
        .await
        .unwrap();
    assert_eq!(sent, (PART * 2) as u64);
    assert_eq!(inner.stored.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_empty_stream_is_an_empty_object() {
    let store = Store::new(Arc::new(Faulty::default()), "mem://b", "etcd/", None);
    let (sent, ()) = store
        .put_stream(&key(), vec![], parts_of(&[]), 2, pass(), &Shutdown::never())
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert_eq!(store.list().await.unwrap().backups[0].size, 0);
}

/// Runs `put_stream` and returns its error, checking that the upload was aborted once and
/// nothing was published.
async fn fails(
    inner: Arc<Faulty>,
    parts: impl Stream<Item = anyhow::Result<Bytes>>,
    gate: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: &Shutdown,
) -> anyhow::Error {
    let store = Store::new(inner.clone(), "mem://b", "etcd/", None);
    let err = store
        .put_stream(&key(), vec![], parts, 2, gate, shutdown)
        .await
        .unwrap_err();
    assert_eq!(inner.aborts.load(Ordering::SeqCst), 1, "{err:#}");
    assert!(store.list().await.unwrap().backups.is_empty());
    err
}

#[tokio::test]
async fn a_failed_part_aborts_and_leaves_nothing() {
    for fail_part in [0, 1, 2] {
        let inner = Arc::new(Faulty {
            fail_part: Some(fail_part),
            ..Default::default()
        });
        let err = fails(
            inner,
            parts_of(&data(PART * 3 - 1)),
            pass(),
            &Shutdown::never(),
        )
        .await;
        assert!(
            format!("{err:#}").contains(&format!("part {fail_part} failed")),
            "{err:#}"
        );
    }
}

#[tokio::test]
async fn an_error_in_the_stream_aborts_and_is_the_one_reported() {
    let input = data(PART * 2);
    let parts = parts_of(&input).chain(futures::stream::iter([Err(anyhow::anyhow!(
        "the snapshot stream broke"
    ))]));
    let mut gate_ran = false;
    let gate = async {
        gate_ran = true;
        Ok(())
    };
    let err = fails(Arc::default(), parts, gate, &Shutdown::never()).await;
    assert_eq!(err.to_string(), "the snapshot stream broke");
    assert!(!gate_ran, "the gate must not run after a broken stream");
}

#[tokio::test]
async fn a_failing_gate_aborts_after_every_part_was_sent() {
    let inner = Arc::new(Faulty::default());
    let err = fails(
        inner,
        parts_of(&data(PART * 2)),
        async { Err(anyhow::anyhow!("the bbolt walk found damage")) },
        &Shutdown::never(),
    )
    .await;
    assert_eq!(err.to_string(), "the bbolt walk found damage");
}

#[tokio::test]
async fn never_overwrites() {
    let inner = Arc::new(Faulty::default());
    let store = Store::new(inner.clone(), "mem://b", "etcd/", None);
    inner
        .inner
        .put(&store.path(&key()), PutPayload::from_static(b"precious"))
        .await
        .unwrap();
    let err = store
        .put_stream(
            &key(),
            vec![],
            parts_of(b"new"),
            2,
            pass(),
            &Shutdown::never(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(PutError::Exists(_))),
        "{err}"
    );
    let kept = inner
        .inner
        .get(&store.path(&key()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&kept[..], b"precious");
}

#[tokio::test]
async fn manifests_belong_to_their_backup_and_go_first() {
    let store = holding(
        "etcd/",
        &[
            "etcd/20260101-000000.db.gz",
            "etcd/20260201-000000.db.gz",
            "etcd/20260201-000000.db.gz.json",
            "etcd/20260301-000000.db.zst.json",
            "etcd/notes.json",
        ],
    )
    .await;
    let figures = [("etcd-revision", "42".to_string())];
    store
        .put_manifest(&key(), crate::store::manifest_body(&figures))
        .await
        .unwrap();
    store
        .put_stream(
            &key(),
            vec![],
            parts_of(b"db"),
            1,
            pass(),
            &Shutdown::never(),
        )
        .await
        .unwrap();
    let l = store.list().await.unwrap();
    let found: Vec<_> = l
        .backups
        .iter()
        .map(|b| (b.key.to_string(), b.manifest))
        .collect();
    assert_eq!(
        found,
        [
            ("20260529-060000.db.gz".to_string(), true),
            ("20260201-000000.db.gz".to_string(), true),
            ("20260101-000000.db.gz".to_string(), false),
        ]
    );
    assert_eq!(l.skipped, ["etcd/notes.json"]);
    assert_eq!(l.orphan_manifests, 1);
    assert_eq!(
        store.figures(&l.backups[0]).await.unwrap(),
        [("etcd-revision".to_string(), "42".to_string())]
    );
    // Without a manifest, the figures are the object's metadata (here none).
    assert!(store.figures(&l.backups[2]).await.unwrap().is_empty());
    store.delete(&key()).await.unwrap();
    let l = store.list().await.unwrap();
    assert_eq!(l.backups.len(), 2);
    assert_eq!(l.orphan_manifests, 1, "the manifest went with its backup");
}

#[tokio::test]
async fn listing_returns_only_our_names_newest_first() {
    let store = holding(
        "etcd/",
        &[
            "etcd/20260101-000000.db.gz",
            "etcd/20260301-000000.db.zst",
            "etcd/20260201-000000.db",
            "etcd/notes.txt",
            "etcd/sub/20260401-000000.db.gz",
            "etcd/20260501-000000.db.gz.tmp",
            "other/20260601-000000.db.gz",
        ],
    )
    .await;
    let l = store.list().await.unwrap();
    let names: Vec<_> = l.backups.iter().map(|b| b.key.to_string()).collect();
    assert_eq!(
        names,
        [
            "20260301-000000.db.zst",
            "20260201-000000.db",
            "20260101-000000.db.gz"
        ]
    );
    let mut skipped = l.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "etcd/20260501-000000.db.gz.tmp",
            "etcd/notes.txt",
            "etcd/sub/20260401-000000.db.gz"
        ]
    );
    let _ = Codec::Gzip;
}

#[tokio::test]
async fn an_empty_prefix_lists_the_bucket_root() {
    let store = holding("", &["20260101-000000.db.gz", "etcd/20260101-000000.db.gz"]).await;
    let l = store.list().await.unwrap();
    assert_eq!(l.backups.len(), 1);
    assert_eq!(l.skipped, ["etcd/20260101-000000.db.gz"]);
}

#[tokio::test]
async fn a_shutdown_during_the_upload_aborts_it() {
    let inner = Arc::new(Faulty {
        hang: true,
        ..Default::default()
    });
    let (trigger, shutdown) = shutdown::channel();
    let fire = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        trigger.fire("SIGTERM");
        std::future::pending::<()>().await
    };
    let input = data(PART + 1);
    let put = fails(inner, parts_of(&input), pass(), &shutdown);
    let err = tokio::select! { e = put => e, _ = fire => unreachable!() };
    assert!(
        matches!(err.downcast_ref(), Some(PutError::Interrupted(_))),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "interrupted by SIGTERM: the upload was aborted"
    );
}

#[test]
fn a_client_that_cannot_be_built_points_at_the_ca_certificates() {
    // The words reqwest gave for an image without CA certificates (bench/weights.sh's first run).
    let e = StoreError {
        doing: "configuring the S3 client for",
        location: "s3://bench".into(),
        error: object_store::Error::Generic {
            store: "S3",
            source: "Generic HTTP client error: builder error".into(),
        },
    };
    let text = e.to_string();
    assert!(
        text.contains("builder error") && text.contains("CA certificates are installed"),
        "{text}"
    );
}
