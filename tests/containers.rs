//! Container tests: a real etcd 3.5 with a kubeadm-like PKI and `--client-cert-auth`, a real S3
//! server (SeaweedFS, SigV4 enforced), and the real binary between them.

mod proxy;
mod pushgateway;
mod rig;

use crate::common::{age_keygen, tools_dir};

use std::collections::HashMap;
use std::io::Read;

use etcd_backup::compress;
use sha2::{Digest, Sha256};

use crate::cli::text;
use rig::{Etcd, Pki, S3};

/// Returns from the test when no Docker engine answers (see [`rig::docker_available`]).
macro_rules! require_docker {
    () => {
        if !rig::docker_available() {
            return;
        }
    };
}

mod pitr;
mod signing;
mod stream;

/// A PKI, an etcd with mTLS and an S3 server with the bucket "backups".
async fn start() -> (Pki, Etcd, S3) {
    let pki = Pki::new();
    let (etcd, s3) = tokio::join!(Etcd::start(&pki), S3::start());
    s3.create_bucket("backups").await;
    (pki, etcd, s3)
}

#[tokio::test]
async fn backup_round_trip_restores_and_prunes() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(300).await;

    // Backups named by the seed's script, and objects that are not ours, already in the bucket.
    for name in [
        "etcd/20200101-000000.db.gz",
        "etcd/20200102-000000.db.gz",
        "etcd/20200102-000000.db.gz.json",
        "etcd/notes.txt",
        "etcd/20200101-000000.db.gz.bak",
    ] {
        s3.put("backups", name, &b"old"[..]).await;
    }

    let o = rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_STORAGE_CLASS", "STANDARD_IA")
            .env("BACKUP_KEEP_LAST", "1")
            .env("BACKUP_RETENTION", "1d"),
        0,
    )
    .await;
    let log = text(&o);
    assert!(log.contains("backup complete"), "{log}");
    assert!(log.contains("pruned=2"), "{log}");

    let names = s3.list("backups").await;
    let ours: Vec<_> = names
        .iter()
        .filter(|n| n.ends_with(".db.gz") && !n.contains("2020"))
        .collect();
    assert_eq!(ours.len(), 1, "{names:?}");
    let key = ours[0].clone();
    let manifest = format!("{key}.json");
    // Prune removed the seed's old backups (and a manifest) and nothing else.
    let mut rest: Vec<_> = names
        .iter()
        .filter(|n| **n != key && **n != manifest)
        .cloned()
        .collect();
    rest.sort();
    assert_eq!(rest, ["etcd/20200101-000000.db.gz.bak", "etcd/notes.txt"]);

    // The object decodes to a snapshot identical to one streamed directly from etcd.
    let (stored, headers) = s3.get("backups", &key).await;
    let (codec, mut dec) = compress::decoder(std::io::Cursor::new(stored)).unwrap();
    assert_eq!(codec, compress::Codec::Gzip);
    let mut raw = Vec::new();
    dec.read_to_end(&mut raw).unwrap();
    let direct = etcd.snapshot().await;
    assert_eq!(
        Sha256::digest(&raw),
        Sha256::digest(&direct),
        "backup differs from a direct snapshot"
    );
    let (db, trailer) = raw.split_at(raw.len() - 32);
    assert_eq!(&Sha256::digest(db)[..], trailer);

    // Metadata and storage class.
    let h: HashMap<_, _> = headers.into_iter().collect();
    assert_eq!(
        h.get("x-amz-storage-class").map(String::as_str),
        Some("STANDARD_IA"),
        "{h:?}"
    );
    assert_eq!(h["x-amz-meta-compression"], "gzip");
    assert_eq!(h["x-amz-meta-etcd-version"], "3.5.1");
    // The verified figures are in the manifest, written once the object was published.
    let (m, _) = s3.get("backups", &manifest).await;
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(
        m["snapshot-sha256"],
        etcd_backup::snapshot::verify::hex(&Sha256::digest(db))
    );
    let status =
        etcd_backup::snapshot::verify::walk(&rig::temp_file(&raw), db.len() as u64).unwrap();
    assert_eq!(m["etcd-revision"], status.revision.to_string());
    assert_eq!(m["etcd-total-keys"], status.total_key.to_string());
    assert_eq!(m["etcd-version"], "3.5.1");
    assert!(status.revision > 300, "revision {}", status.revision);

    // etcdutl restores the decompressed object as is, hash check included.
    rig::etcdutl_restore(&raw).await;
    assert!(s3.open_uploads("backups").await.is_empty());
}

#[tokio::test]
async fn failures_leave_no_object_and_no_open_upload() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let other = Pki::new();

    // (what, settings that differ, what the message must say)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "etcd unreachable",
            vec![("ETCD_ENDPOINTS", "https://127.0.0.1:1".into())],
            "nothing listens there",
        ),
        (
            "wrong CA",
            vec![("ETCD_CACERT", other.path("ca.crt"))],
            "is not signed by ETCD_CACERT",
        ),
        (
            "client cert from another CA",
            vec![
                ("ETCD_CERT", other.path("client.crt")),
                ("ETCD_KEY", other.path("client.key")),
            ],
            "etcd rejected our client certificate",
        ),
        (
            "wrong S3 secret",
            vec![("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())],
            "check the credentials",
        ),
        (
            "missing bucket",
            vec![("BACKUP_BUCKET", "no-such-bucket".into())],
            "check that BACKUP_BUCKET names an existing bucket",
        ),
    ];
    for (what, env, want) in cases {
        let mut cmd = rig::backup_cmd(&pki, &etcd.url, &s3, "backups");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let o = cmd.output().await.unwrap();
        let log = text(&o);
        assert!(
            !log.contains("not-the-secret") && !log.contains(rig::SECRET),
            "{what}: secret in output"
        );
        assert_failed_cleanly(&o, want, &s3, "backups").await;
    }
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let endpoints = format!("https://127.0.0.1:1,{}", etcd.url);
    let o = rig::run(
        rig::backup_cmd(&pki, &endpoints, &s3, "backups").env("BACKUP_COMPRESSION", "zstd"),
        0,
    )
    .await;
    let log = text(&o);
    assert!(
        log.contains("endpoint=https://127.0.0.1:1\n") && log.contains("endpoint unusable"),
        "{log}"
    );
    assert!(log.contains(&format!("at {}", etcd.url)), "{log}");
    let names = s3.backups("backups").await;
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(".db.zst"));
}

