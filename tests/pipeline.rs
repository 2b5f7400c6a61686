//! The pipeline in-process: a fabricated snapshot stream into the in-memory store. A bad stream
//! must leave nothing behind; a good one must land whole, with its metadata.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_backup::commands::{list, prune, Context};
use etcd_backup::compress::{self, Codec};
use etcd_backup::config::PipelineConfig;
use etcd_backup::key::BackupKey;
use etcd_backup::pipeline::{no_check, publish, Limits};
use etcd_backup::restore;
use etcd_backup::shutdown::{self, Shutdown};
use etcd_backup::store::Store;
use etcd_backup::trust::Trust;
use object_store::memory::InMemory;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::common::{golden_status, read_data};

fn cfg(codec: Codec, tmp: &std::path::Path) -> PipelineConfig {
    PipelineConfig {
        codec,
        level: codec.default_level(),
        tmp_dir: tmp.to_path_buf(),
        // Small parts, so that a test snapshot is many parts and their upload overlaps the
        // stream (the in-memory store has no 5 MiB minimum).
        part_size: 64 << 10,
        threads: 2,
        concurrency: 2,
        progress: None,
        recipients: vec![],
        signing: None,
    }
}

fn chunks(
    data: Vec<u8>,
    size: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let v: Vec<_> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(v)
}

fn limits(total: Duration) -> Limits {
    Limits {
        total,
        stall: Duration::from_secs(30),
        rate: None,
        shutdown: Shutdown::never(),
        expected_size: None,
    }
}

fn key(codec: Codec) -> BackupKey {
    BackupKey::new(
        chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
        codec,
    )
}

fn scratch_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test]
async fn publishes_every_codec_whole_with_metadata() {
    let snapshot = read_data("medium.db");
    let golden = golden_status("medium");
    for codec in Codec::ALL {
        let tmp = tempfile::tempdir().unwrap();
        let mem = Arc::new(InMemory::new());
        let store = Store::new(mem.clone(), "mem://b", "etcd/", None);
        let (p, ()) = publish(
            chunks(snapshot.clone(), 32 * 1024 + 5),
            &store,
            key(codec),
            &cfg(codec, tmp.path()),
            &limits(Duration::from_secs(60)),
            vec![],
            no_check,
        )
        .await
        .unwrap();
        assert_eq!(p.raw_bytes, snapshot.len() as u64);
        let stored = mem
            .get(&store.path(&key(codec)))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(stored.len() as u64, p.stored_bytes);
        let (found, mut dec) = compress::decoder(std::io::Cursor::new(stored.to_vec())).unwrap();
        assert_eq!(found, codec);
        let mut raw = Vec::new();
        dec.read_to_end(&mut raw).unwrap();
        assert_eq!(
            raw, snapshot,
            "{codec}: the stored object decodes to the snapshot, trailer included"
        );

        let object_meta = store.metadata(&key(codec)).await.unwrap();
        assert!(object_meta.contains(&("compression".into(), codec.to_string())));
        let listing = store.list().await.unwrap();
        assert!(listing.backups[0].manifest);
        let meta: std::collections::HashMap<_, _> = store
            .figures(&listing.backups[0])
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(meta["stored-size"], p.stored_bytes.to_string());
        let db = &snapshot[..snapshot.len() - 32];
        assert_eq!(
            meta["snapshot-sha256"],
            etcd_backup::snapshot::verify::hex(&Sha256::digest(db))
        );
        assert_eq!(meta["etcd-revision"], golden["revision"].to_string());
        assert_eq!(meta["etcd-hash"], golden["hash"].to_string());
        assert_eq!(meta["etcd-total-keys"], golden["totalKey"].to_string());
        assert_eq!(meta["compression"], codec.to_string());
        assert!(scratch_is_empty(tmp.path()), "scratch files left behind");
    }
}

