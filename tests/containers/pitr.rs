//! Point-in-time restore against a real etcd, the real stream and S3: for revisions chosen at
//! random, recorded from etcd before anything compacts them (every member's HashKV and a full
//! dump), the database `restore --to-revision` writes offline has the same HashKV, the same
//! keys with the same revisions and leases, `etcdctl snapshot status` reports the revision, and
//! etcd restored from it (bumped, compacted) serves those keys and refuses an older watch.
//! `get --at`, `history`, `diff` and `--to-time` are checked against the same records.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use etcd_backup::snapshot::hashkv::{self, parse_key};
use etcd_backup::stream::kv::KeyValue;
use etcd_client::{DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

use super::rig::{self, Pki, S3};
use super::stream::{churn, until_safe, Streaming};
use crate::common::tools_dir;

/// A key's state as etcd reports it: value, create and mod revision, version, lease.
type State = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64, i64)>;

/// What etcd said about one revision before anything could compact it.
struct Oracle {
    revision: i64,
    hash: u32,
    compact: i64,
    dump: State,
}

/// Every key at `rev`, paged (one response is capped at 4 MiB).
async fn dump_at(client: &etcd_client::Client, rev: i64) -> State {
    let mut kv = client.kv_client();
    let (mut from, mut out) = (vec![0u8], State::new());
    loop {
        let opts = GetOptions::new()
            .with_from_key()
            .with_limit(100)
            .with_revision(rev);
        let r = kv.get(from.clone(), Some(opts)).await.unwrap();
        for k in r.kvs() {
            out.insert(
                k.key().to_vec(),
                (
                    k.value().to_vec(),
                    k.create_revision(),
                    k.mod_revision(),
                    k.version(),
                    k.lease(),
                ),
            );
        }
        match r.kvs().last() {
            Some(last) if r.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return out,
        }
    }
}

/// The state of every key in a rebuilt file: its `key` bucket replayed, tombstones deleting.
fn dump_file(path: &Path) -> State {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() - 32;
    let mut db = etcd_backup::snapshot::bbolt::Db::open(&file, len).unwrap();
    let mut out = State::new();
    db.scan(b"key", b"", &mut |k, v| {
        let (_, tomb) = parse_key(k).unwrap();
        let kv = KeyValue::decode(v).unwrap();
        if tomb {
            out.remove(&kv.key);
        } else {
            out.insert(
                kv.key.clone(),
                (
                    kv.value,
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    kv.lease,
                ),
            );
        }
        Ok(())
    })
    .unwrap();
    out
}