#[tokio::test]
async fn restore_round_trip_through_etcdutl_and_a_new_etcd() {
    require_docker!();
    let (pki, etcd, s3) = start().await;

    // Restoring from an empty bucket is a clear runtime error.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.db");
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args(["restore", "latest", "--output"])
            .arg(&out),
        1,
    )
    .await;
    assert!(
        text(&o).contains("there are no backups under s3://backups/etcd/"),
        "{}",
        text(&o)
    );

    // Several thousand keys, large values, overwrites and deletes.
    etcd.load(3000).await;
    let mut kv = etcd.client().kv_client();
    for i in 0..20 {
        kv.put(
            format!("/registry/secrets/big{i}"),
            vec![i as u8; 200_000],
            None,
        )
        .await
        .unwrap();
    }
    let source = rig::digest(etcd.client()).await;
    let t = std::time::Instant::now();
    rig::run(rig::backup_cmd(&pki, &etcd.url, &s3, "backups"), 0).await;
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args([
                "restore",
                "latest",
                "--name",
                "cp1",
                "--initial-advertise-peer-urls",
                "https://10.0.1.10:2380",
                "--output",
            ])
            .arg(&out),
        0,
    )
    .await;
    let log = text(&o);
    assert!(
        log.contains("--initial-cluster cp1=https://10.0.1.10:2380"),
        "{log}"
    );
    assert!(!dir.path().join("restored.db.part").exists());
    let restored = std::fs::read(&out).unwrap();

    let volume = format!("etcd-backup-test-{}", std::process::id());
    let (_new_etcd, client) = rig::etcd_from_snapshot(&restored, &volume).await;
    let copy = rig::digest(&client).await;
    eprintln!(
        "backup, restore, etcdutl restore and a new etcd took {:.1}s for {} keys",
        t.elapsed().as_secs_f64(),
        source.1
    );
    rig::remove_volume(&volume);
    assert_eq!(
        copy, source,
        "restored etcd differs from the source (revision, key count, digest)"
    );

    // Refuses to overwrite without --force; a named backup restores too.
    let name = s3.backups("backups").await.pop().unwrap();
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args(["restore", &name, "--output"])
            .arg(&out),
        1,
    )
    .await;
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args(["restore", &name, "--force", "--output"])
            .arg(&out),
        0,
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), restored);

    // A corrupted object is rejected and no file is written.
    let (mut stored, _) = s3.get("backups", &name).await;
    let mid = stored.len() / 2;
    stored[mid] ^= 0x20;
    s3.put("backups", "etcd/20200101-000000.db.gz", stored)
        .await;
    let bad = dir.path().join("bad.db");
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args(["restore", "20200101-000000.db.gz", "--output"])
            .arg(&bad),
        1,
    )
    .await;
    assert!(!bad.exists() && !dir.path().join("bad.db.part").exists());

    // `list` shows both, newest first, with metadata where we wrote it.
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups").args(["list", "-o", "json"]),
        0,
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["key"], name.as_str());
    assert_eq!(rows[0]["revision"], source.0);
    assert_eq!(rows[1]["key"], "etcd/20200101-000000.db.gz");
}

#[tokio::test]
async fn status_reports_every_endpoint() {
    require_docker!();
    let pki = Pki::new();
    let etcd = Etcd::start(&pki).await;
    let both = format!("{},https://127.0.0.1:1", etcd.url);
    let o = rig::run(rig::etcd_cmd(&pki, &both).args(["status", "-o", "json"]), 0).await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["healthy"], true);
    assert_eq!(rows[0]["version"], "3.5.1");
    assert_eq!(rows[0]["is_leader"], true);
    assert_eq!(rows[1]["healthy"], false);
    assert!(rows[1]["error"]
        .as_str()
        .unwrap()
        .contains("nothing listens there"));
    rig::run(rig::etcd_cmd(&pki, "https://127.0.0.1:1").arg("status"), 1).await;
    // A tiny quota makes the member "near quota".
    let o = rig::run(
        rig::etcd_cmd(&pki, &etcd.url)
            .env("ETCD_QUOTA_BACKEND_BYTES", "16KiB")
            .arg("status"),
        0,
    )
    .await;
    assert!(
        text(&o).contains("healthy (near quota)") && text(&o).contains("refuses writes"),
        "{}",
        text(&o)
    );
}

/// Asserts a failed backup: exit 1, `want` in the message, nothing in the bucket, no open upload.
async fn assert_failed_cleanly(o: &std::process::Output, want: &str, s3: &S3, bucket: &str) {
    let log = text(o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains(want), "expected {want:?} in\n{log}");
    assert!(s3.list(bucket).await.is_empty(), "an object was left");
    assert!(
        s3.open_uploads(bucket).await.is_empty(),
        "an upload was left open"
    );
}

#[tokio::test]
async fn etcd_dying_mid_stream_publishes_nothing() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(6000).await; // about 9 MB of database
    let port = rig::port(&etcd.url);
    // The connection dies after 7 MB from etcd: inside the snapshot stream, after the first
    // 5 MiB part (stored as is) went to the upload, so the abort has a part to discard.
    let cut = proxy::cut_after(port, 7_000_000).await;
    let url = format!("https://127.0.0.1:{}", cut.port);
    let o = rig::backup_cmd(&pki, &url, &s3, "backups")
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_UPLOAD_PART_SIZE", "5MiB")
        .output()
        .await
        .unwrap();
    assert_failed_cleanly(&o, "snapshot stream from", &s3, "backups").await;
}

/// Backs up `keys` keys through two endpoints, the first a proxy that cuts etcd's connection
/// after `cut` bytes; the backup must succeed from the second, logging every one of `want`, and
/// leave one backup and no open upload.
async fn succeeds_from_the_second_endpoint(keys: usize, cut: usize, want: &[&str]) {
    let (pki, etcd, s3) = start().await;
    etcd.load(keys).await;
    let cut = proxy::cut_after(rig::port(&etcd.url), cut).await;
    let endpoints = format!("https://127.0.0.1:{},{}", cut.port, etcd.url);
    let o = rig::run(rig::backup_cmd(&pki, &endpoints, &s3, "backups"), 0).await;
    let log = text(&o);
    for w in want {
        assert!(log.contains(w), "{w:?} not in:\n{log}");
    }
    assert!(log.contains(&format!("at {}", etcd.url)), "{log}");
    assert_eq!(s3.backups("backups").await.len(), 1);
    assert!(s3.open_uploads("backups").await.is_empty(), "{log}");
}

#[tokio::test]
async fn a_stream_breaking_midway_starts_over_from_the_next_endpoint() {
    require_docker!();
    // About 1.5 MB of database, cut after 300 kB: inside the snapshot stream.
    let want = [
        "snapshot stream from",
        "starting over from the next endpoint",
    ];
    succeeds_from_the_second_endpoint(1000, 300_000, &want).await;
}

