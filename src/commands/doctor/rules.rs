//! The pure verdicts of `doctor`: what was found, judged, with what to do. Tested with tables.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::etcd;
use crate::sign::{SigningKey, VerifyKeys};
use crate::store::bucket::{LifecycleRule, Versioning};

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

pub fn finding(check: impl Into<String>, level: Level, detail: impl Into<String>) -> Finding {
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
            format!("manifests and the stream's history signed by {} (set BACKUP_VERIFY_KEY to its .pub where you restore)", k.fingerprint()),
        ),
        (Some(k), Some(v)) if v.contains(k.public()) => finding(
            check,
            Level::Ok,
            format!("manifests and the stream's history signed by {}, one of BACKUP_VERIFY_KEY", k.fingerprint()),
        ),
        (Some(k), Some(_)) => finding(
            check,
            Level::Fail,
            format!("BACKUP_SIGNING_KEY_FILE is {}, which is not one of BACKUP_VERIFY_KEY: restores would refuse every backup; set BACKUP_VERIFY_KEY to the key's .pub", k.fingerprint()),
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