/// ETCD_SNAPSHOT_RATE: the stream is read no faster than the rate. A lower bound on the time
/// taken, which no machine can beat, not a performance assertion.
#[tokio::test]
async fn a_rate_limited_read_takes_at_least_size_over_rate() {
    let snapshot = read_data("medium.db");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(InMemory::new()), "mem://b", "etcd/", None);
    // A quarter of a second for the whole stream, of which reading may run 50 ms ahead.
    let rate = 4 * snapshot.len() as u64;
    let paced = Limits {
        rate: Some(etcd_backup::pacing::Rate::new(rate)),
        ..limits(Duration::from_secs(60))
    };
    let start = std::time::Instant::now();
    let (p, ()) = publish(
        chunks(snapshot.clone(), 16 * 1024),
        &store,
        key(Codec::Gzip),
        &cfg(Codec::Gzip, tmp.path()),
        &paced,
        vec![],
        no_check,
    )
    .await
    .unwrap();
    assert_eq!(p.raw_bytes, snapshot.len() as u64);
    assert!(
        start.elapsed() >= Duration::from_millis(195),
        "{} bytes at {rate} B/s took only {:?}",
        snapshot.len(),
        start.elapsed()
    );
}

async fn assert_nothing_published(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>>,
    want: &str,
) {
    assert_nothing_published_within(stream, want, &limits(Duration::from_secs(60))).await
}

/// Publishing `stream` under `limits` fails with `want` in the message, and leaves no object
/// and no scratch file.
async fn assert_nothing_published_within(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>>,
    want: &str,
    limits: &Limits,
) {
    let tmp = tempfile::tempdir().unwrap();
    let mem = Arc::new(InMemory::new());
    let store = Store::new(mem.clone(), "mem://b", "etcd/", None);
    let err = publish(
        stream,
        &store,
        key(Codec::Gzip),
        &cfg(Codec::Gzip, tmp.path()),
        limits,
        vec![],
        no_check,
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(want), "{text}");
    let listing = store.list().await.unwrap();
    assert!(listing.backups.is_empty() && listing.orphan_manifests == 0);
    assert!(scratch_is_empty(tmp.path()), "scratch files left behind");
}

#[tokio::test]
async fn a_corrupt_trailer_publishes_nothing() {
    let mut s = read_data("small.db");
    let n = s.len();
    s[n - 1] ^= 1;
    assert_nothing_published(chunks(s, 4096), "SHA-256 trailer mismatch").await;
}

#[tokio::test]
async fn a_missing_trailer_publishes_nothing() {
    let mut s = read_data("small.db");
    s.truncate(s.len() - 32);
    assert_nothing_published(chunks(s, 4096), "no SHA-256 trailer").await;
}

#[tokio::test]
async fn a_stream_error_midway_publishes_nothing() {
    let s = read_data("medium.db");
    let mut items: Vec<Result<Bytes, std::io::Error>> = s[..1 << 20]
        .chunks(65536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    items.push(Err(std::io::Error::other("connection reset by peer")));
    assert_nothing_published(futures::stream::iter(items), "connection reset by peer").await;
}

#[tokio::test]
async fn a_damaged_database_with_a_valid_trailer_publishes_nothing() {
    let s = read_data("medium.db");
    let mut body = s[..s.len() - 32].to_vec();
    body[3 * 4096..4 * 4096].fill(0);
    let digest = Sha256::digest(&body);
    body.extend_from_slice(&digest);
    assert_nothing_published(chunks(body, 65536), "bbolt check failed").await;
}

#[tokio::test]
async fn a_stalled_stream_times_out_and_publishes_nothing() {
    let s = read_data("small.db");
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(s))])
        .chain(futures::stream::pending());
    let within = limits(Duration::from_millis(300));
    assert_nothing_published_within(stream, "ETCD_SNAPSHOT_TIMEOUT", &within).await;
}