#[tokio::test]
async fn s3_slowing_down_then_recovering_is_retried() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let s3_port = rig::port(&s3.endpoint);
    let slow = proxy::slow_down(s3_port, 3).await;
    rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups").env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", slow.port),
        ),
        0,
    )
    .await;
    assert!(
        slow.connections.load(std::sync::atomic::Ordering::SeqCst) > 3,
        "no request got through the proxy"
    );
    assert_eq!(s3.backups("backups").await.len(), 1);
    // With retries off, the same 503s fail the run, cleanly.
    let slow = proxy::slow_down(s3_port, 3).await;
    let o = rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", slow.port),
            )
            .env("BACKUP_RETRIES", "0"),
        1,
    )
    .await;
    assert!(text(&o).contains("503"), "{}", text(&o));
    assert_eq!(
        s3.backups("backups").await.len(),
        1,
        "the failed run changed the bucket"
    );
}

#[tokio::test]
async fn bucket_settings_are_retried_like_every_other_request() {
    require_docker!();
    let s3 = S3::start().await;
    s3.create_bucket("backups").await;
    let store = |port: u16, retries: &str| {
        let env: etcd_backup::config::Env = [
            ("BACKUP_BUCKET", "backups".to_string()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID", rig::ACCESS.to_string()),
            ("AWS_SECRET_ACCESS_KEY", rig::SECRET.to_string()),
            ("BACKUP_RETRIES", retries.to_string()),
        ]
        .into_iter()
        .collect();
        etcd_backup::store::Store::s3(&env.prune().unwrap().store).unwrap()
    };
    // Three 503 SlowDown answers, then the server: the default retries see it through.
    let slow = proxy::slow_down(rig::port(&s3.endpoint), 3).await;
    let bucket = store(slow.port, "5");
    let versioning = bucket.bucket().unwrap().versioning().await;
    assert!(versioning.is_ok(), "{versioning:?}");
    assert!(slow.connections.load(std::sync::atomic::Ordering::SeqCst) > 3);
    // With retries off, the first 503 is the answer, and it says so.
    let slow = proxy::slow_down(rig::port(&s3.endpoint), 3).await;
    let bucket = store(slow.port, "0");
    let e = bucket.bucket().unwrap().object_lock().await.unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
    assert_eq!(
        slow.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn three_members_with_one_and_then_two_down() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("etcd-backup-3m-{}", std::process::id());
    let (members, s3) = tokio::join!(Etcd::start_cluster(&pki, &net), S3::start());
    s3.create_bucket("backups").await;
    members[2].load(50).await;
    let all = members
        .iter()
        .map(|m| m.url.clone())
        .collect::<Vec<_>>()
        .join(",");

    members[0].stop().await;
    let o = rig::run(rig::backup_cmd(&pki, &all, &s3, "backups"), 0).await;
    let log = text(&o);
    assert!(log.contains("endpoint unusable: transport error"), "{log}");
    assert!(
        log.contains(&format!("endpoint={}", members[0].url)),
        "{log}"
    );
    assert!(!log.contains("lost quorum"), "{log}");

    // Two of three down: no quorum. The survivor still serves its local copy, with a warning.
    members[1].stop().await;
    // The survivor notices after an election timeout (it may have been the leader).
    let mut client = members[2].client().clone();
    for _ in 0..100 {
        let s = client.status().await.unwrap();
        if s.leader() == 0 || !s.errors().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let o = rig::run(
        rig::backup_cmd(&pki, &all, &s3, "backups").args(["--now", &rig::later(1)]),
        0,
    )
    .await;
    let log = text(&o);
    assert!(log.contains("lost quorum"), "{log}");
    assert!(log.contains(&format!("at {}", members[2].url)), "{log}");
    assert_eq!(s3.backups("backups").await.len(), 2);
}

#[tokio::test]
async fn a_follower_serves_and_the_leader_is_asked_last_or_not_at_all() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("etcd-backup-fl-{}", std::process::id());
    let (members, s3) = tokio::join!(Etcd::start_cluster(&pki, &net), S3::start());
    s3.create_bucket("backups").await;
    members[0].load(50).await;
    let leader =
        etcd_backup::etcd::MemberId(members[0].client().clone().status().await.unwrap().leader())
            .to_string();
    // The leader first in ETCD_ENDPOINTS, where the endpoint order alone would choose it.
    let mut urls = Vec::new();
    for m in &members {
        let id = m
            .client()
            .clone()
            .status()
            .await
            .unwrap()
            .header()
            .unwrap()
            .member_id();
        if etcd_backup::etcd::MemberId(id).to_string() == leader {
            urls.insert(0, m.url.clone());
        } else {
            urls.push(m.url.clone());
        }
    }
    let all = urls.join(",");
    let manifest = |name: String| {
        let s3 = &s3;
        async move {
            let m: serde_json::Value =
                serde_json::from_slice(&s3.get("backups", &format!("{name}.json")).await.0)
                    .unwrap();
            m
        }
    };
    rig::run(rig::backup_cmd(&pki, &all, &s3, "backups"), 0).await;
    let m = manifest(s3.backups("backups").await[0].clone()).await;
    assert_ne!(m["etcd-member-id"], leader.as_str(), "{m}");
    let asked = m["etcd-hashkv-members"].as_str().unwrap();
    assert!(
        asked.ends_with(&format!("{leader}=agrees")),
        "the leader last: {asked}"
    );
    assert_eq!(asked.matches("=agrees").count(), 3, "{asked}");
    assert_eq!(m["etcd-hashkv-asked"], "all");

    rig::run(
        rig::backup_cmd(&pki, &all, &s3, "backups")
            .args(["--now", &rig::later(1)])
            .env("ETCD_HASHKV_MEMBERS", "followers"),
        0,
    )
    .await;
    let mut names = s3.backups("backups").await;
    names.sort();
    let m = manifest(names.pop().unwrap()).await;
    let asked = m["etcd-hashkv-members"].as_str().unwrap();
    assert!(
        asked.ends_with(&format!(
            "{leader}=unchecked (the leader: ETCD_HASHKV_MEMBERS=followers)"
        )),
        "{asked}"
    );
    assert_eq!(asked.matches("=agrees").count(), 2, "{asked}");
    assert_eq!(m["etcd-hashkv-asked"], "followers");
}

#[tokio::test]
async fn s3_dying_mid_upload_leaves_nothing_and_the_next_run_succeeds() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(1000).await; // a 1.5 MB database, stored uncompressed: one part of that size
    let s3_port = rig::port(&s3.endpoint);
    let dying = proxy::upload_limit(s3_port, 300_000, proxy::OnLimit::Cut).await;
    let o = rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", dying.port),
        )
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_RETRIES", "2")
        .output()
        .await
        .unwrap();
    assert_failed_cleanly(&o, "uploading a part of", &s3, "backups").await;
    // The server is back: the next run publishes.
    drop(dying);
    rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups").env("BACKUP_COMPRESSION", "none"),
        0,
    )
    .await;
    assert_eq!(s3.backups("backups").await.len(), 1);
}

