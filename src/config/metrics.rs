//! The metrics section: where a run's report is pushed, with which grouping labels.

use std::time::Duration;

use url::Url;

use super::reader::{http_url, Reader};
use super::vars::Key;

/// Where run metrics go: nowhere unless a Pushgateway is set.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub pushgateway: Option<Url>,
    /// Grouping labels after `job`, in the order given.
    pub labels: Vec<(String, String)>,
    pub timeout: Duration,
}

pub(super) fn metrics(r: &mut Reader<'_>) -> Option<MetricsConfig> {
    let before = r.count();
    let pushgateway = r.parse(
        Key::BackupPushgatewayUrl,
        "expected an http(s) URL such as http://pushgateway.monitoring:9091",
        http_url,
    );
    let labels = labels(r);
    let timeout = r.duration(Key::BackupPushgatewayTimeout)?;
    (r.count() == before).then_some(MetricsConfig {
        pushgateway,
        labels,
        timeout,
    })
}

/// BACKUP_METRICS_LABELS: NAME=VALUE pairs; `job` and `instance` are the push's own.
fn labels(r: &mut Reader<'_>) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let Some((used, list)) = r.raw(Key::BackupMetricsLabels) else {
        return labels;
    };
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((n, v)) if label_name(n.trim()) && !matches!(n.trim(), "job" | "instance") => {
                labels.push((n.trim().to_string(), v.trim().to_string()))
            }
            _ => r.problem(
                used,
                Some(list),
                format!("{item:?}: expected NAME=VALUE pairs, comma-separated, with NAME a Prometheus label name other than job and instance (e.g. cluster=prod-eu)"),
            ),
        }
    }
    labels
}

/// A label name as Prometheus accepts it.
fn label_name(n: &str) -> bool {
    let mut bytes = n.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !n.starts_with("__")
}
