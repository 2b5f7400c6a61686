//! `etcd-backup stream` against a real etcd and S3: every revision from the base on is in the
//! bucket exactly once, in order, across a SIGSTOP and a SIGKILL with bursts meanwhile; a
//! stream away past a compaction ends its generation with the reason and starts another.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_backup::stream::names::{Name, DIR};
use etcd_backup::stream::records::{BaseRecord, EndRecord, StartRecord};
use etcd_backup::stream::segment::{Kind, Record};
use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::rig::{self, Etcd, Pki, S3};
use super::start;

/// A running `stream`, its log collected as it is written.
pub(super) struct Streaming {
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
}

impl Streaming {
    fn spawn(pki: &Pki, etcd: &Etcd, s3: &S3) -> Streaming {
        Streaming::spawn_with(rig::cmd(pki, &etcd.url, s3, "backups"))
    }

    pub(super) fn spawn_with(mut c: tokio::process::Command) -> Streaming {
        use tokio::io::AsyncBufReadExt;
        c.arg("stream")
            .env("BACKUP_SEGMENT_INTERVAL", "1s")
            .env("BACKUP_COMPRESSION", "zstd")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Streaming { child, log }
    }

    pub(super) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` `times` times.
    pub(super) async fn until(&self, needle: &str, times: usize) {
        for _ in 0..600 {
            if self.log().matches(needle).count() >= times {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {needle:?} x{times} within 60 s:\n{}", self.log());
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id().unwrap() as i32, sig) };
    }

    /// SIGTERM, and the exit code and how long the exit took.
    pub(super) async fn stop(mut self) -> (Option<i32>, Duration, String) {
        let t = std::time::Instant::now();
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), t.elapsed(), self.log())
    }
}

/// The stream objects in the bucket, by name.
async fn stream_objects(s3: &S3) -> Vec<(Name, String)> {
    let prefix = format!("etcd/{DIR}");
    let mut v: Vec<_> = s3
        .list("backups")
        .await
        .into_iter()
        .filter_map(|k| Some((Name::parse(k.strip_prefix(&prefix)?)?, k)))
        .collect();
    v.sort();
    v
}

/// The newest revision in a segment in the bucket.
async fn safe(s3: &S3) -> i64 {
    stream_objects(s3)
        .await
        .iter()
        .filter_map(|(n, _)| match n {
            Name::Segment { last, .. } => Some(*last),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

pub(super) async fn until_safe(s3: &S3, revision: i64, s: &Streaming) {
    for _ in 0..600 {
        if safe(s3).await >= revision {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "revision {revision} not in the bucket within 60 s:\n{}",
        s.log()
    );
}

/// One generation as the bucket holds it: its start record, its segments' records in order
/// (checking the chain of hashes on the way), and its end record if it ended.
struct Read {
    start: StartRecord,
    revisions: Vec<etcd_backup::stream::segment::Revision>,
    leases: BTreeMap<i64, i64>,
    end: Option<EndRecord>,
    segments: usize,
}

async fn read_generation(s3: &S3, objects: &[(Name, String)], g: Name) -> Read {
    let g = g.generation();
    let mut start = None;
    let mut end = None;
    let mut revisions = Vec::new();
    let mut leases = BTreeMap::new();
    let mut previous: Option<String> = None;
    let mut segments = 0;
    for (name, key) in objects.iter().filter(|(n, _)| n.generation() == g) {
        let (bytes, _) = s3.get("backups", key).await;
        match name {
            Name::Start(_) => start = Some(serde_json::from_slice::<StartRecord>(&bytes).unwrap()),
            Name::End(_) => end = Some(serde_json::from_slice(&bytes).unwrap()),
            Name::Base { .. } | Name::Trimmed { .. } => {}
            Name::Segment { first, last, .. } => {
                let start: &StartRecord = start.as_ref().expect("start record sorts first");
                let mut r = etcd_backup::stream::seal::open(&bytes[..], None).unwrap();
                let h = r.header().clone();
                assert_eq!((h.first, h.last), (*first, *last), "{key}");
                let want = previous
                    .clone()
                    .unwrap_or_else(|| format!("base:{}", start.base_revision));
                assert_eq!(h.previous, want, "{key} chains to the segment before it");
                while let Some(rec) = r.next_record().unwrap() {
                    match rec {
                        Record::Revision(rev) => revisions.push(rev),
                        Record::Lease { id, ttl } => {
                            leases.insert(id, ttl);
                        }
                    }
                }
                previous = Some(hex(&Sha256::digest(&bytes)));
                segments += 1;
            }
        }
    }
    Read {
        start: start.expect("a start record"),
        revisions,
        leases,
        end,
        segments,
    }
}

/// GET /metrics of a stream on the loopback port.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// Puts `key` and returns the revision etcd gave the write.
async fn put_revision(kv: &mut etcd_client::KvClient, key: &str, value: &str) -> i64 {
    kv.put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Waits until the bucket holds `newest`, stops the stream (exit 0), and reads the one
/// generation the bucket holds, checking that it has every revision from its base to `newest`.
async fn one_generation_to(s3: &S3, newest: i64, stream: Streaming) -> Read {
    until_safe(s3, newest, &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let g = the_generation(s3, &log).await;
    assert_continuous(&g.revisions, g.start.base_revision + 1, newest);
    g
}

/// The bucket's one generation, read (`log` is shown when there is not exactly one).
async fn the_generation(s3: &S3, log: &str) -> Read {
    let objects = stream_objects(s3).await;
    let starts: Vec<Name> = objects
        .iter()
        .filter(|(n, _)| matches!(n, Name::Start(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(starts.len(), 1, "one generation: {objects:?}\n{log}");
    read_generation(s3, &objects, starts[0]).await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every revision from `from` to `to` exactly once, in order.
fn assert_continuous(revs: &[etcd_backup::stream::segment::Revision], from: i64, to: i64) {
    let got: Vec<i64> = revs.iter().map(|r| r.revision).collect();
    let want: Vec<i64> = (from..=to).collect();
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(10).collect();
        panic!(
            "revisions {from}..={to}: {} received, first missing {missing:?}",
            got.len()
        );
    }
}

/// What [`churn`] wrote that the checks need.
pub(super) struct Churned {
    big: Vec<u8>,
    kept: i64,
    short: i64,
    revoked: i64,
}

/// The write mix a stream must follow: puts, an overwrite, a delete and a re-create, a
/// three-operation transaction, a DeleteRange of 200 keys in one revision, a value near etcd's
/// request limit, and leases kept, expired (2 s) and revoked.
/// Waits until the 2 s lease of [`churn`]'s `/short` has expired and etcd has deleted the key.
pub(super) async fn short_lease_expired(kv: &etcd_client::KvClient) {
    let mut kv = kv.clone();
    for _ in 0..300 {
        if kv.get("/short", None).await.unwrap().kvs().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the 2 s lease of /short did not expire within 30 s");
}

pub(super) async fn churn(client: &etcd_client::Client) -> Churned {
    let mut kv = client.kv_client();
    let mut lease = client.lease_client();
    // Puts, an overwrite, a delete and a re-create.
    kv.put("/a", "1", None).await.unwrap();
    kv.put("/a", "2", None).await.unwrap();
    kv.delete("/a", None).await.unwrap();
    kv.put("/a", "3", None).await.unwrap();
    // One transaction, three keys, one revision.
    kv.put("/t0", "z", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::version("/a", CompareOp::Greater, 0)])
        .and_then([
            TxnOp::put("/t1", "x", None),
            TxnOp::put("/t2", "y", None),
            TxnOp::delete("/t0", None),
        ]);
    kv.txn(txn).await.unwrap();
    // 200 keys deleted in one revision.
    for i in 0..200 {
        kv.put(format!("/range/{i:03}"), "v", None).await.unwrap();
    }
    let deleted = kv
        .delete("/range/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 200);
    // A value near etcd's request limit.
    let big: Vec<u8> = (0..1_400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    kv.put("/big", big.clone(), None).await.unwrap();
    // Leases: one kept, one that expires, one revoked.
    let kept = lease.grant(600, None).await.unwrap().id();
    kv.put("/leased", "l", Some(PutOptions::new().with_lease(kept)))
        .await
        .unwrap();
    let short = lease.grant(2, None).await.unwrap().id();
    kv.put("/short", "s", Some(PutOptions::new().with_lease(short)))
        .await
        .unwrap();
    let revoked = lease.grant(600, None).await.unwrap().id();
    kv.put("/revoked", "r", Some(PutOptions::new().with_lease(revoked)))
        .await
        .unwrap();
    lease.revoke(revoked).await.unwrap();
    Churned {
        big,
        kept,
        short,
        revoked,
    }
}

/// The generation's events against etcd: the last event of each key is its state now, and
/// the revisions of the churn are there as etcd made them.
async fn assert_matches_etcd(g: &Read, client: &etcd_client::Client, c: &Churned) {
    let mut kv = client.kv_client();
    // The events are etcd's: the last event of each key is the key's state now.
    let mut state: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for rev in &g.revisions {
        for e in &rev.events {
            let v = (e.kind == Kind::Put).then(|| e.kv.value.clone());
            state.insert(e.kv.key.clone(), v);
        }
    }
    for (key, value) in &state {
        let now = kv.get(key.clone(), None).await.unwrap();
        let now = now.kvs().first().map(|kv| kv.value().to_vec());
        assert_eq!(&now, value, "{}", String::from_utf8_lossy(key));
    }
    assert_eq!(state[&b"/big".to_vec()], Some(c.big.clone()));
    assert_eq!(state[&b"/a".to_vec()], Some(b"3".to_vec()));
    assert_eq!(state[&b"/short".to_vec()], None, "expired with its lease");
    assert_eq!(state[&b"/revoked".to_vec()], None, "deleted with its lease");
    let range = g
        .revisions
        .iter()
        .find(|r| r.events.len() == 200)
        .expect("the DeleteRange as one revision");
    assert!(range.events.iter().all(|e| e.kind == Kind::Delete));
    let txn = g
        .revisions
        .iter()
        .find(|r| r.events.iter().any(|e| e.kv.key == b"/t1"))
        .unwrap();
    assert_eq!(txn.events.len(), 3);
    // Each lease a key was put with, with the TTL it was granted.
    assert_eq!(g.leases.get(&c.kept), Some(&600));
    assert_eq!(g.leases.get(&c.short), Some(&2));
    assert!(g.leases.contains_key(&c.revoked));
}

#[tokio::test]
async fn every_revision_is_in_the_bucket_once_across_sigstop_sigkill_and_bursts() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(50).await;
    let mut kv = etcd.client().kv_client();
    let first = Streaming::spawn(&pki, &etcd, &s3);
    first.until("watching", 1).await;

    let churned = churn(etcd.client()).await;
    first.until("segment uploaded", 2).await;

    // Stopped (SIGSTOP) through a burst of more than 1,000 revisions: on SIGCONT the watch
    // catches up from what etcd buffered or replays.
    first.signal(libc::SIGSTOP);
    let mut stopped_burst = 0;
    for i in 0..1100 {
        let r = kv
            .put(format!("/stopped/{}", i % 300), format!("{i}"), None)
            .await
            .unwrap();
        stopped_burst = r.header().unwrap().revision();
    }
    first.signal(libc::SIGCONT);
    until_safe(&s3, stopped_burst, &first).await;

    // Killed mid-stream; a burst of more than 1,000 revisions while it is down.
    first.signal(libc::SIGKILL);
    drop(first);
    for i in 0..1100 {
        kv.put(format!("/burst/{}", i % 300), format!("{i}"), None)
            .await
            .unwrap();
    }
    // The short lease expires: its key's delete is one more revision.
    short_lease_expired(&kv).await;
    let port = rig::free_port();
    let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
    c.env("BACKUP_METRICS_LISTEN", format!("127.0.0.1:{port}"));
    let second = Streaming::spawn_with(c);
    second.until("continuing the generation", 1).await;
    // The killed stream's lock is of this host and its process is gone: taken at once, not
    // waited out.
    assert!(
        !second.log().contains("another stream ("),
        "{}",
        second.log()
    );
    kv.put("/after", "restart", None).await.unwrap();
    let newest = kv
        .get("/after", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    until_safe(&s3, newest, &second).await;
    // What the bucket holds, /metrics says (the figures change before the upload's log line).
    second.until(&format!("{newest}.seg.zst"), 1).await;
    let metrics = scrape(port).await;
    assert!(
        metrics.contains(&format!("\netcd_backup_stream_safe_revision {newest}\n")),
        "{metrics}"
    );
    let (code, took, log) = second.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{log}");

    let g = the_generation(&s3, &log).await;
    assert!(g.end.is_none());
    // The restorable window starts at the generation's base, when its base was published.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("etcd_backup_stream_{name} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        gauge("restorable_oldest_revision"),
        g.start.base_revision as f64
    );
    let base_at = g
        .start
        .completed
        .expect("a completed time")
        .timestamp_millis() as f64
        / 1000.0;
    assert_eq!(gauge("restorable_oldest_timestamp_seconds"), base_at);
    assert!(gauge("restorable_window_seconds") > 0.0, "{metrics}");
    assert_eq!(gauge("pitr_window_seconds"), 7.0 * 86_400.0);
    assert!(g.segments >= 3, "{}", g.segments);
    assert_continuous(&g.revisions, g.start.base_revision + 1, newest);
    // The base backup the start record names is in the bucket.
    assert!(s3
        .backups("backups")
        .await
        .contains(&format!("etcd/{}", g.start.base)));

    assert_matches_etcd(&g, etcd.client(), &churned).await;
}

#[tokio::test]
async fn a_stream_away_past_a_compaction_ends_its_generation_and_starts_another() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(20).await;
    let mut kv = etcd.client().kv_client();
    let first = Streaming::spawn(&pki, &etcd, &s3);
    first.until("watching", 1).await;
    kv.put("/before", "1", None).await.unwrap();
    first.until("segment uploaded", 1).await;
    let (code, _, log) = first.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let stopped_at = safe(&s3).await;
    // While it is away: writes, then a compaction past where it stopped, as the API server's.
    for i in 0..20 {
        kv.put(format!("/away/{i}"), "x", None).await.unwrap();
    }
    let rev = kv
        .get("/away/19", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(rev, None).await.unwrap();

    let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
    c.env("BACKUP_BASE_INTERVAL", "10s");
    let second = Streaming::spawn_with(c);
    second.until("watching", 2).await;
    kv.put("/after", "2", None).await.unwrap();
    // A base inside the new generation, beside the watch.
    second.until("a new base of the generation", 1).await;
    let first_after = kv
        .get("/after", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    until_safe(&s3, first_after, &second).await;
    // One more segment, so that losing the first below leaves a gap before the last.
    let newest = put_revision(&mut kv, "/after", "3").await;
    until_safe(&s3, newest, &second).await;
    let (code, _, log) = second.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("the generation ended: compacted"), "{log}");

    let objects = stream_objects(&s3).await;
    let starts: Vec<Name> = objects
        .iter()
        .filter(|(n, _)| matches!(n, Name::Start(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(starts.len(), 2, "{objects:?}");
    let old = read_generation(&s3, &objects, starts[0]).await;
    let end = old.end.expect("the first generation ended");
    assert!(end.reason.contains("compacted"), "{}", end.reason);
    assert_eq!(end.last, stopped_at);
    assert_continuous(&old.revisions, old.start.base_revision + 1, stopped_at);
    let new = read_generation(&s3, &objects, starts[1]).await;
    assert!(new.end.is_none());
    assert!(
        new.start.base_revision >= rev,
        "the new base holds what was compacted"
    );
    assert_continuous(&new.revisions, new.start.base_revision + 1, newest);
    // The base taken inside the generation is named by its revision and in the bucket.
    let later: Vec<_> = objects
        .iter()
        .filter_map(|(n, k)| match n {
            Name::Base {
                generation,
                revision,
            } if *generation == starts[1].generation() => Some((*revision, k.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(later.len(), 1, "{objects:?}");
    let (revision, key) = &later[0];
    assert!((new.start.base_revision..=newest).contains(revision));
    let (body, _) = s3.get("backups", key).await;
    let record: BaseRecord = serde_json::from_slice(&body).unwrap();
    assert_eq!(record.revision, *revision);
    assert!(s3
        .backups("backups")
        .await
        .contains(&format!("etcd/{}", record.base)));

    // What list --generations and check --max-lag make of it.
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups").args(["list", "--generations", "-o", "json"]),
        0,
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0]["ended"].as_str().unwrap().starts_with("compacted"));
    assert_eq!(rows[0]["last_revision"], stopped_at);
    assert!(rows[1]["ended"].is_null());
    assert_eq!(rows[1]["last_revision"], newest);
    assert_eq!(rows[1]["bases"][0], *revision);
    let check = || {
        let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
        c.args(["check", "--max-lag", "1h"]);
        c
    };
    let o = rig::run(check(), 0).await;
    assert!(
        crate::cli::text(&o).contains("ok: generation"),
        "{}",
        crate::cli::text(&o)
    );
    // A segment lost from the bucket is a gap, which check and list report.
    let (_, lost) = objects
        .iter()
        .find(|(n, _)| {
            matches!(n, Name::Segment { generation, .. } if *generation == starts[1].generation())
        })
        .unwrap();
    s3.client("backups")
        .delete(&lost.as_str().into())
        .await
        .unwrap();
    let o = rig::run(check(), 1).await;
    assert!(
        crate::cli::text(&o).contains("gap"),
        "{}",
        crate::cli::text(&o)
    );
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups").args(["list", "--generations"]),
        0,
    )
    .await;
    assert!(
        crate::cli::text(&o).contains("gap "),
        "{}",
        crate::cli::text(&o)
    );

    // Eight days on, with BACKUP_PITR_WINDOW 7d: the ended generation goes whole, the open one
    // is trimmed to its later base (the lost segment was before it, so no gap is left), and
    // that base is kept although BACKUP_RETENTION and BACKUP_KEEP_LAST would delete it.
    rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups").args(["--now", &rig::later(60)]),
        0,
    )
    .await;
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_RETENTION", "1d")
            .env("BACKUP_KEEP_LAST", "1")
            .args(["prune", "-o", "json", "--now", &rig::later(8 * 86_400)]),
        0,
    )
    .await;
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let of = |key: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == key)
            .unwrap_or_else(|| panic!("{key} not in {plan}"))
            .clone()
    };
    let kept = of(&record.base);
    assert_eq!(kept["keep"], true, "{kept}");
    assert!(
        kept["reason"]
            .as_str()
            .unwrap()
            .contains("inside BACKUP_PITR_WINDOW"),
        "{kept}"
    );
    assert_eq!(of(&old.start.base)["deleted"], true);
    assert_eq!(of(&new.start.base)["deleted"], true);
    let rows = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups").args(["list", "--generations", "-o", "json"]),
        0,
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "the ended generation is gone: {rows:?}");
    assert_eq!(rows[0]["continuity"][0]["kind"], "ok", "{rows:?}");
    assert_eq!(rows[0]["continuity"][0]["first"], *revision + 1, "{rows:?}");
    assert_eq!(rows[0]["last_revision"], newest);
    let left = stream_objects(&s3).await;
    assert!(left.iter().all(|(n, _)| match n {
        Name::Segment { last, .. } => last > revision,
        _ => true,
    }));
}

#[tokio::test]
async fn etcd_3_4_is_followed_revision_by_revision() {
    require_docker!();
    let pki = Pki::new();
    let (etcd, s3) = tokio::join!(super::start_etcd_3_4(&pki), S3::start());
    s3.create_bucket("backups").await;
    let client = rig::connect(&pki, &etcd.url).await;
    let stream = Streaming::spawn_with(rig::cmd(&pki, &etcd.url, &s3, "backups"));
    stream.until("watching", 1).await;
    let churned = churn(&client).await;
    let mut kv = client.kv_client();
    short_lease_expired(&kv).await;
    kv.put("/after", "3.4", None).await.unwrap();
    let newest = kv
        .get("/after", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let g = one_generation_to(&s3, newest, stream).await;
    assert_matches_etcd(&g, &client, &churned).await;
}

#[tokio::test]
async fn a_bucket_away_for_30_seconds_costs_no_revision() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let (proxy, down) = super::proxy::switchable(rig::port(&s3.endpoint)).await;
    let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
    // One retry inside the S3 client, so that the stream's own retries show in its log.
    c.env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", proxy.port),
    )
    .env("BACKUP_RETRIES", "1");
    let stream = Streaming::spawn_with(c);
    stream.until("watching", 1).await;
    let mut kv = etcd.client().kv_client();
    kv.put("/before", "1", None).await.unwrap();
    stream.until("segment uploaded", 1).await;
    down.send_replace(true);
    // 30 s of writes while the bucket is away: the watch goes on into the spool.
    let away = std::time::Instant::now();
    let mut i = 0;
    while away.elapsed() < Duration::from_secs(30) {
        kv.put(format!("/away/{}", i % 50), format!("{i}"), None)
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stream.log().contains("(the watch goes on into the spool)"),
        "{}",
        stream.log()
    );
    down.send_replace(false);
    let newest = put_revision(&mut kv, "/back", "1").await;
    // No new generation: the one there goes on.
    let g = one_generation_to(&s3, newest, stream).await;
    assert!(g.end.is_none());
    assert!(i > 200, "{i} writes while away");
}

#[tokio::test]
async fn the_watch_fails_over_when_its_member_stops() {
    require_docker!();
    let pki = Pki::new();
    let net = format!("stream-failover-{}", std::process::id());
    let (members, s3) = tokio::join!(Etcd::start_cluster(&pki, &net), S3::start());
    s3.create_bucket("backups").await;
    let endpoints: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
    let stream = Streaming::spawn_with(rig::cmd(&pki, &endpoints.join(","), &s3, "backups"));
    stream.until("watching", 1).await;
    // The member it watches, from its log line.
    let log = stream.log();
    let watched = members
        .iter()
        .position(|m| {
            log.lines()
                .any(|l| l.contains("watching") && l.contains(&m.url))
        })
        .expect("the watched endpoint is logged");
    let other = (watched + 1) % 3;
    let mut kv = members[other].client().kv_client();
    for i in 0..50 {
        kv.put(format!("/before/{i}"), "x", None).await.unwrap();
    }
    stream.until("segment uploaded", 1).await;
    members[watched].stop().await;
    for i in 0..50 {
        kv.put(format!("/after/{i}"), "y", None).await.unwrap();
    }
    stream.until("watching", 2).await;
    let newest = put_revision(&mut kv, "/last", "z").await;
    one_generation_to(&s3, newest, stream).await;
}

#[tokio::test]
async fn a_second_stream_waits_for_the_first_then_continues_its_generation() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let mut kv = etcd.client().kv_client();
    let first = Streaming::spawn(&pki, &etcd, &s3);
    first.until("watching", 1).await;
    let second = Streaming::spawn(&pki, &etcd, &s3);
    second.until("another stream (", 1).await;
    for i in 0..20 {
        kv.put(format!("/one/{i}"), "x", None).await.unwrap();
    }
    first.until("segment uploaded", 1).await;
    assert!(!second.log().contains("watching"), "{}", second.log());
    // The first stops and lets go; the second continues where it left off.
    let (code, _, log) = first.stop().await;
    assert_eq!(code, Some(0), "{log}");
    second.until("continuing the generation", 1).await;
    let newest = put_revision(&mut kv, "/two", "y").await;
    one_generation_to(&s3, newest, second).await;
    // The lock went with the second stream too.
    assert!(!s3
        .list("backups")
        .await
        .iter()
        .any(|k| k.ends_with("stream/lock.json")));
}

/// etcd before its fix #18274 (3.5.1 here) removes the tombstone of a delete it compacts at,
/// so the base's newest key is older than the compaction: the stream must open its watch after
/// the compaction, not after that key.
#[tokio::test]
async fn a_compaction_at_a_delete_before_the_stream_starts_does_not_end_its_generation() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let mut kv = etcd.client().kv_client();
    kv.put("/kept", "k", None).await.unwrap();
    kv.put("/gone", "g", None).await.unwrap();
    let deleted = kv.delete("/gone", None).await.unwrap();
    let at = deleted.header().unwrap().revision();
    kv.compact(
        at,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let stream = Streaming::spawn(&pki, &etcd, &s3);
    stream.until("watching", 1).await;
    let after = kv.put("/after", "a", None).await.unwrap();
    until_safe(&s3, after.header().unwrap().revision(), &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("the generation ended"), "{log}");
    let starts: Vec<Name> = stream_objects(&s3)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| matches!(n, Name::Start(_) | Name::End(_)))
        .collect();
    assert!(
        matches!(starts[..], [Name::Start(_)]),
        "one generation, not ended: {starts:?}"
    );
    let body = s3
        .get("backups", &format!("etcd/{DIR}{}", starts[0]))
        .await
        .0;
    let start: StartRecord = serde_json::from_slice(&body).unwrap();
    assert_eq!(start.base_revision, at, "the base opens at the compaction");
}

/// The Kubernetes case: etcd compacted every second to the revision of a second before, while
/// a base paced to 1 MiB/s takes several seconds. The watch opened before the base keeps what
/// the compactions would take from a watch opened after it: one generation, every revision.
#[tokio::test]
async fn a_base_slower_than_the_compaction_interval_keeps_its_generation() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    etcd.load(3000).await;
    let client = etcd.client().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writes and compactions, as an API server does them, until the test ends.
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut kv = client.kv_client();
            let mut seen = std::collections::VecDeque::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = kv
                    .put(format!("/load/{}", i % 50), "v", None)
                    .await
                    .unwrap();
                seen.push_back((std::time::Instant::now(), r.header().unwrap().revision()));
                i += 1;
                if i % 20 == 0 {
                    // Compact to the revision of a second ago.
                    while seen.len() > 1 && seen[1].0.elapsed() > Duration::from_secs(1) {
                        seen.pop_front();
                    }
                    if let Some(&(t, rev)) = seen.front() {
                        if t.elapsed() > Duration::from_secs(1) {
                            kv.compact(rev, None).await.unwrap();
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
    c.env("ETCD_SNAPSHOT_RATE", "1MiB")
        .env("ETCD_SNAPSHOT_PACING", "off");
    let stream = Streaming::spawn_with(c);
    stream.until("the watch opened before the base", 1).await;
    stream.until("watching", 1).await;
    let mut kv = client.kv_client();
    let newest = put_revision(&mut kv, "/after", "base").await;
    until_safe(&s3, newest, &stream).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let puts = load.await.unwrap();
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(puts > 100, "{puts} puts during the test");
    assert!(!log.contains("the generation ended"), "{log}");
    let g = the_generation(&s3, &log).await;
    assert!(g.end.is_none());
    // The load went on until the stream stopped: every revision up to its last.
    let last = g.revisions.last().map_or(0, |r| r.revision);
    assert!(last >= newest, "{last} < {newest}");
    assert_continuous(&g.revisions, g.start.base_revision + 1, last);
    // The base took longer than the compaction interval: the revision after it was compacted
    // before the base was done, so only the early watch could hold it.
    let took = log
        .lines()
        .find(|l| l.contains("base published"))
        .and_then(|l| l.split("stream_s=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse::<f64>().ok())
        .expect("the base's stream time in the log");
    assert!(took > 3.0, "the base took {took} s\n{log}");
}

/// A DeleteRange of 100,000 keys is one revision whose events (about 5 MiB) etcd sends in
/// fragments of its request limit: the stream puts them back together as that one revision.
#[tokio::test]
async fn a_revision_etcd_sends_in_fragments_is_one_revision() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let mut kv = etcd.client().kv_client();
    let stream = Streaming::spawn(&pki, &etcd, &s3);
    stream.until("watching", 1).await;
    let n = 100_000;
    for chunk in (0..n).collect::<Vec<u32>>().chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| {
                TxnOp::put(
                    format!("/registry/fragmented/namespace-one/{i:06}"),
                    "",
                    None,
                )
            })
            .collect();
        kv.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    let deleted = kv
        .delete(
            "/registry/fragmented/",
            Some(DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), i64::from(n));
    let revision = deleted.header().unwrap().revision();
    until_safe(&s3, revision, &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let objects = stream_objects(&s3).await;
    let start = objects
        .iter()
        .find(|(n, _)| matches!(n, Name::Start(_)))
        .unwrap()
        .0;
    let g = read_generation(&s3, &objects, start).await;
    let r = g
        .revisions
        .iter()
        .find(|r| r.revision == revision)
        .expect("the DeleteRange's revision");
    assert_eq!(r.events.len(), n as usize);
    assert!(r.events.iter().all(|e| e.kind == Kind::Delete));
    let bytes: usize = r.events.iter().map(|e| e.kv.encode().len()).sum();
    assert!(bytes > 4 << 20, "the events exceed 4 MiB: {bytes}");
}

/// Two streams started at the same instant: SeaweedFS does conditional writes, so exactly one
/// takes the lock (no write-wait-read-back) and the other waits.
#[tokio::test]
async fn of_two_streams_started_at_once_exactly_one_writes() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let (one, two) = (
        Streaming::spawn(&pki, &etcd, &s3),
        Streaming::spawn(&pki, &etcd, &s3),
    );
    let writes = "this stream writes to the prefix";
    for _ in 0..300 {
        if one.log().contains(writes) || two.log().contains(writes) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (writer, waiter) = if one.log().contains(writes) {
        (one, two)
    } else {
        (two, one)
    };
    writer.until(writes, 1).await;
    waiter.until("another stream (", 1).await;
    writer.until("watching", 1).await;
    let mut kv = etcd.client().kv_client();
    let newest = put_revision(&mut kv, "/both", "started").await;
    until_safe(&s3, newest, &writer).await;
    assert!(!waiter.log().contains(writes), "{}", waiter.log());
    assert!(
        !writer.log().contains("written and read back"),
        "{}",
        writer.log()
    );
    let (code, _, log) = writer.stop().await;
    assert_eq!(code, Some(0), "{log}");
    drop(waiter);
}