/// Runs `cmd` with its stderr piped, reads it until a line contains `needle`, calls `before`
/// with the log so far (to check the state the signal meets), sends SIGTERM and reads to the
/// end. Returns the exit code, the whole log, and how long the exit took after the signal.
async fn sigterm_after(
    mut cmd: tokio::process::Command,
    needle: &str,
    before: impl FnOnce(&str),
) -> (Option<i32>, String, std::time::Duration) {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    before(&log);
    let signalled = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().await.unwrap();
    (status.code(), log, signalled.elapsed())
}

#[tokio::test]
async fn sigterm_during_the_upload_aborts_it() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(1000).await;
    let s3_port = rig::port(&s3.endpoint);
    let hung = proxy::upload_limit(s3_port, 300_000, proxy::OnLimit::Stall).await;
    let mut cmd = rig::backup_cmd(&pki, &etcd.url, &s3, "backups");
    cmd.env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", hung.port),
    )
    .env("BACKUP_COMPRESSION", "none");
    // The proxy stalls the upload after 300 kB, long before the snapshot is verified: by then
    // the upload hangs.
    let (code, log, _) = sigterm_after(cmd, "snapshot verified", |_| {}).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("interrupted by SIGTERM: the upload was aborted"),
        "{log}"
    );
    assert!(s3.list("backups").await.is_empty(), "{log}");
    assert!(
        s3.open_uploads("backups").await.is_empty(),
        "an upload was left open:\n{log}"
    );
}

#[tokio::test]
async fn a_snapshot_failing_at_its_start_falls_over_to_the_next_endpoint() {
    require_docker!();
    // Enough for the TLS handshake and the status call, not for the first snapshot chunk.
    let want = ["failed after 0 bytes", "trying the next endpoint"];
    succeeds_from_the_second_endpoint(100, 12_000, &want).await;
}

#[tokio::test]
async fn sigterm_during_a_hung_restore_stops_it_and_removes_the_part_file() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(300).await;
    rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups").env("BACKUP_COMPRESSION", "none"),
        0,
    )
    .await;
    // Listings are small; the object's body hangs after 200 kB.
    let hung = proxy::download_limit(rig::port(&s3.endpoint), 200_000, proxy::OnLimit::Stall).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.db");
    let mut cmd = rig::cmd(&pki, &etcd.url, &s3, "backups");
    cmd.env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", hung.port),
    )
    // A progress line as soon as bytes arrive: the signal meets a download under way.
    .env("BACKUP_PROGRESS_INTERVAL", "1ns")
    .args(["restore", "latest", "--output"])
    .arg(&out);
    let part = dir.path().join("restored.db.part");
    let (code, log, took) = sigterm_after(cmd, "download in progress", |log| {
        assert!(part.exists(), "the download did not start:\n{log}")
    })
    .await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("interrupted by SIGTERM"), "{log}");
    // Well inside the 10 s grace period: the download watched the signal.
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?}:\n{log}"
    );
    assert!(!out.exists(), "{log}");
    assert!(!dir.path().join("restored.db.part").exists(), "{log}");
}

#[tokio::test]
async fn metrics_reach_a_real_pushgateway_and_a_failure_keeps_the_last_success() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let pg = pushgateway::Pushgateway::start().await;
    let group = "cluster=\"test\"";
    let run = |bucket: &str| {
        let mut c = rig::backup_cmd(&pki, &etcd.url, &s3, bucket);
        c.env("BACKUP_PUSHGATEWAY_URL", &pg.url)
            .env("BACKUP_METRICS_LABELS", "cluster=test");
        c
    };

    let o = run("backups").output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let success = pg
        .value("etcd_backup_last_success_timestamp_seconds", group)
        .await
        .expect("the last success is pushed");
    assert_eq!(
        pg.value("etcd_backup_last_run_success", group).await,
        Some(1.0)
    );
    assert!(
        pg.value("etcd_backup_snapshot_size_bytes", group)
            .await
            .unwrap()
            > 0.0
    );
    assert!(pg.value("etcd_backup_db_size_bytes", group).await.unwrap() > 0.0);
    assert_eq!(
        pg.value("etcd_backup_db_quota_bytes", group).await,
        Some(2147483648.0)
    );
    let expiry = pg
        .value("etcd_backup_client_cert_expiry_timestamp_seconds", group)
        .await
        .unwrap();
    assert!(
        expiry > success,
        "the test PKI's client certificate is valid for a year"
    );

    // A failing run (a bucket that does not exist): visible, and the last success stays.
    let o = run("no-such-bucket")
        .args(["--now", &rig::later(1)])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        pg.value("etcd_backup_last_run_success", group).await,
        Some(0.0)
    );
    let last_run = pg
        .value("etcd_backup_last_run_timestamp_seconds", group)
        .await
        .unwrap();
    assert!(last_run > success, "{last_run} <= {success}");
    assert_eq!(
        pg.value("etcd_backup_last_success_timestamp_seconds", group)
            .await,
        Some(success),
        "a failed run must not touch the last success"
    );

    // A Pushgateway that is gone, or that accepts and never answers: the backup still succeeds.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (url, want, at) in [
        (&gone, "pushing metrics", 2),
        (&silent_url, "no answer within", 3),
    ] {
        let o = rig::run(
            rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
                .args(["--now", &rig::later(at)])
                .env("BACKUP_PUSHGATEWAY_URL", url)
                .env("BACKUP_PUSHGATEWAY_TIMEOUT", "2s"),
            0,
        )
        .await;
        let log = text(&o);
        assert!(
            log.contains(want) && log.contains("metrics_failed=true"),
            "{log}"
        );
    }
    drop(silent);
}