#[tokio::test]
async fn prune_deletes_only_what_the_plan_says() {
    let mem = Arc::new(InMemory::new());
    let store = Store::new(mem.clone(), "mem://b", "etcd/", None);
    for name in [
        "etcd/20260101-000000.db.gz",
        "etcd/20260102-000000.db.gz",
        "etcd/20260530-000000.db.gz",
        "etcd/20250101-000000.db.gz.keep",
        "etcd/x",
    ] {
        mem.put(
            &object_store::path::Path::from(name),
            object_store::PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    }
    let now = "20260601-000000.db".parse::<BackupKey>().unwrap().time;
    let policy = etcd_backup::retention::Policy {
        max_age: Duration::from_secs(30 * 86400),
        keep_last: 1,
        pitr_window: std::time::Duration::from_secs(7 * 86_400),
        tiers: Default::default(),
    };
    let by = prune::Pruning {
        policy: &policy,
        protect: None,
        verify: None,
    };
    let ctx = Context {
        now,
        shutdown: Shutdown::never(),
    };
    let dry = prune::prune(&store, &by, prune::PruneArgs { dry_run: true }, &ctx)
        .await
        .unwrap();
    assert_eq!(dry.plan.delete_count(), 2);
    assert!(dry.deleted.is_empty());
    assert_eq!(store.list().await.unwrap().backups.len(), 3);
    let done = prune::prune(&store, &by, prune::PruneArgs::default(), &ctx)
        .await
        .unwrap();
    let deleted: Vec<_> = done.deleted.iter().map(|k| k.to_string()).collect();
    assert_eq!(deleted, ["20260102-000000.db.gz", "20260101-000000.db.gz"]);
    let left = store.list().await.unwrap();
    assert_eq!(left.backups.len(), 1);
    assert_eq!(left.skipped.len(), 2, "names that are not ours stay");
}

use futures::StreamExt;

#[tokio::test]
async fn a_silent_stream_hits_the_stall_timeout() {
    let s = read_data("small.db");
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(s))])
        .chain(futures::stream::pending());
    let within = Limits {
        total: Duration::from_secs(60),
        stall: Duration::from_millis(200),
        rate: None,
        shutdown: Shutdown::never(),
        expected_size: None,
    };
    assert_nothing_published_within(stream, "ETCD_SNAPSHOT_STALL_TIMEOUT", &within).await;
}

#[tokio::test]
async fn a_signal_mid_stream_stops_and_cleans_up() {
    let s = read_data("medium.db");
    let (trigger, shutdown) = shutdown::channel();
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(
        &s[..1 << 20],
    ))])
    .chain(futures::stream::pending());
    let within = Limits {
        total: Duration::from_secs(60),
        stall: Duration::from_secs(60),
        rate: None,
        shutdown,
        expected_size: None,
    };
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.fire("SIGTERM");
        // Keep the trigger alive: a dropped trigger is "never".
        std::future::pending::<()>().await
    });
    assert_nothing_published_within(stream, "interrupted by SIGTERM", &within).await;
}

