//! The `doctor` command: what a first install gets wrong, checked one line at a time, each
//! with what to do. Nothing it does leaves a trace: the throwaway object and the multipart
//! upload it makes are deleted and aborted, and it pushes no metrics.
//!
//! The verdicts on what was found are pure functions ([`versioning`], [`multipart_rule`],
//! [`scratch`], [`certificate`]); the I/O that finds it sits in [`run`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::BackupConfig;
use crate::etcd::{self, Members};
use crate::sign::{SigningKey, VerifyKeys};
use crate::store::bucket::{LifecycleRule, ObjectLock, Versioning};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub level: Level,
    /// What was found, and for a warning or a failure, what to do.
    pub detail: String,
}

fn finding(check: impl Into<String>, level: Level, detail: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        level,
        detail: detail.into(),
    }
}

/// Versioning keeps a noncurrent version of every backup prune deletes, which costs as much
/// as the backup, unless a lifecycle rule expires noncurrent versions.
pub fn versioning(v: Versioning, rules: &[LifecycleRule], prefix: &str) -> Finding {
    let expires = rules.iter().any(|r| {
        r.enabled && r.noncurrent_expiration_days.is_some() && prefix.starts_with(&r.prefix)
    });
    match (v, expires) {
        (Versioning::Off, _) => finding("bucket versioning", Level::Ok, "off"),
        (_, true) => finding(
            "bucket versioning",
            Level::Ok,
            "on, and a lifecycle rule expires noncurrent versions",
        ),
        (Versioning::Enabled | Versioning::Suspended, false) => finding(
            "bucket versioning",
            Level::Warn,
            "on, and no lifecycle rule expires noncurrent versions: every backup prune deletes stays as a noncurrent version and keeps costing; add a NoncurrentVersionExpiration rule for the prefix",
        ),
    }
}

/// An upload that is never completed nor aborted (a killed pod) keeps its parts, invisible
/// and billed, until a lifecycle rule aborts it.
pub fn multipart_rule(rules: &[LifecycleRule], prefix: &str) -> Finding {
    match rules
        .iter()
        .find(|r| r.enabled && prefix.starts_with(&r.prefix))
        .and_then(|r| r.abort_incomplete_days)
    {
        Some(days) => finding(
            "incomplete uploads",
            Level::Ok,
            format!("a lifecycle rule aborts them after {days} days"),
        ),
        None => finding(
            "incomplete uploads",
            Level::Warn,
            "no lifecycle rule aborts incomplete multipart uploads: a backup killed mid-upload (OOM, node loss) leaves its parts billed forever; add AbortIncompleteMultipartUpload (for example after 1 day)",
        ),
    }
}

/// Free scratch space against what a backup of a database of `db_size` bytes needs.
pub fn scratch(free: u64, need: u64, dir: &std::path::Path) -> Finding {
    let check = format!("scratch space in {}", dir.display());
    if free < need {
        finding(check, Level::Fail, format!("{free} bytes free, a backup needs {need}: give BACKUP_TMP_DIR a larger volume (an emptyDir with a sizeLimit of at least twice the database)"))
    } else if free < need.saturating_mul(2) {
        finding(check, Level::Warn, format!("{free} bytes free, a backup needs {need} today: little room for the database to grow"))
    } else {
        finding(
            check,
            Level::Ok,
            format!("{free} bytes free, a backup needs {need}"),
        )
    }
}

/// The client certificate's expiry against `now`: the warning `backup` and `status` log, as a
/// failure once it has expired.
pub fn certificate(
    not_after: DateTime<Utc>,
    path: &std::path::Path,
    now: DateTime<Utc>,
) -> Finding {
    let check = "client certificate (ETCD_CERT)";
    match etcd::expiry_warning(not_after, path, now) {
        Some(w) if not_after <= now => finding(check, Level::Fail, w),
        Some(w) => finding(check, Level::Warn, w),
        None => finding(
            check,
            Level::Ok,
            format!(
                "{} is valid until {}",
                path.display(),
                not_after.format("%Y-%m-%d")
            ),
        ),
    }
}