#[tokio::test]
async fn check_says_whether_the_newest_verified_backup_is_fresh() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let check = |max_age: &str| {
        let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
        c.env_remove("ETCD_ENDPOINTS")
            .env_remove("ETCD_CACERT")
            .env_remove("ETCD_CERT")
            .env_remove("ETCD_KEY")
            .args(["check", "--max-age", max_age]);
        c
    };
    // Empty bucket.
    let o = check("13h").output().await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("there is no verified backup"),
        "{}",
        text(&o)
    );
    // Only a backup without a manifest (an old one): not counted.
    s3.put("backups", "etcd/20200101-000000.db.gz", &b"old"[..])
        .await;
    let o = check("13h").output().await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("1 backups without a manifest"),
        "{}",
        text(&o)
    );
    // A fresh backup.
    rig::run(rig::backup_cmd(&pki, &etcd.url, &s3, "backups"), 0).await;
    let o = check("13h").output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).starts_with("ok: newest verified backup etcd/"),
        "{}",
        text(&o)
    );
    let o = check("13h").args(["-o", "json"]).output().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fresh"], true);
    // Too old for a tight limit.
    let o = check("1s")
        .args(["--now", &rig::later(2)])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("older than the maximum 1s"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn progress_lines_come_only_when_a_transfer_outlasts_the_interval() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(300).await;
    // The default interval (10 s) is longer than this backup: no progress line.
    let o = rig::run(rig::backup_cmd(&pki, &etcd.url, &s3, "backups"), 0).await;
    assert!(!text(&o).contains("in progress"), "{}", text(&o));
    let o = rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
            .args(["--now", &rig::later(1)])
            .env("BACKUP_PROGRESS_INTERVAL", "1ns")
            .env("BACKUP_LOG_FORMAT", "json")
            // Stored raw, so that the restore below downloads it in many chunks.
            .env("BACKUP_COMPRESSION", "none"),
        0,
    )
    .await;
    let log = text(&o);
    let line = log
        .lines()
        .find(|l| l.contains("snapshot in progress"))
        .unwrap_or_else(|| panic!("no progress line:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(
        v["percent"].as_f64().is_some() && v["mib_per_s"].as_f64().is_some(),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_PROGRESS_INTERVAL", "1ns")
            .args(["restore", "latest", "--output"])
            .arg(dir.path().join("r.db")),
        0,
    )
    .await;
    assert!(text(&o).contains("download in progress"), "{}", text(&o));
}

/// Puts `n` values of `size` bytes under `prefix`, then deletes them and compacts physically:
/// free pages that only a defrag gives back.
async fn garbage(client: &etcd_client::Client, prefix: &str, n: usize, size: usize) {
    let mut kv = client.kv_client();
    for i in 0..n {
        kv.put(format!("{prefix}{i:05}"), vec![b'g'; size], None)
            .await
            .unwrap();
    }
    kv.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let rev = kv
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
}

/// Waits until every member reports at least `free` bytes free. A member reports its size in
/// use as of a later backend commit, and pages freed while a read transaction still saw them
/// count as used until then: small writes make the commits happen.
async fn wait_free(members: &[&Etcd], free: i64) {
    let mut kv = members[0].client().kv_client();
    for i in 0..60 {
        let mut all = true;
        for m in members {
            let s = m.client().clone().status().await.unwrap();
            all &= s.db_size() - s.raft_used_db_size() >= free;
        }
        if all {
            return;
        }
        kv.put("/tick", i.to_string(), None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the members never all reported {free} bytes free");
}

/// Each member's (member id, db size, is leader), by endpoint.
async fn sizes(members: &[&Etcd]) -> Vec<(String, i64, bool)> {
    let mut out = Vec::new();
    for m in members {
        let s = m.client().clone().status().await.unwrap();
        let id = s.header().unwrap().member_id();
        out.push((format!("{id:x}"), s.db_size(), s.leader() == id));
    }
    out
}

fn defrag_cmd(pki: &Pki, members: &[&Etcd]) -> tokio::process::Command {
    let all = members
        .iter()
        .map(|m| m.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut c = rig::etcd_cmd(pki, &all);
    c.arg("defrag");
    c
}

#[tokio::test]
async fn defrag_visits_followers_then_the_leader_and_keeps_the_data() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("etcd-backup-defrag-{}", std::process::id());
    let members = Etcd::start_cluster(&pki, &net).await;
    let all: Vec<&Etcd> = members.iter().collect();
    members[0].load(200).await;
    garbage(members[0].client(), "/garbage/", 400, 10_000).await;
    wait_free(&all, 2 << 20).await;
    let digest = rig::digest(members[0].client()).await;
    let before = sizes(&all).await;

    // --dry-run and a threshold above the free space change nothing.
    let o = rig::run(
        defrag_cmd(&pki, &all)
            .args(["--dry-run"])
            .env("ETCD_DEFRAG_MIN_FREE", "1MiB"),
        0,
    )
    .await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(out.matches("would defragment").count(), 3, "{out}");
    let o = rig::run(
        defrag_cmd(&pki, &all).env("ETCD_DEFRAG_MIN_FREE", "1GiB"),
        0,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches("skip: ").count(),
        3,
        "{}",
        text(&o)
    );
    assert_eq!(
        sizes(&all).await,
        before,
        "a dry run or a skip changed a member"
    );

    // The real run: every member shrinks, the leader comes last, the data is the same.
    let o = rig::run(
        defrag_cmd(&pki, &all).env("ETCD_DEFRAG_MIN_FREE", "1MiB"),
        0,
    )
    .await;
    let log = text(&o);
    let order: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" defragmenting "))
        .map(|l| {
            l.split("member=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let leader = before.iter().find(|(_, _, l)| *l).unwrap().0.clone();
    assert_eq!(order.len(), 3, "{log}");
    assert_eq!(
        order.last(),
        Some(&leader),
        "the leader must come last:\n{log}"
    );
    let after = sizes(&all).await;
    for ((id, b, _), (_, a, _)) in before.iter().zip(&after) {
        assert!(a < b, "member {id} did not shrink: {b} -> {a}\n{log}");
    }
    assert_eq!(
        rig::digest(members[0].client()).await,
        digest,
        "the data changed"
    );

    // One member stopped: refuses before touching anything.
    garbage(members[0].client(), "/garbage2/", 300, 10_000).await;
    members[2].stop().await;
    let up: Vec<&Etcd> = members[..2].iter().collect();
    let before = sizes(&up).await;
    let o = rig::run(
        defrag_cmd(&pki, &all).env("ETCD_DEFRAG_MIN_FREE", "1MiB"),
        1,
    )
    .await;
    let log = text(&o);
    assert!(log.contains("nothing was changed"), "{log}");
    // Listing only the two live endpoints does not get around it: the third is still a voter.
    let o = rig::run(defrag_cmd(&pki, &up).env("ETCD_DEFRAG_MIN_FREE", "1MiB"), 1).await;
    let log = text(&o);
    assert!(log.contains("is not among ETCD_ENDPOINTS"), "{log}");
    assert_eq!(sizes(&up).await, before, "a refused run changed a member");
}

#[tokio::test]
async fn defrag_disarms_nospace_once_every_member_is_below_the_quota() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("etcd-backup-nospace-{}", std::process::id());
    let members = Etcd::start_cluster_with(&pki, &net, &["--quota-backend-bytes=8388608"]).await;
    let all: Vec<&Etcd> = members.iter().collect();
    let mut kv = members[0].client().kv_client();
    let mut full = false;
    for i in 0..64 {
        if let Err(e) = kv
            .put(format!("/fill/{i:03}"), vec![b'f'; 512 << 10], None)
            .await
        {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the 8 MiB quota was never reached");
    garbage(members[0].client(), "/fill/", 0, 0).await;
    let o = rig::run(
        defrag_cmd(&pki, &all)
            .env("ETCD_QUOTA_BACKEND_BYTES", "8MiB")
            .env("ETCD_DEFRAG_MIN_FREE", "1MiB"),
        0,
    )
    .await;
    let log = text(&o);
    assert!(log.contains("disarmed the NOSPACE alarm"), "{log}");
    let alarms = members[0]
        .client()
        .clone()
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty(), "{:?}", alarms.alarms().len());
    kv.put("/after", "writable again", None).await.unwrap();
}

#[tokio::test]
async fn encrypted_backups_restore_with_the_age_cli_and_live_beside_plain_ones() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(dir.path(), "key.txt");
    let (_, other) = age_keygen(dir.path(), "other.txt");
    etcd.load(500).await;

    // An operator turns encryption on: the old plain backup stays.
    rig::run(rig::backup_cmd(&pki, &etcd.url, &s3, "backups"), 0).await;
    let source = rig::digest(etcd.client()).await;
    rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
            .args(["--now", &rig::later(1)])
            .env("BACKUP_AGE_RECIPIENTS", format!("{recipient} {other}")),
        0,
    )
    .await;
    let names = s3.backups("backups").await;
    let sealed = names
        .iter()
        .find(|n| n.ends_with(".db.gz.age"))
        .expect("an .age object")
        .clone();
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get("backups", &format!("{sealed}.json")).await.0).unwrap();
    assert_eq!(manifest["encryption"], "age");
    assert_eq!(manifest["age-recipients"], format!("{recipient},{other}"));

    // No tool of ours: age -d | gunzip, then etcdutl snapshot restore into a new etcd.
    let (object, _) = s3.get("backups", &sealed).await;
    let snapshot = crate::common::age_decrypt_gunzip(&identity, &object, dir.path());
    let volume = format!("etcd-backup-age-{}", std::process::id());
    let (_copy, client) = rig::etcd_from_snapshot(&snapshot, &volume).await;
    let copy = rig::digest(&client).await;
    rig::remove_volume(&volume);
    assert_eq!(
        copy, source,
        "the age CLI's restore differs from the source"
    );

    // Our restore with the identity writes the same snapshot.
    let out = dir.path().join("restored.db");
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_AGE_IDENTITY_FILE", &identity)
            .args(["restore", "latest", "--output"])
            .arg(&out),
        0,
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), snapshot);

    // list tells them apart; prune treats them alike.
    let o = rig::cmd(&pki, &etcd.url, &s3, "backups")
        .args(["list", "-o", "json"])
        .output()
        .await
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let enc: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["encryption"].as_str().unwrap())
        .collect();
    assert_eq!(enc, ["age", "none"], "{rows}");
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_KEEP_LAST", "1")
            .env("BACKUP_RETENTION", "1s")
            .arg("prune"),
        0,
    )
    .await;
    assert_eq!(s3.backups("backups").await, [sealed]);
}