#[tokio::test]
async fn restore_and_list_stop_on_a_signal_and_leave_no_part_file() {
    let store = Store::new(Arc::new(InMemory::new()), "memory://b", "etcd/", None);
    let tmp = tempfile::tempdir().unwrap();
    let k = key(Codec::Gzip);
    publish(
        chunks(read_data("small.db"), 4096),
        &store,
        k,
        &cfg(Codec::Gzip, tmp.path()),
        &limits(Duration::from_secs(30)),
        vec![],
        no_check,
    )
    .await
    .unwrap();
    let (trigger, stop) = shutdown::channel();
    trigger.fire("SIGTERM");
    let out = tmp.path().join("restored.db");
    let e = restore::restore(&store, k, &to(&out), &stop, None, None, &Trust::Unchecked)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("interrupted by SIGTERM"), "{e:#}");
    assert!(!out.exists());
    assert!(!tmp.path().join("restored.db.part").exists());
    let policy = etcd_backup::retention::Policy {
        max_age: Duration::from_secs(86400),
        keep_last: 1,
        pitr_window: std::time::Duration::from_secs(7 * 86_400),
        tiers: Default::default(),
    };
    let by = prune::Pruning {
        policy: &policy,
        protect: None,
        verify: None,
    };
    let at = |shutdown: &Shutdown| Context {
        now: chrono::Utc::now(),
        shutdown: shutdown.clone(),
    };
    let e = list::rows(&store, &by, &at(&stop)).await.unwrap_err();
    assert!(format!("{e:#}").contains("interrupted by SIGTERM"), "{e:#}");
    // Without the signal both run: the test above failed for the signal alone.
    let rows = list::rows(&store, &by, &at(&Shutdown::never()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    restore::restore(
        &store,
        k,
        &to(&out),
        &Shutdown::never(),
        None,
        None,
        &Trust::Unchecked,
    )
    .await
    .unwrap();
    assert!(out.exists());
}

#[tokio::test]
async fn an_encrypted_backup_restores_with_its_identity_and_nothing_else() {
    use etcd_backup::crypt::Identities;
    let mem = Arc::new(InMemory::new());
    let store = Store::new(mem.clone(), "mem://b", "etcd/", None);
    let tmp = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
    );
    let mut c = cfg(Codec::Gzip, tmp.path());
    c.recipients = vec![key_a.to_public().to_string(), key_b.to_public().to_string()];
    let k = key(Codec::Gzip).encrypted(true);
    assert_eq!(k.to_string(), "20260528-202640.db.gz.age");
    let snapshot = read_data("medium.db");
    publish(
        chunks(snapshot.clone(), 100_000),
        &store,
        k,
        &c,
        &limits(Duration::from_secs(30)),
        vec![],
        no_check,
    )
    .await
    .unwrap();
    let stored = mem
        .get(&store.path(&k))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        stored.starts_with(etcd_backup::crypt::AGE_MAGIC),
        "not an age file"
    );
    let meta = store.metadata(&k).await.unwrap();
    let get = |n: &str| meta.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("encryption").as_deref(), Some("age"));
    assert_eq!(get("age-recipients"), Some(c.recipients.join(",")));

    let ids = |k: &age::x25519::Identity| {
        Some(Arc::new(Identities {
            path: "key.txt".into(),
            keys: vec![Box::new(k.clone())],
        }))
    };
    let out = tmp.path().join("restored.db");
    let never = Shutdown::never();
    let dest = to(&out);
    let restore = |ids| restore::restore(&store, k, &dest, &never, None, ids, &Trust::Unchecked);
    let left = || out.exists() || tmp.path().join("restored.db.part").exists();
    // No identity, a wrong one: refused, nothing written.
    let e = format!("{:#}", restore(None).await.unwrap_err());
    assert!(e.contains("BACKUP_AGE_IDENTITY_FILE"), "{e}");
    assert!(!left());
    let e = format!(
        "{:#}",
        restore(ids(&age::x25519::Identity::generate()))
            .await
            .unwrap_err()
    );
    assert!(e.contains("no identity matches"), "{e}");
    assert!(!left());
    // Either recipient's identity restores the very snapshot.
    for key in [&key_a, &key_b] {
        let r = restore(ids(key)).await.unwrap();
        assert_eq!(std::fs::read(&r.path).unwrap(), snapshot);
        std::fs::remove_file(&r.path).unwrap();
    }
    // One flipped byte in the stored object: refused, nothing written.
    let mut bad = stored.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    mem.put(&store.path(&k), bad.into()).await.unwrap();
    let e = format!("{:#}", restore(ids(&key_a)).await.unwrap_err());
    assert!(e.contains("decrypting"), "{e}");
    assert!(!left());
}

/// Where a test restores to, refusing to replace a file.
fn to(path: &std::path::Path) -> restore::Destination {
    restore::Destination {
        path: path.to_path_buf(),
        force: false,
    }
}

