//! The `doctor` command: what a first install gets wrong, checked one line at a time, each
//! with what to do. Nothing it does leaves a trace: the throwaway object and the multipart
//! upload it makes are deleted and aborted, and it pushes no metrics.
//!
//! The verdicts on what was found are pure functions ([`versioning`], [`multipart_rule`],
//! [`scratch`], [`certificate`]); the I/O that finds it sits in [`run`].

mod rules;

use std::time::Duration;

pub use rules::{
    certificate, finding, multipart_rule, scratch, signing, versioning, Finding, Level,
};

use super::{Context, Outcome, Verdict};
use crate::config::BackupConfig;
use crate::etcd::{self, Members};
use crate::store::bucket::ObjectLock;
use crate::store::Store;

/// Runs every check. Fails as a whole only on a shutdown: a check that cannot run is a finding.
pub async fn run(store: &Store, cfg: &BackupConfig, ctx: &Context) -> anyhow::Result<Vec<Finding>> {
    ctx.shutdown
        .or_interrupted(async { Ok(checks(store, cfg, ctx).await) })
        .await
}

async fn checks(store: &Store, cfg: &BackupConfig, ctx: &Context) -> Vec<Finding> {
    let now = ctx.now;
    let mut out = Vec::new();

    // etcd: each endpoint, then the largest database for the scratch check.
    let members = Members::new(&cfg.etcd);
    let mut db_size = None;
    for (endpoint, probed) in members.probe_all().await {
        let check = format!("etcd {endpoint}");
        match probed {
            Ok(m) => {
                let s = &m.status;
                db_size = db_size.max(Some(s.db_size));
                let level = if s.errors.is_empty() {
                    Level::Ok
                } else {
                    Level::Warn
                };
                let mut detail = format!(
                    "member {} (etcd {}), TLS accepted, database {} bytes",
                    s.member_id, s.version, s.db_size
                );
                if !s.errors.is_empty() {
                    detail.push_str(&format!("; reports: {}", s.errors.join("; ")));
                }
                if let Some(w) = etcd::quota_warning(s, cfg.etcd.quota) {
                    detail.push_str(&format!("; {w}"));
                }
                out.push(finding(check, level, detail));
            }
            Err(why) => out.push(finding(
                check,
                Level::Fail,
                format!("{why}; check ETCD_ENDPOINTS, ETCD_CACERT, ETCD_CERT and ETCD_KEY"),
            )),
        }
    }
    if let Some(id) = &cfg.etcd.identity {
        out.push(certificate(id.not_after, &id.cert.path, now));
    }

    // The bucket: exists and lists, then a throwaway object and a multipart upload.
    let bucket_ok = match store.check().await {
        Ok(()) => {
            out.push(finding(
                "bucket",
                Level::Ok,
                format!("{} exists and lists", store.url_prefix()),
            ));
            true
        }
        Err(e) => {
            out.push(finding("bucket", Level::Fail, e.to_string()));
            false
        }
    };
    if bucket_ok {
        out.push(match store.round_trip().await {
            Ok(()) => finding(
                "write, read back, delete",
                Level::Ok,
                "a throwaway object under the prefix was written, read back whole and deleted",
            ),
            Err(e) => finding("write, read back, delete", Level::Fail, format!("{e}; the credentials need s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the prefix")),
        });
        out.push(conditional_writes(store).await);
        out.push(match store.multipart_probe().await {
            Ok(()) => finding(
                "multipart upload",
                Level::Ok,
                "started and aborted one",
            ),
            Err(e) => finding("multipart upload", Level::Fail, format!("{e}; the credentials need s3:AbortMultipartUpload and s3:ListMultipartUploadParts as well")),
        });
        if let Some(b) = store.bucket() {
            let rules = match b.lifecycle().await {
                Ok(r) => Some(r),
                Err(e) => {
                    out.push(finding("lifecycle rules", Level::Warn, format!("{e}; check that the credentials may read the lifecycle configuration (s3:GetLifecycleConfiguration)")));
                    None
                }
            };
            match b.versioning().await {
                Ok(v) => out.push(versioning(
                    v,
                    rules.as_deref().unwrap_or_default(),
                    store.prefix(),
                )),
                Err(e) => out.push(finding("bucket versioning", Level::Warn, e.to_string())),
            }
            if let Some(r) = &rules {
                out.push(multipart_rule(r, store.prefix()));
            }
            out.push(match b.object_lock().await {
                Ok(Some(ObjectLock {
                    default_retention: Some((mode, period)),
                })) => finding("object lock", Level::Ok, format!("on: every backup is retained {period} in {mode} mode; prune keeps what is locked")),
                Ok(Some(ObjectLock { default_retention: None })) => finding("object lock", Level::Warn, "on, without a default retention: backups are not protected; set one (put-object-lock-configuration)"),
                Ok(None) => finding("object lock", Level::Ok, "off (turn it on with a default retention to make backups immutable)"),
                Err(e) => finding("object lock", Level::Warn, e.to_string()),
            });
        }
    }

    // Scratch space against the largest database that answered.
    let dir = &cfg.pipeline.tmp_dir;
    out.push(match (crate::scratch::free_space(dir), db_size) {
        (Ok(free), Some(db)) => scratch(free, crate::scratch::space_needed(db), dir),
        (Ok(free), None) => finding(
            format!("scratch space in {}", dir.display()),
            Level::Warn,
            format!("{free} bytes free; no member answered, so the database size is unknown"),
        ),
        (Err(e), _) => finding(
            format!("scratch space in {}", dir.display()),
            Level::Fail,
            format!("{e}; BACKUP_TMP_DIR must be a writable directory"),
        ),
    });

    // Encryption and the Pushgateway, when set.
    out.push(if cfg.pipeline.recipients.is_empty() {
        finding(
            "encryption",
            Level::Warn,
            "off: backups hold every Secret of the cluster in the clear; set BACKUP_AGE_RECIPIENTS",
        )
    } else {
        finding(
            "encryption",
            Level::Ok,
            format!(
                "age, to {} recipient(s); keep the identity outside the cluster",
                cfg.pipeline.recipients.len()
            ),
        )
    });
    out.push(signing(
        cfg.pipeline.signing.as_deref(),
        cfg.verify_keys.as_ref(),
    ));
    if let Some(url) = &cfg.metrics.pushgateway {
        out.push(pushgateway(url, cfg.metrics.timeout).await);
    }
    out
}