#[tokio::test]
async fn the_files_a_restore_needs_travel_encrypted_beside_the_snapshot() {
    require_docker!();
    use std::os::unix::fs::PermissionsExt;
    let (pki, etcd, s3) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(dir.path(), "key.txt");
    // A PKI-like tree: a private key (0600), a certificate (0644), a symlink.
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(pki_dir.join("etcd")).unwrap();
    std::fs::write(pki_dir.join("etcd/ca.key"), "PRIVATE").unwrap();
    std::fs::set_permissions(
        pki_dir.join("etcd/ca.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(pki_dir.join("ca.crt"), "PUBLIC").unwrap();
    std::fs::set_permissions(
        pki_dir.join("ca.crt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("ca.crt", pki_dir.join("link.crt")).unwrap();
    let backup = || {
        let mut c = rig::backup_cmd(&pki, &etcd.url, &s3, "backups");
        c.env("BACKUP_AGE_RECIPIENTS", &recipient)
            .env("BACKUP_INCLUDE_PATHS", &pki_dir);
        c
    };

    // Without encryption the setting is refused before anything runs.
    let o = rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups").env("BACKUP_INCLUDE_PATHS", &pki_dir),
        2,
    )
    .await;
    assert!(
        text(&o).contains("BACKUP_INCLUDE_PATHS") && text(&o).contains("needs encryption"),
        "{}",
        text(&o)
    );

    // A failing snapshot (no etcd answers) takes its archive with it.
    rig::run(
        rig::backup_cmd(&pki, "https://127.0.0.1:1", &s3, "backups")
            .env("BACKUP_AGE_RECIPIENTS", &recipient)
            .env("BACKUP_INCLUDE_PATHS", &pki_dir),
        1,
    )
    .await;
    assert!(
        s3.list("backups").await.is_empty(),
        "{:?}",
        s3.list("backups").await
    );

    let o = backup().output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let names = s3.list("backups").await;
    let archive = names
        .iter()
        .find(|n| n.ends_with(".files.tar.age"))
        .expect("an archive")
        .clone();
    let (bytes, _) = s3.get("backups", &archive).await;
    assert!(
        bytes.starts_with(etcd_backup::crypt::AGE_MAGIC),
        "the archive is not encrypted"
    );
    assert!(
        !bytes.windows(7).any(|w| w == b"PRIVATE"),
        "plaintext in the bucket"
    );
    let o = rig::cmd(&pki, &etcd.url, &s3, "backups")
        .args(["list", "-o", "json"])
        .output()
        .await
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["files"], "ok", "{rows}");

    // restore --files: modes kept, the symlink skipped, nothing overwritten without --force.
    let target = dir.path().join("restored-files");
    let restore = |force: bool| {
        let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
        c.env("BACKUP_AGE_IDENTITY_FILE", &identity)
            .args(["restore", "latest", "--output"])
            .arg(dir.path().join(format!("snap-{force}.db")))
            .arg("--files")
            .arg(&target);
        if force {
            c.arg("--force");
        }
        c
    };
    let o = restore(false).output().await.unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    let base = target.join(pki_dir.strip_prefix("/").unwrap());
    let mode = |p: &str| {
        std::fs::metadata(base.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        std::fs::read_to_string(base.join("etcd/ca.key")).unwrap(),
        "PRIVATE"
    );
    assert_eq!(mode("etcd/ca.key"), 0o600);
    assert_eq!(mode("ca.crt"), 0o644);
    assert!(!base.join("link.crt").exists(), "a symlink was restored");
    assert!(log.contains("link.crt") && log.contains("skipped"), "{log}");
    std::fs::write(base.join("ca.crt"), "CHANGED").unwrap();
    let o = restore(false).output().await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(base.join("ca.crt")).unwrap(),
        "CHANGED"
    );
    let o = restore(true).output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(base.join("ca.crt")).unwrap(),
        "PUBLIC"
    );

    // Prune deletes the archive with its backup.
    let o = backup()
        .args(["--now", &rig::later(1)])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_KEEP_LAST", "1")
            .env("BACKUP_RETENTION", "1s")
            .args(["prune", "--now", &rig::later(3)]),
        0,
    )
    .await;
    let left = s3.list("backups").await;
    assert_eq!(
        left.len(),
        3,
        "one backup, its manifest and its archive: {left:?}"
    );
    assert!(!left.contains(&archive), "{left:?}");
}