/// Runs every check. Never fails as a whole: a check that cannot run is a finding.
pub async fn run(cfg: &BackupConfig, store: &Store, now: DateTime<Utc>) -> Vec<Finding> {
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

/// Whether backups are signed, and when both keys are set, whether the restores' keys accept
/// the job's signatures (a mismatch is found here, not at 3 a.m.).
pub fn signing(key: Option<&SigningKey>, verify: Option<&VerifyKeys>) -> Finding {
    let check = "signing";
    match (key, verify) {
        (None, None) => finding(
            check,
            Level::Warn,
            "off: anyone who can write to the bucket can plant a backup that restores; set BACKUP_SIGNING_KEY_FILE (etcd-backup keygen -f FILE) and give restores BACKUP_VERIFY_KEY",
        ),
        (None, Some(_)) => finding(
            check,
            Level::Warn,
            "BACKUP_VERIFY_KEY is set but BACKUP_SIGNING_KEY_FILE is not: this job's backups are unsigned, and restores with BACKUP_VERIFY_KEY will refuse them",
        ),
        (Some(k), None) => finding(
            check,
            Level::Ok,
            format!("manifests signed by {} (set BACKUP_VERIFY_KEY to its .pub where you restore)", k.fingerprint()),
        ),
        (Some(k), Some(v)) if v.contains(k.public()) => finding(
            check,
            Level::Ok,
            format!("manifests signed by {}, one of BACKUP_VERIFY_KEY", k.fingerprint()),
        ),
        (Some(k), Some(_)) => finding(
            check,
            Level::Fail,
            format!("BACKUP_SIGNING_KEY_FILE is {}, which is not one of BACKUP_VERIFY_KEY: restores would refuse every backup; set BACKUP_VERIFY_KEY to the key's .pub", k.fingerprint()),
        ),
    }
}

/// Some checks failed.
#[derive(Debug, thiserror::Error)]
#[error("{0} of the checks failed: fix the lines marked fail above")]
pub struct Failed(pub usize);

/// Exit 1 on any failure; warnings pass.
pub fn verdict(findings: &[Finding]) -> Result<(), Failed> {
    match findings.iter().filter(|f| f.level == Level::Fail).count() {
        0 => Ok(()),
        n => Err(Failed(n)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_fails_only_when_the_verify_keys_would_refuse_the_job_s_backups() {
        let dir = tempfile::tempdir().unwrap();
        let ours = crate::sign::keygen(&dir.path().join("ours")).unwrap();
        let theirs = crate::sign::keygen(&dir.path().join("theirs")).unwrap();
        let key = SigningKey::read(&ours.private).unwrap();
        let keys = |text: &str| VerifyKeys::parse(text).unwrap();
        let both = keys(&format!("{}\n{}", theirs.public_key, ours.public_key));
        let only_theirs = keys(&theirs.public_key);
        let cases = [
            (None, None, Level::Warn),
            (None, Some(&both), Level::Warn),
            (Some(&key), None, Level::Ok),
            (Some(&key), Some(&both), Level::Ok),
            (Some(&key), Some(&only_theirs), Level::Fail),
        ];
        for (k, v, level) in cases {
            let f = signing(k, v);
            assert_eq!(f.level, level, "{f:?}");
        }
    }

    fn rule(prefix: &str, abort: Option<u32>, noncurrent: Option<u32>) -> LifecycleRule {
        LifecycleRule {
            enabled: true,
            prefix: prefix.into(),
            abort_incomplete_days: abort,
            noncurrent_expiration_days: noncurrent,
        }
    }

    #[test]
    fn versioning_needs_a_rule_that_expires_noncurrent_versions_of_our_prefix() {
        let cases: Vec<(Versioning, Vec<LifecycleRule>, Level)> = vec![
            (Versioning::Off, vec![], Level::Ok),
            (Versioning::Enabled, vec![], Level::Warn),
            (Versioning::Suspended, vec![], Level::Warn),
            (
                Versioning::Enabled,
                vec![rule("", None, Some(30))],
                Level::Ok,
            ),
            (
                Versioning::Enabled,
                vec![rule("etcd/", None, Some(30))],
                Level::Ok,
            ),
            (
                Versioning::Enabled,
                vec![rule("other/", None, Some(30))],
                Level::Warn,
            ),
            (
                Versioning::Enabled,
                vec![rule("", Some(1), None)],
                Level::Warn,
            ),
            (
                Versioning::Enabled,
                vec![LifecycleRule {
                    enabled: false,
                    ..rule("", None, Some(30))
                }],
                Level::Warn,
            ),
        ];
        for (v, rules, want) in cases {
            assert_eq!(
                versioning(v, &rules, "etcd/").level,
                want,
                "{v:?} {rules:?}"
            );
        }
    }

    #[test]
    fn incomplete_uploads_need_an_abort_rule_over_our_prefix() {
        assert_eq!(multipart_rule(&[], "etcd/").level, Level::Warn);
        assert_eq!(
            multipart_rule(&[rule("", Some(1), None)], "etcd/").level,
            Level::Ok
        );
        assert_eq!(
            multipart_rule(&[rule("x/", Some(1), None)], "etcd/").level,
            Level::Warn
        );
    }

    #[test]
    fn scratch_and_certificate_levels() {
        let dir = std::path::Path::new("/tmp");
        assert_eq!(scratch(99, 100, dir).level, Level::Fail);
        assert_eq!(scratch(150, 100, dir).level, Level::Warn);
        assert_eq!(scratch(200, 100, dir).level, Level::Ok);
        let now = "2026-11-30T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let days = |d| now + chrono::TimeDelta::days(d);
        let c = std::path::Path::new("c");
        assert_eq!(certificate(days(-1), c, now).level, Level::Fail);
        assert_eq!(certificate(days(3), c, now).level, Level::Warn);
        assert_eq!(certificate(days(300), c, now).level, Level::Ok);
    }
}
