//! `status`: every endpoint's health, member, leader, raft index, revision and database size,
//! probed concurrently, in endpoint order.

use serde::Serialize;

use super::{Context, Outcome, Verdict};
use crate::config::EtcdConfig;
use crate::etcd::{self, MemberStatus, Members};

/// Fails (exit 1) when no endpoint answered.
impl Outcome for Vec<EndpointRow> {
    fn verdict(&self) -> Verdict {
        if self.iter().any(|r| r.healthy) {
            Verdict::Pass
        } else {
            Verdict::Fail(
                "no endpoint is healthy: check ETCD_ENDPOINTS and the PKI settings".into(),
            )
        }
    }
}

/// One row per endpoint; an endpoint that does not answer is a row with its error. A member
/// past 80% of its quota is logged as a warning and flagged in its row.
pub async fn run(cfg: &EtcdConfig, ctx: &Context) -> Vec<EndpointRow> {
    let now = ctx.now;
    if let Some(w) = cfg
        .identity
        .as_ref()
        .and_then(|id| etcd::cert_warning(id, now))
    {
        tracing::warn!("{w}");
    }
    let not_after = cfg.identity.as_ref().map(|id| id.not_after);
    Members::new(cfg)
        .probe_all()
        .await
        .into_iter()
        .map(|(endpoint, r)| {
            let (status, error) = match r {
                Ok(m) => (Some(m.status), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let warning = status
                .as_ref()
                .and_then(|s| etcd::quota_warning(s, cfg.quota));
            if let Some(w) = &warning {
                tracing::warn!("{w}");
            }
            EndpointRow {
                endpoint,
                healthy: status.is_some(),
                status,
                error,
                quota: cfg.quota,
                warning,
                client_cert_not_after: not_after
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            }
        })
        .collect()
}

/// One endpoint in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointRow {
    pub endpoint: String,
    pub healthy: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<MemberStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub quota: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// notAfter of the client certificate used (ETCD_CERT), when mTLS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_not_after: Option<String>,
}
