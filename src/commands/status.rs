//! `status`: every endpoint's health, member, leader, raft index, revision and database size,
//! probed concurrently, in endpoint order.

use crate::config::EtcdConfig;
use crate::etcd::{self, Members};
use crate::output::EndpointRow;

/// One row per endpoint; an endpoint that does not answer is a row with its error.
pub async fn status(cfg: &EtcdConfig) -> Vec<EndpointRow> {
    Members::new(cfg)
        .probe_all()
        .await
        .into_iter()
        .map(|(endpoint, r)| {
            let (status, error) = match r {
                Ok(m) => (Some(m.status), None),
                Err(e) => (None, Some(e)),
            };
            let warning = status
                .as_ref()
                .and_then(|s| etcd::quota_warning(s, cfg.quota));
            EndpointRow {
                endpoint,
                healthy: status.is_some(),
                status,
                error,
                quota: cfg.quota,
                warning,
            }
        })
        .collect()
}
