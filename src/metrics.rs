//! Run metrics for a Pushgateway: what a backup run reports, encoded by `prometheus-client`,
//! sent as one POST at the end of every run, success or failure.
//!
//! POST replaces only the metrics of the same names in the group (PUT would replace the whole
//! group), so a failed run, which does not send `etcd_backup_last_success_timestamp_seconds`
//! or the sizes of a published backup, leaves the last success in place: that is what makes
//! "no successful backup for N hours" an alert that a failing CronJob cannot silence. The group
//! is `job="etcd-backup"` plus `BACKUP_METRICS_LABELS`, with no `instance`: a backup is a
//! cluster-level job, whichever node ran it.
//!
//! A push that fails or is slow is a warning, bounded by `BACKUP_PUSHGATEWAY_TIMEOUT`; it never
//! fails a backup.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use url::Url;

use crate::config::MetricsConfig;

pub const JOB: &str = "etcd-backup";

/// What one run reports. Fields that are `None` are not pushed, so the Pushgateway keeps what a
/// previous run sent for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    pub finished: DateTime<Utc>,
    pub duration: Duration,
    pub success: bool,
    /// Set on success only.
    pub published: Option<Published>,
    /// The member the run used, if one was chosen.
    pub db: Option<DbSizes>,
    /// etcd's quota (ETCD_QUOTA_BACKEND_BYTES).
    pub quota: Option<u64>,
    pub client_cert_not_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub snapshot_bytes: u64,
    pub stored_bytes: u64,
    pub revision: i64,
    /// Members whose HashKV differed from the snapshot's, and members not compared.
    pub members_differing: usize,
    pub members_unchecked: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbSizes {
    pub size: u64,
    pub in_use: u64,
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Gauges, `(name, help, value)`, in the Prometheus text format. No timestamps: the
/// Pushgateway refuses pushed ones.
fn text(gauges: &[(&str, &str, f64)]) -> String {
    let mut registry = Registry::default();
    for (name, help, value) in gauges {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(*value);
        registry.register(*name, *help, g);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    // The Pushgateway reads the classic text format; OpenMetrics' closing line is a comment there
    // but is dropped to keep the body plain.
    out.trim_end_matches("# EOF\n").to_string()
}

/// The report in the Prometheus text format.
pub fn encode(report: &RunMetrics) -> String {
    let mut gauges = Vec::new();
    let mut gauge = |name, help, value| gauges.push((name, help, value));
    gauge(
        "etcd_backup_last_run_timestamp_seconds",
        "When the last backup run ended, success or not.",
        seconds(report.finished),
    );
    gauge(
        "etcd_backup_last_run_success",
        "1 if the last backup run published a verified backup, else 0.",
        if report.success { 1.0 } else { 0.0 },
    );
    gauge(
        "etcd_backup_duration_seconds",
        "How long the last backup run took.",
        report.duration.as_secs_f64(),
    );
    if let Some(p) = report.published.filter(|_| report.success) {
        gauge(
            "etcd_backup_last_success_timestamp_seconds",
            "When the last successful backup run ended.",
            seconds(report.finished),
        );
        gauge(
            "etcd_backup_snapshot_size_bytes",
            "Size of the last published snapshot, uncompressed.",
            p.snapshot_bytes as f64,
        );
        gauge(
            "etcd_backup_stored_size_bytes",
            "Size of the last published backup object.",
            p.stored_bytes as f64,
        );
        gauge(
            "etcd_backup_snapshot_revision",
            "etcd revision of the last published snapshot.",
            p.revision as f64,
        );
        gauge(
            "etcd_backup_members_diverged",
            "Members whose HashKV at the snapshot's revision differed from the published snapshot's (a diverged member: replace its data).",
            p.members_differing as f64,
        );
        gauge(
            "etcd_backup_members_unchecked",
            "Members the last published snapshot could not be compared with (see the manifest's etcd-hashkv-members for why).",
            p.members_unchecked as f64,
        );
    }
    if let Some(db) = report.db {
        gauge(
            "etcd_backup_db_size_bytes",
            "Database size of the member backed up, as it reported.",
            db.size as f64,
        );
        gauge(
            "etcd_backup_db_size_in_use_bytes",
            "Bytes in use of that database (the rest is free pages a defrag returns).",
            db.in_use as f64,
        );
    }
    if let Some(q) = report.quota {
        gauge(
            "etcd_backup_db_quota_bytes",
            "etcd's backend quota (ETCD_QUOTA_BACKEND_BYTES).",
            q as f64,
        );
    }
    if let Some(t) = report.client_cert_not_after {
        gauge(
            "etcd_backup_client_cert_expiry_timestamp_seconds",
            "notAfter of the client certificate (ETCD_CERT).",
            seconds(t),
        );
    }
    text(&gauges)
}

/// The group's URL: `/metrics/job/etcd-backup/NAME/VALUE...`. Values with a `/`, and empty
/// values, go base64url-encoded under `NAME@base64`, as the Pushgateway asks.
pub fn group_url(base: &Url, labels: &[(String, String)]) -> Url {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().expect("http(s) URLs have a path");
        path.pop_if_empty().extend(["metrics", "job", JOB]);
        for (name, value) in labels {
            if value.is_empty() || value.contains('/') {
                let encoded = base64::engine::general_purpose::URL_SAFE.encode(value);
                path.extend([format!("{name}@base64"), encoded]);
            } else {
                path.extend([name, value]);
            }
        }
    }
    url
}

/// What a `defrag` run reports: its outcome and the databases' total size before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragMetrics {
    pub finished: DateTime<Utc>,
    pub success: bool,
    pub defragmented: u64,
    pub size_before: u64,
    pub size_after: u64,
}