/// Signed backups in the in-memory store: `latest` is the newest one whose signed manifest
/// names it, and a restore refuses bytes that differ from what was signed. The container tests
/// run the attack itself against a real S3 server.
#[tokio::test]
async fn restore_relies_only_on_a_manifest_signed_for_that_very_object() {
    use etcd_backup::sign::{keygen, Refused, SigningKey, VerifyKeys};
    let mem = Arc::new(InMemory::new());
    let store = Store::new(mem.clone(), "mem://b", "etcd/", None);
    let tmp = tempfile::tempdir().unwrap();
    let g = keygen(&tmp.path().join("signing")).unwrap();
    let keys = VerifyKeys::parse(&g.public_key).unwrap();
    let mut signed = cfg(Codec::Gzip, tmp.path());
    signed.signing = Some(Arc::new(SigningKey::read(&g.private).unwrap()));
    let unsigned = cfg(Codec::Gzip, tmp.path());
    let at = |s: i64| {
        BackupKey::new(
            chrono::DateTime::from_timestamp(1_780_000_000 + s, 0).unwrap(),
            Codec::Gzip,
        )
    };
    let (old, new, copied, planted) = (at(0), at(10), at(20), at(30));
    let put = |k: BackupKey, c: PipelineConfig, data: &'static str| {
        let store = &store;
        async move {
            publish(
                chunks(read_data(data), 100_000),
                store,
                k,
                &c,
                &limits(Duration::from_secs(30)),
                vec![],
                no_check,
            )
            .await
            .unwrap()
        }
    };
    put(old, signed.clone(), "small.db").await;
    put(new, signed.clone(), "medium.db").await;
    // An old backup, its manifest and signature copied under a newer name; an unsigned one.
    for suffix in ["", ".json", ".json.sig"] {
        let from = object_store::path::Path::from(format!("etcd/{old}{suffix}"));
        let to = object_store::path::Path::from(format!("etcd/{copied}{suffix}"));
        mem.copy(&from, &to).await.unwrap();
    }
    put(planted, unsigned, "medium.db").await;

    let listing = store.list().await.unwrap();
    assert!(
        listing
            .backups
            .iter()
            .find(|b| b.key == new)
            .unwrap()
            .signature
    );
    assert!(!listing.backups[0].signature, "the planted one");
    let (key, trust, passed_over) =
        restore::choose(&store, restore::Which::Latest, Some(&keys), &[])
            .await
            .unwrap();
    assert_eq!(key, new);
    let v = trust.vouched().expect("vouched");
    assert_eq!(v.signer, g.fingerprint);
    let why: Vec<_> = passed_over.iter().map(|(k, r)| (*k, r.clone())).collect();
    assert_eq!(
        why,
        vec![
            (planted, Refused::Unsigned),
            (
                copied,
                Refused::OtherObject {
                    named: format!("etcd/{old}")
                }
            ),
        ]
    );
    // Named: the planted one is refused unless --allow-unsigned names it; the copy never is.
    let e = restore::choose(&store, restore::Which::Key(planted), Some(&keys), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("--allow-unsigned {planted}")), "{e}");
    let (_, t, _) = restore::choose(
        &store,
        restore::Which::Key(planted),
        Some(&keys),
        &[planted],
    )
    .await
    .unwrap();
    assert_eq!(t, Trust::AllowedUnsigned);
    let e = restore::choose(&store, restore::Which::Key(copied), Some(&keys), &[copied])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not this object"), "{e}");
    let missing = at(99);
    let e = restore::choose(&store, restore::Which::Key(missing), Some(&keys), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("there is no backup"), "{e}");
    // Without keys, latest is simply the newest.
    let (key, trust, _) = restore::choose(&store, restore::Which::Latest, None, &[])
        .await
        .unwrap();
    assert_eq!((key, trust), (planted, Trust::Unchecked));

    // The signed backup restores; with its object swapped for other bytes it does not.
    let out = tmp.path().join("restored.db");
    let never = Shutdown::never();
    let r = restore::restore(
        &store,
        new,
        &to(&out),
        &never,
        None,
        None,
        &trust_of(&store, new, &keys).await,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), read_data("medium.db"));
    std::fs::remove_file(&out).unwrap();
    let vouched = trust_of(&store, new, &keys).await;
    let other = mem
        .get(&store.path(&old))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    mem.put(&store.path(&new), other.into()).await.unwrap();
    let e = format!(
        "{:#}",
        restore::restore(&store, new, &to(&out), &never, None, None, &vouched)
            .await
            .unwrap_err()
    );
    assert!(e.contains("its signed manifest says"), "{e}");
    assert!(!out.exists() && !tmp.path().join("restored.db.part").exists());

    // Prune: backups planted under newer names do not push the newest signed one out.
    let policy = etcd_backup::retention::Policy {
        max_age: Duration::ZERO,
        keep_last: 1,
        pitr_window: std::time::Duration::from_secs(7 * 86_400),
        tiers: Default::default(),
    };
    let now = planted.time + chrono::TimeDelta::days(1);
    for (verify, kept) in [(None, planted), (Some(&keys), new)] {
        let by = prune::Pruning {
            policy: &policy,
            protect: None,
            verify,
        };
        let ctx = Context {
            now,
            shutdown: never.clone(),
        };
        let p = prune::prune(&store, &by, prune::PruneArgs { dry_run: true }, &ctx)
            .await
            .unwrap();
        let keep: Vec<_> = p
            .plan
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.key)
            .collect();
        assert_eq!(keep, [kept], "verify keys: {}", verify.is_some());
    }
}