/// Exit 1 on any failure; warnings pass.
impl Outcome for Vec<Finding> {
    fn verdict(&self) -> Verdict {
        match self.iter().filter(|f| f.level == Level::Fail).count() {
            0 => Verdict::Pass,
            n => Verdict::Fail(format!(
                "{n} of the checks failed: fix the lines marked fail above"
            )),
        }
    }
}

/// The Pushgateway answers its readiness probe (nothing is pushed).
async fn pushgateway(url: &url::Url, timeout: Duration) -> Finding {
    let ready = url.join("-/ready").expect("a base URL joins");
    let client = reqwest::Client::builder().timeout(timeout).build();
    let answer = match client {
        Ok(c) => c.get(ready.clone()).send().await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    match answer {
        Ok(s) if s.is_success() => finding("pushgateway", Level::Ok, format!("{url} is ready")),
        Ok(s) => finding(
            "pushgateway",
            Level::Fail,
            format!("{ready} answered {s}; check BACKUP_PUSHGATEWAY_URL"),
        ),
        Err(e) => finding(
            "pushgateway",
            Level::Fail,
            format!(
                "{ready}: {}; check BACKUP_PUSHGATEWAY_URL",
                crate::describe(&e)
            ),
        ),
    }
}

/// Whether the store does conditional writes, which the stream's lock is taken with: a probe
/// object created only if absent, twice (the second must be refused), then deleted.
async fn conditional_writes(store: &Store) -> Finding {
    use crate::store::objects::{Condition, Conditional};
    let check = "conditional writes";
    let path = format!(".etcd-backup-doctor-lock-{}", std::process::id());
    let body = || bytes::Bytes::from_static(b"{}");
    let first = store.put_if(&path, body(), Condition::Absent).await;
    let second = match &first {
        Ok(Conditional::Written(_)) => Some(store.put_if(&path, body(), Condition::Absent).await),
        _ => None,
    };
    let _ = store.delete_object(&path).await;
    match (first, second) {
        (Ok(Conditional::Written(_)), Some(Ok(Conditional::Lost))) => finding(
            check,
            Level::Ok,
            "supported: the stream's lock is taken and renewed by conditional writes, so two streams never both hold it",
        ),
        (Err(e), _) | (_, Some(Err(e))) => finding(check, Level::Warn, format!("{e}; the stream's lock falls back to writing it, waiting 2 s and reading it back")),
        _ => finding(
            check,
            Level::Warn,
            "not supported by this store: the stream's lock falls back to writing it, waiting 2 s and reading it back (two streams whose writes land more than 2 s apart could both believe they hold it)",
        ),
    }
}