/// A small deterministic generator: the revisions chosen differ from run to run only through
/// the seed, which a failure prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes over 40 keys: puts of 0-3000 bytes, deletes, two-put-one-delete
/// transactions, puts with a lease, prefix deletes. Returns each write's revision.
async fn workload(client: &etcd_client::Client, rng: &mut Rng, n: usize) -> Vec<i64> {
    let mut kv = client.kv_client();
    let lease = client.lease_client().grant(600, None).await.unwrap().id();
    let mut revs = Vec::new();
    for i in 0..n {
        let key = |r: &mut Rng| format!("/w/{:02}", r.below(40));
        let value = |r: &mut Rng| vec![b'a' + (i % 26) as u8; r.below(3000) as usize];
        let rev = match rng.below(10) {
            0..=4 => {
                let (k, v) = (key(rng), value(rng));
                kv.put(k, v, None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            }
            5 => {
                let (k, v) = (key(rng), value(rng));
                let o = PutOptions::new().with_lease(lease);
                kv.put(k, v, Some(o))
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            }
            6 | 7 => {
                let k = key(rng);
                kv.delete(k, None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            }
            8 => {
                let (a, b, c) = (key(rng), key(rng), key(rng));
                if a == b || b == c || a == c {
                    continue;
                }
                let txn = Txn::new().and_then([
                    TxnOp::put(a, value(rng), None),
                    TxnOp::put(b, value(rng), None),
                    TxnOp::delete(c, None),
                ]);
                kv.txn(txn).await.unwrap().header().unwrap().revision()
            }
            _ => {
                let p = format!("/w/{}", rng.below(4));
                let o = DeleteOptions::new().with_prefix();
                kv.delete(p, Some(o))
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            }
        };
        revs.push(rev);
    }
    revs
}

/// The binary with the rig's S3 settings, for the point-in-time commands.
fn pitr_cmd(pki: &Pki, url: &str, s3: &S3) -> tokio::process::Command {
    rig::cmd(pki, url, s3, "backups")
}

/// Streams while the churn and the workload run, records an oracle for `count` random
/// revisions and the one that `--to-time` must find, then stops the stream.
async fn stream_and_record(
    pki: &Pki,
    url: &str,
    s3: &S3,
    client: &etcd_client::Client,
    count: usize,
) -> (Vec<Oracle>, (chrono::DateTime<chrono::Utc>, i64)) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("pitr workload seed {seed}");
    let mut rng = Rng(seed);
    let mut c = pitr_cmd(pki, url, s3);
    c.env("BACKUP_BASE_INTERVAL", "10s");
    let stream = Streaming::spawn_with(c);
    stream.until("watching", 1).await;
    churn(client).await;
    let mut revs = workload(client, &mut rng, 150).await;
    // A pause, then a time between two revisions for --to-time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The cluster's revision, not the workload's last: a lease of the workload may expire
    // in the pause and write a revision of its own.
    let now_rev = client
        .clone()
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let at = (chrono::Utc::now(), now_rev);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Writes before and after a second base (every 10 s), so that it lies among the segments.
    revs.extend(workload(client, &mut rng, 100).await);
    stream.until("a new base of the generation", 1).await;
    revs.extend(workload(client, &mut rng, 100).await);
    let newest = *revs.last().unwrap();
    let mut chosen: Vec<i64> = (0..count)
        .map(|_| revs[rng.below(revs.len() as u64) as usize])
        .collect();
    chosen.push(newest);
    chosen.sort();
    chosen.dedup();
    let mut m = client.maintenance_client();
    let mut oracles = Vec::new();
    for x in chosen {
        let h = m.hash_kv(x).await.unwrap();
        oracles.push(Oracle {
            revision: x,
            hash: h.hash(),
            compact: h.compact_version(),
            dump: dump_at(client, x).await,
        });
    }
    until_safe(s3, newest, &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");
    (oracles, at)
}

/// `restore --to-revision` for each oracle: exit 0, then HashKV, keys and status agree.
async fn rebuild_and_prove(pki: &Pki, url: &str, s3: &S3, oracles: &[Oracle], dir: &Path) {
    for o in oracles {
        let out = dir.join(format!("{}.db", o.revision));
        let r = rig::run(
            pitr_cmd(pki, url, s3)
                .args(["restore", "--to-revision", &o.revision.to_string(), "-O"])
                .arg(&out),
            0,
        )
        .await;
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(text.contains("--bump-revision"), "{text}");
        let file = std::fs::File::open(&out).unwrap();
        let len = file.metadata().unwrap().len() - 32;
        let ours = hashkv::hash_at(&file, len, o.revision, o.compact)
            .unwrap()
            .unwrap();
        assert_eq!(
            (ours.hash, ours.revision),
            (o.hash, o.revision),
            "HashKV of the file rebuilt at {}",
            o.revision
        );
        let got = dump_file(&out);
        assert_eq!(got.len(), o.dump.len(), "keys at {}", o.revision);
        for (k, want) in &o.dump {
            assert_eq!(
                got.get(k),
                Some(want),
                "{} at {}",
                String::from_utf8_lossy(k),
                o.revision
            );
        }
        let status = std::process::Command::new(tools_dir().join("etcdctl-3.4"))
            .args(["snapshot", "status", "-w", "json"])
            .arg(&out)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        let s: serde_json::Value = serde_json::from_slice(&status.stdout)
            .unwrap_or_else(|_| panic!("{}", crate::cli::text(&status)));
        assert_eq!(s["revision"], o.revision, "etcdctl snapshot status");
    }
}

#[tokio::test]
async fn a_rebuild_at_random_revisions_is_what_etcd_held_then() {
    require_docker!();
    let (pki, etcd, s3) = super::start().await;
    etcd.load(300).await;
    let client = etcd.client();
    let (oracles, (at, at_rev)) = stream_and_record(&pki, &etcd.url, &s3, client, 20).await;
    assert!(oracles.len() >= 15, "{} revisions chosen", oracles.len());
    let dir = tempfile::tempdir().unwrap();
    rebuild_and_prove(&pki, &etcd.url, &s3, &oracles, dir.path()).await;

    // The second base was used: a late revision replays from it, not from the start.
    let list = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args(["list", "--generations", "-o", "json"]),
        0,
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        !rows[0]["bases"].as_array().unwrap().is_empty(),
        "a base inside the generation: {rows}"
    );

    // Each later base rebuilt offline from the one before it has its HashKV.
    let checked = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args(["list", "--generations", "--check", "-o", "json"]),
        0,
    )
    .await;
    let checks: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    let checks = checks.as_array().unwrap();
    assert!(!checks.is_empty(), "{}", crate::cli::text(&checked));
    assert!(
        checks
            .iter()
            .all(|c| c["verdict"] == "ok" && c["base_hash_kv"] == c["rebuilt_hash_kv"]),
        "{checks:?}"
    );

    // --to-time: the last revision received by then.
    let out = dir.path().join("time.db");
    let r = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3)
            .args(["restore", "--to-time", &at.to_rfc3339(), "-O"])
            .arg(&out),
        0,
    )
    .await;
    let status =
        etcd_backup::snapshot::verify::check_file(&mut std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(status.status.revision, at_rev, "{}", crate::cli::text(&r));

    // Etcd restored from a bumped file serves the keys as they were, continues after the
    // bump, and refuses an older watch as compacted.
    let o = &oracles[oracles.len() / 2];
    let bumped = dir.path().join("bumped.db");
    rig::run(
        pitr_cmd(&pki, &etcd.url, &s3)
            .args([
                "restore",
                "--to-revision",
                &o.revision.to_string(),
                "--bump-revision",
                "1000",
                "-O",
            ])
            .arg(&bumped),
        0,
    )
    .await;
    let volume = format!("etcd-backup-pitr-{}", std::process::id());
    let (_restored, c) = rig::etcd_from_snapshot(&std::fs::read(&bumped).unwrap(), &volume).await;
    let served = dump_at(&c, 0).await;
    assert_eq!(
        served, o.dump,
        "etcd serves the keys of revision {}",
        o.revision
    );
    let mut kv = c.kv_client();
    let rev = kv
        .put("/after", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(rev, o.revision + 1001, "the first write after the bump");
    let mut watch = c
        .watch_client()
        .watch(
            "/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(o.revision),
            ),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let refused = if first.created() && first.compact_revision() == 0 {
        tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    } else {
        first
    };
    assert!(
        refused.compact_revision() > o.revision,
        "a watch from {} is refused as compacted (compact revision {})",
        o.revision,
        refused.compact_revision()
    );
    drop(c);
    drop(_restored);
    rig::remove_volume(&volume);

    // get --at: the value as the dump has it; a key deleted by then is not found (exit 1).
    let (key, want) = o.dump.iter().find(|(k, _)| k.starts_with(b"/w/")).unwrap();
    let key = String::from_utf8(key.clone()).unwrap();
    let value_file = dir.path().join("value");
    rig::run(
        pitr_cmd(&pki, &etcd.url, &s3)
            .args(["get", &key, "--at", &o.revision.to_string(), "--value-file"])
            .arg(&value_file),
        0,
    )
    .await;
    assert_eq!(std::fs::read(&value_file).unwrap(), want.0);
    rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args(["get", "/t0", "--at", &o.revision.to_string()]),
        1,
    )
    .await;
    // A key of the preload, which no segment touches, comes from the base.
    let (pre, pre_want) = o
        .dump
        .iter()
        .find(|(k, _)| k.starts_with(b"/registry/"))
        .unwrap();
    let got = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args([
            "get",
            std::str::from_utf8(pre).unwrap(),
            "--at",
            &o.revision.to_string(),
            "-o",
            "json",
        ]),
        0,
    )
    .await;
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["found"]["mod_revision"], pre_want.2);

    // history: /a was put, put, deleted and put again.
    let h = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args(["history", "/a", "-o", "json"]),
        0,
    )
    .await;
    let h: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["put", "put", "delete", "put"]);

    // diff between the first and the middle oracle: exactly the keys whose state differs.
    let (a, b) = (&oracles[0], o);
    let d = rig::run(
        pitr_cmd(&pki, &etcd.url, &s3).args([
            "diff",
            &a.revision.to_string(),
            &b.revision.to_string(),
            "-o",
            "json",
        ]),
        0,
    )
    .await;
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let got: BTreeMap<String, String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want = BTreeMap::new();
    for k in a.dump.keys().chain(b.dump.keys()) {
        let change = match (a.dump.get(k), b.dump.get(k)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), Some(_)) => "modified",
            (None, Some(_)) => "added",
            (Some(_), None) => "deleted",
            (None, None) => unreachable!(),
        };
        want.insert(String::from_utf8(k.clone()).unwrap(), change.to_string());
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn etcd_3_4_rebuilds_match_its_hash_kv_and_keys() {
    require_docker!();
    let pki = Pki::new();
    let (etcd, s3) = tokio::join!(super::start_etcd_3_4(&pki), S3::start());
    s3.create_bucket("backups").await;
    let client = rig::connect(&pki, &etcd.url).await;
    let (oracles, _) = stream_and_record(&pki, &etcd.url, &s3, &client, 20).await;
    let dir = tempfile::tempdir().unwrap();
    rebuild_and_prove(&pki, &etcd.url, &s3, &oracles, dir.path()).await;
}