async fn trust_of(store: &Store, key: BackupKey, keys: &etcd_backup::sign::VerifyKeys) -> Trust {
    Trust::Vouched(Box::new(
        etcd_backup::trust::judge(store, &key, keys)
            .await
            .unwrap()
            .unwrap(),
    ))
}

#[tokio::test]
async fn a_base_whose_snapshot_is_not_what_its_record_says_is_refused() {
    use etcd_backup::pitr::archive::Archive;
    use etcd_backup::pitr::plan::Plan;
    use etcd_backup::stream::names::Generation;
    // small.db is at revision 4, a backup of cluster "cafe".
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(InMemory::new()), "mem://b", "etcd/", None);
    let k = key(Codec::Zstd);
    publish(
        chunks(read_data("small.db"), 4096),
        &store,
        k,
        &cfg(Codec::Zstd, tmp.path()),
        &limits(Duration::from_secs(60)),
        vec![("etcd-cluster-id", "cafe".to_string())],
        no_check,
    )
    .await
    .unwrap();
    let env: etcd_backup::config::Env = [
        ("BACKUP_BUCKET", "backups"),
        ("BACKUP_TMP_DIR", tmp.path().to_str().unwrap()),
    ]
    .into_iter()
    .collect();
    let restore_cfg = env.restore().unwrap();
    let never = Shutdown::never();
    let way = Archive::new(&store, &restore_cfg, &never, &Default::default());
    let plan = |base_revision: i64, cluster: &str| Plan {
        generation: Generation::parse("20261204T170000Z").unwrap(),
        cluster_id: cluster.into(),
        base_revision,
        base: k.to_string(),
        start_base: true,
        segments: vec![],
        revision: base_revision,
    };
    // (the record's revision and cluster, the refusal or None)
    let cases = [
        (4, "cafe", None),
        (
            9,
            "cafe",
            Some("its snapshot is at revision 4, but the generation's record says 9"),
        ),
        (
            4,
            "beef",
            Some("it is a backup of cluster cafe, the generation's record says beef"),
        ),
    ];
    for (revision, cluster, want) in cases {
        let got = way.restore_base(&plan(revision, cluster)).await;
        match (want, &got) {
            (None, Ok((_, v))) => assert_eq!(v.status.revision, 4),
            (Some(w), Err(e)) => assert!(format!("{e:#}").contains(w), "{e:#}"),
            _ => panic!(
                "{revision} {cluster}: want {want:?}, got {:?}",
                got.map(|g| g.1.status.revision)
            ),
        }
    }
}