/// A snapshot's HashKV as the verify walk computes it, and [`hash_at`] at other revisions.
fn offline_hash_kv(snapshot: &[u8]) -> (std::fs::File, u64, etcd_backup::snapshot::hashkv::HashKv) {
    let file = rig::temp_file(snapshot);
    let len = snapshot.len() as u64 - 32;
    let status = etcd_backup::snapshot::verify::walk(&file, len).unwrap();
    (file, len, status.hash_kv.expect("a HashKV"))
}

#[tokio::test]
async fn offline_hash_kv_equals_the_members_after_compactions_deletes_and_leases() {
    require_docker!();
    let (_pki, etcd, _s3) = start().await;
    let mut c = etcd.client().clone();
    // Leased keys (Kubernetes Events), keys rewritten, deleted before and after compactions,
    // and a delete at the compact revision itself.
    let lease = c.lease_grant(3600, None).await.unwrap().id();
    let leased = Some(etcd_client::PutOptions::new().with_lease(lease));
    for i in 0..60 {
        c.put(
            format!("/registry/events/e{i}"),
            format!("event {i}"),
            leased.clone(),
        )
        .await
        .unwrap();
        c.put(
            format!("/registry/pods/p{}", i % 7),
            format!("pod v{i}"),
            None,
        )
        .await
        .unwrap();
    }
    c.delete("/registry/pods/p3", None).await.unwrap();
    let at_delete = c.delete("/registry/events/e5", None).await.unwrap();
    let first = at_delete.header().unwrap().revision();
    c.compact(
        first,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    for i in 0..30 {
        c.put(
            format!("/registry/pods/p{}", i % 5),
            format!("pod w{i}"),
            None,
        )
        .await
        .unwrap();
    }
    c.delete("/registry/events/e7", None).await.unwrap();
    c.put("/registry/pods/p3", "back", None).await.unwrap();

    let (file, len, ours) = offline_hash_kv(&etcd.snapshot().await);
    assert_eq!(ours.compact_revision, first);
    let theirs = c.hash_kv(ours.revision).await.unwrap();
    assert_eq!(
        (theirs.hash(), theirs.compact_version()),
        (ours.hash, ours.compact_revision),
        "at the snapshot's revision {}",
        ours.revision
    );
    // An older revision of the same file, with the file's compact revision.
    let older = etcd_backup::snapshot::hashkv::hash_at(&file, len, ours.revision - 10, first)
        .unwrap()
        .unwrap();
    let theirs = c.hash_kv(ours.revision - 10).await.unwrap();
    assert_eq!(
        theirs.hash(),
        older.hash,
        "at revision {}",
        ours.revision - 10
    );

    // The member compacts after the snapshot: the snapshot hashed again at the member's new
    // compact revision gives the member's answer, and differs from the snapshot's own.
    let later = ours.revision - 8;
    c.compact(
        later,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let theirs = c.hash_kv(ours.revision).await.unwrap();
    assert_eq!(theirs.compact_version(), later);
    let again = etcd_backup::snapshot::hashkv::hash_at(&file, len, ours.revision, later)
        .unwrap()
        .unwrap();
    assert_eq!(theirs.hash(), again.hash);
    assert_ne!(again.hash, ours.hash, "the compaction dropped revisions");
}

#[tokio::test]
async fn a_diverged_member_is_never_the_source_of_a_published_backup() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("etcd-backup-dv-{}", std::process::id());
    let (mut members, s3) = tokio::join!(Etcd::start_cluster(&pki, &net), S3::start());
    s3.create_bucket("backups").await;
    members[0].load(40).await;
    let marker = b"diverge-me-0123456789";
    members[0]
        .client()
        .clone()
        .put("/registry/secrets/default/marker", &marker[..], None)
        .await
        .unwrap();
    members[0].load(10).await;
    // Member 2's copy of the value changes by one byte, behind raft's back.
    members[2]
        .edit_db(&pki, |db| {
            let mut found = 0;
            let mut i = 0;
            while let Some(at) = db[i..].windows(marker.len()).position(|w| w == marker) {
                db[i + at + marker.len() - 1] = b'X';
                i += at + marker.len();
                found += 1;
            }
            assert!(found > 0, "the value is in the file");
        })
        .await;
    let mut diverged = members[2].client().clone();
    let got = diverged
        .get("/registry/secrets/default/marker", None)
        .await
        .unwrap();
    assert_eq!(
        got.kvs()[0].value(),
        b"diverge-me-012345678X",
        "it serves the changed value"
    );
    let diverged_id = format!(
        "{:x}",
        diverged
            .status()
            .await
            .unwrap()
            .header()
            .unwrap()
            .member_id()
    );
    let urls = |order: [usize; 3]| order.map(|i| members[i].url.clone()).join(",");

    // The diverged member first: its snapshot is refused and the backup comes from another.
    let o = rig::run(rig::backup_cmd(&pki, &urls([2, 0, 1]), &s3, "backups"), 0).await;
    let log = text(&o);
    assert!(
        log.contains(&format!(
            "member {diverged_id} has diverged from the others"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("member {diverged_id}'s HashKV")),
        "{log}"
    );
    let keys = s3.backups("backups").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (body, _) = s3.get("backups", &format!("{}.json", keys[0])).await;
    let manifest: HashMap<String, String> = serde_json::from_slice(&body).unwrap();
    assert_ne!(manifest["etcd-member-id"], diverged_id, "{manifest:?}");
    let members_line = &manifest["etcd-hashkv-members"];
    assert!(
        members_line.contains(&format!("{diverged_id}=differs")),
        "{members_line}"
    );
    assert_eq!(members_line.matches("=agrees").count(), 2, "{members_line}");

    // The diverged member last: published from the first, with the warning.
    let o = rig::run(
        rig::backup_cmd(&pki, &urls([0, 1, 2]), &s3, "backups").args(["--now", &rig::later(1)]),
        0,
    )
    .await;
    let log = text(&o);
    assert!(
        log.contains(&format!("member {diverged_id}'s HashKV")),
        "{log}"
    );
    assert!(
        !log.contains("has diverged from the others, nothing from it"),
        "{log}"
    );
    assert_eq!(s3.backups("backups").await.len(), 2);
}

/// A single etcd 3.4.23 member (Debian's binary, from scripts/tools.sh) run on loopback with
/// the test PKI; killed on drop.
pub(crate) struct Etcd34 {
    child: std::process::Child,
    pub(crate) url: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd34 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_etcd_3_4(pki: &Pki) -> Etcd34 {
    let data = tempfile::tempdir().unwrap();
    let (client, peer) = (rig::free_port(), rig::free_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new(tools_dir().join("etcd-3.4"))
        .arg(format!("--data-dir={}", data.path().join("d").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .arg(format!("--cert-file={}", pki.path("server.crt")))
        .arg(format!("--key-file={}", pki.path("server.key")))
        .arg(format!("--trusted-ca-file={}", pki.path("ca.crt")))
        .arg("--client-cert-auth")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd-3.4: run scripts/tools.sh (make setup does)");
    let etcd = Etcd34 {
        child,
        url,
        _data: data,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
            return etcd;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("etcd 3.4 did not start");
}

#[tokio::test]
async fn etcd_3_4_backs_up_checks_hash_kv_and_restores() {
    require_docker!();
    let pki = Pki::new();
    let (etcd, s3) = tokio::join!(start_etcd_3_4(&pki), S3::start());
    s3.create_bucket("backups").await;
    let o = rig::etcd_cmd(&pki, &etcd.url)
        .arg("status")
        .output()
        .await
        .unwrap();
    assert!(text(&o).contains("3.4.23"), "{}", text(&o));
    // Leased keys, rewrites, deletes and a compaction, then more writes.
    let mut c = rig::connect(&pki, &etcd.url).await;
    let lease = c.lease_grant(3600, None).await.unwrap().id();
    for i in 0..50 {
        let leased = etcd_client::PutOptions::new().with_lease(lease);
        c.put(format!("/registry/events/e{i}"), "e", Some(leased))
            .await
            .unwrap();
        c.put(format!("/registry/pods/p{}", i % 6), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let r = c.delete("/registry/pods/p1", None).await.unwrap();
    c.compact(r.header().unwrap().revision() - 5, None)
        .await
        .unwrap();
    for i in 0..10 {
        c.put(format!("/registry/pods/p{}", i % 3), format!("w{i}"), None)
            .await
            .unwrap();
    }
    rig::run(rig::backup_cmd(&pki, &etcd.url, &s3, "backups"), 0).await;
    let keys = s3.backups("backups").await;
    let (body, _) = s3.get("backups", &format!("{}.json", keys[0])).await;
    let manifest: HashMap<String, String> = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["etcd-version"], "3.4.23", "{manifest:?}");
    assert!(
        manifest["etcd-hashkv-members"].ends_with("=agrees"),
        "{manifest:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.db");
    rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .args(["restore", "latest", "--output"])
            .arg(&out),
        0,
    )
    .await;
    let restored = std::fs::read(&out).unwrap();
    let (_, _, hash_kv) = offline_hash_kv(&restored);
    assert_eq!(hash_kv.hash.to_string(), manifest["etcd-hashkv"]);
}

#[tokio::test]
async fn doctor_reports_one_line_per_check_and_fails_on_what_breaks_a_backup() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups").args(["doctor", "-o", "json"]),
        0,
    )
    .await;
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let level = |check: &str| -> String {
        findings
            .iter()
            .find(|f| f["check"].as_str().unwrap().starts_with(check))
            .unwrap_or_else(|| panic!("no {check} in {findings:?}"))["level"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(level(&format!("etcd {}", etcd.url)), "ok");
    assert_eq!(level("client certificate"), "ok");
    assert_eq!(level("bucket"), "ok");
    assert_eq!(level("write, read back, delete"), "ok");
    assert_eq!(level("multipart upload"), "ok");
    // SeaweedFS does conditional writes: the stream's lock is taken by one.
    assert_eq!(level("conditional writes"), "ok");
    assert_eq!(level("scratch space"), "ok");
    assert_eq!(level("encryption"), "warn", "off by default");
    assert_eq!(level("bucket versioning"), "ok");
    assert_eq!(level("object lock"), "ok");
    // It left nothing behind: no object, no open upload.
    assert_eq!(s3.list("backups").await, Vec::<String>::new());
    assert_eq!(s3.open_uploads("backups").await, Vec::<String>::new());

    // A missing bucket and a dead endpoint: each a failed line, exit 1, every line still there.
    let o = rig::cmd(
        &pki,
        &format!("{},https://127.0.0.1:1", etcd.url),
        &s3,
        "missing",
    )
    .arg("doctor")
    .output()
    .await
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("fail    etcd https://127.0.0.1:1"), "{out}");
    assert!(out.contains("fail    bucket"), "{out}");
    assert!(out.contains("2 of the checks failed"), "{out}");
    assert!(out.contains("ok      scratch space"), "{out}");
}

#[tokio::test]
async fn a_locked_bucket_keeps_what_retention_would_delete_and_list_shows_until_when() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    s3.create_locked_bucket("locked", 1).await;
    etcd.load(20).await;
    // Two backups a second apart, then prune as if both were old: the lock wins.
    for at in [0, 1] {
        rig::run(
            rig::backup_cmd(&pki, &etcd.url, &s3, "locked").args(["--now", &rig::later(at)]),
            0,
        )
        .await;
    }
    let o = rig::cmd(&pki, &etcd.url, &s3, "locked")
        .env("BACKUP_KEEP_LAST", "1")
        .env("BACKUP_RETENTION", "1s")
        .args(["prune", "--now", &rig::later(3)])
        .output()
        .await
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("keep   ") && out.contains("locked until"),
        "{out}"
    );
    assert!(!out.contains("delete "), "{out}");
    assert_eq!(s3.backups("locked").await.len(), 2);

    let o = rig::cmd(&pki, &etcd.url, &s3, "locked")
        .args(["list"])
        .output()
        .await
        .unwrap();
    let out = text(&o);
    assert!(out.contains("LOCKED UNTIL"), "{out}");
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(out.matches(&tomorrow).count(), 2, "{out}");

    let o = rig::cmd(&pki, &etcd.url, &s3, "locked")
        .args(["doctor"])
        .output()
        .await
        .unwrap();
    let out = text(&o);
    assert!(out.contains("ok      object lock"), "{out}");
    assert!(out.contains("1 days in GOVERNANCE mode"), "{out}");
    assert!(out.contains("warn    bucket versioning"), "{out}");
}