/// A Kubernetes object as the API server stores it: protobuf behind `k8s\0`, a
/// `runtime.Unknown` of TypeMeta and the object, whose field 1 is ObjectMeta.
fn k8s_object(kind: &str, namespace: &str, name: &str, deleting: bool) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, n: u8, b: &[u8]) {
        out.push(n << 3 | 2);
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    let mut meta = Vec::new();
    field(&mut meta, 1, name.as_bytes());
    if !namespace.is_empty() {
        field(&mut meta, 3, namespace.as_bytes());
    }
    field(&mut meta, 5, b"4f1c9a52-uid");
    if deleting {
        // A Timestamp{seconds}.
        field(&mut meta, 9, &[0x08, 0xd0, 0x86, 0x03]);
    }
    let mut object = Vec::new();
    field(&mut object, 1, &meta);
    let mut type_meta = Vec::new();
    field(&mut type_meta, 1, b"v1");
    field(&mut type_meta, 2, kind.as_bytes());
    let mut v = b"k8s\0".to_vec();
    field(&mut v, 1, &type_meta);
    field(&mut v, 2, &object);
    v
}

/// The README's "Restore to a point in time", step by step: `history` finds the revision at
/// which a namespace's deletion began, `get --at` recovers one object, `restore --to-revision`
/// the revision before, and etcd restored from it has the namespace and what was in it.
#[tokio::test]
async fn the_runbook_brings_back_a_deleted_namespace() {
    require_docker!();
    let (pki, etcd, s3) = super::start().await;
    let client = etcd.client();
    let stream = Streaming::spawn_with(pitr_cmd(&pki, &etcd.url, &s3));
    stream.until("watching", 1).await;
    let mut kv = client.kv_client();
    let ns = "/registry/namespaces/prod";
    let objects = [
        (ns.to_string(), k8s_object("Namespace", "", "prod", false)),
        (
            "/registry/secrets/prod/db".to_string(),
            k8s_object("Secret", "prod", "db", false),
        ),
        (
            "/registry/configmaps/prod/app".to_string(),
            br#"{"kind":"ConfigMap","metadata":{"name":"app","namespace":"prod"}}"#.to_vec(),
        ),
    ];
    for (k, v) in &objects {
        kv.put(k.as_str(), v.clone(), None).await.unwrap();
    }
    kv.put(
        "/registry/namespaces/other",
        k8s_object("Namespace", "", "other", false),
        None,
    )
    .await
    .unwrap();
    // The API server's delete: the namespace marked, its contents deleted, then it.
    let marked = kv
        .put(ns, k8s_object("Namespace", "", "prod", true), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.delete(
        "/registry/secrets/prod/",
        Some(DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    kv.delete(
        "/registry/configmaps/prod/",
        Some(DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let newest = kv
        .delete(ns, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    until_safe(&s3, newest, &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // 1. history: the put that set deletionTimestamp.
    let h = rig::run(pitr_cmd(&pki, &etcd.url, &s3).args(["history", ns]), 0).await;
    let table = String::from_utf8_lossy(&h.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("deleting"))
        .unwrap_or_else(|| panic!("no deleting row:\n{table}"));
    let at: i64 = row.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(at, marked, "{table}");
    assert!(table.lines().any(|l| l.contains(" delete ")), "{table}");
    let before = (at - 1).to_string();

    // 2. One object without a restore.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db.secret");
    rig::run(
        pitr_cmd(&pki, &etcd.url, &s3)
            .args([
                "get",
                "/registry/secrets/prod/db",
                "--at",
                &before,
                "--value-file",
            ])
            .arg(&secret),
        0,
    )
    .await;
    assert_eq!(std::fs::read(&secret).unwrap(), objects[1].1);

    // 3. The whole cluster as it was, bumped and compacted, into a real etcd.
    let out = dir.path().join("etcd-pitr.db");
    rig::run(
        pitr_cmd(&pki, &etcd.url, &s3)
            .args([
                "restore",
                "--to-revision",
                &before,
                "--bump-revision",
                "1000000",
                "-O",
            ])
            .arg(&out),
        0,
    )
    .await;
    let volume = format!("etcd-backup-runbook-{}", std::process::id());
    let (_restored, c) = rig::etcd_from_snapshot(&std::fs::read(&out).unwrap(), &volume).await;
    let served = dump_at(&c, 0).await;
    for (k, v) in &objects {
        assert_eq!(served.get(k.as_bytes()).map(|s| &s.0), Some(v), "{k}");
    }
    assert!(served.contains_key(b"/registry/namespaces/other".as_slice()));
    let header = c.kv_client().get("x", None).await.unwrap();
    assert_eq!(header.header().unwrap().revision(), at - 1 + 1_000_000);
    drop(c);
    drop(_restored);
    rig::remove_volume(&volume);
}