/// The defrag report in the text format; its names differ from a backup's, so the two share
/// the group without replacing each other's metrics.
pub fn encode_defrag(r: &DefragMetrics) -> String {
    let mut gauges = Vec::new();
    let mut gauge = |name, help, value| gauges.push((name, help, value));
    gauge(
        "etcd_backup_defrag_last_run_timestamp_seconds",
        "When the last defrag run ended.",
        seconds(r.finished),
    );
    gauge(
        "etcd_backup_defrag_last_run_success",
        "1 if the last defrag run ended without a failure, else 0.",
        if r.success { 1.0 } else { 0.0 },
    );
    if r.success {
        gauge(
            "etcd_backup_defrag_members_defragmented",
            "Members the last defrag run defragmented.",
            r.defragmented as f64,
        );
        gauge(
            "etcd_backup_defrag_db_size_before_bytes",
            "Their databases' total size before the last defrag run.",
            r.size_before as f64,
        );
        gauge(
            "etcd_backup_defrag_db_size_after_bytes",
            "Their databases' total size after it.",
            r.size_after as f64,
        );
    }
    text(&gauges)
}

/// Pushes `report` if a Pushgateway is set; a failure is logged as a warning and returned, for
/// the caller to record. Takes at most `cfg.timeout`.
pub async fn push(cfg: &MetricsConfig, report: &RunMetrics) -> Option<String> {
    push_text(cfg, encode(report)).await
}

/// Pushes an encoded body (see [`push`]).
pub async fn push_text(cfg: &MetricsConfig, body: String) -> Option<String> {
    let base = cfg.pushgateway.as_ref()?;
    let url = group_url(base, &cfg.labels);
    // One deadline, the outer one, so a slow Pushgateway is always reported by the setting's
    // name: a client timeout of the same length raced it and sometimes won, as "operation
    // timed out".
    let send = async {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| crate::describe(&e))?;
        let r = client
            .post(url.clone())
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await
            .map_err(|e| crate::describe(&e))?;
        if r.status().is_success() {
            Ok(())
        } else {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            Err(format!("{status}: {}", body.trim()))
        }
    };
    let result = match tokio::time::timeout(cfg.timeout, send).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within BACKUP_PUSHGATEWAY_TIMEOUT={}",
            humantime::format_duration(cfg.timeout)
        )),
    };
    match result {
        Ok(()) => {
            tracing::debug!(url = %url, "metrics pushed");
            None
        }
        Err(why) => {
            tracing::warn!("pushing metrics to {url} failed: {why}; check BACKUP_PUSHGATEWAY_URL (the backup itself is not affected)");
            Some(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(success: bool) -> RunMetrics {
        RunMetrics {
            finished: DateTime::from_timestamp(1_780_000_000, 500_000_000).unwrap(),
            duration: Duration::from_millis(12_250),
            success,
            published: Some(Published {
                snapshot_bytes: 1000,
                stored_bytes: 300,
                revision: 42,
                members_differing: 1,
                members_unchecked: 0,
            }),
            db: Some(DbSizes {
                size: 4096,
                in_use: 2048,
            }),
            quota: Some(2 << 30),
            client_cert_not_after: None,
        }
    }

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn a_success_sends_the_success_time_and_sizes() {
        let text = encode(&report(true));
        assert_eq!(value(&text, "etcd_backup_last_run_success"), Some(1.0));
        assert_eq!(
            value(&text, "etcd_backup_last_success_timestamp_seconds"),
            Some(1_780_000_000.5)
        );
        assert_eq!(value(&text, "etcd_backup_snapshot_revision"), Some(42.0));
        assert_eq!(value(&text, "etcd_backup_members_diverged"), Some(1.0));
        assert_eq!(value(&text, "etcd_backup_duration_seconds"), Some(12.25));
        assert_eq!(
            value(&text, "etcd_backup_db_quota_bytes"),
            Some(2147483648.0)
        );
        assert!(
            text.contains("# TYPE etcd_backup_last_run_success gauge"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn a_failure_never_sends_the_success_time_or_sizes() {
        let text = encode(&report(false));
        assert_eq!(value(&text, "etcd_backup_last_run_success"), Some(0.0));
        for absent in [
            "etcd_backup_last_success_timestamp_seconds",
            "etcd_backup_snapshot_size_bytes",
            "etcd_backup_stored_size_bytes",
            "etcd_backup_snapshot_revision",
            "etcd_backup_members_diverged",
        ] {
            assert_eq!(value(&text, absent), None, "{absent} in\n{text}");
        }
        assert!(value(&text, "etcd_backup_last_run_timestamp_seconds").is_some());
    }

    #[test]
    fn group_urls_follow_the_pushgateway_rules() {
        let base = Url::parse("http://pg.monitoring:9091").unwrap();
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            (vec![], "http://pg.monitoring:9091/metrics/job/etcd-backup"),
            (
                l(&[("cluster", "prod-eu")]),
                "http://pg.monitoring:9091/metrics/job/etcd-backup/cluster/prod-eu",
            ),
            (
                l(&[("path", "a/b"), ("empty", "")]),
                "http://pg.monitoring:9091/metrics/job/etcd-backup/path@base64/YS9i/empty@base64/",
            ),
            (
                l(&[("team", "sre ops")]),
                "http://pg.monitoring:9091/metrics/job/etcd-backup/team/sre%20ops",
            ),
        ];
        for (labels, want) in cases {
            assert_eq!(group_url(&base, &labels).as_str(), want);
        }
        let prefixed = Url::parse("https://gw.example/push/").unwrap();
        assert_eq!(
            group_url(&prefixed, &[]).as_str(),
            "https://gw.example/push/metrics/job/etcd-backup"
        );
    }
}
