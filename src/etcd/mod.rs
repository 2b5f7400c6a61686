//! The etcd side: client options, one member's status, and the submodules that use them:
//! [`members`] owns which member a run talks to (probing, the choice, what failed),
//! [`snapshot`] streams one member's snapshot, and [`defrag`] decides which members `defrag`
//! visits in which order.
//!
//! Endpoints are not handed to the client's load balancer, because a snapshot is served by one
//! member from its local database and the operator needs to know which one and why the others
//! were passed over.

pub mod defrag;
pub mod members;
pub mod snapshot;

pub use members::Members;
pub use snapshot::Snapshot;

use std::fmt;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;
use url::Url;

use crate::config::EtcdConfig;
use crate::describe as chain;

/// An etcd member's id: a number, compared as one, and shown in hex as etcdctl shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one member says about itself (etcdctl's `endpoint status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub endpoint: String,
    pub cluster_id: String,
    pub member_id: MemberId,
    /// The leader this member knows; 0 for none.
    pub leader: MemberId,
    pub is_leader: bool,
    pub is_learner: bool,
    pub version: String,
    pub raft_index: u64,
    /// The raft index this member has applied (a member that caught up has applied what the
    /// leader committed).
    pub raft_applied_index: u64,
    pub raft_term: u64,
    pub revision: i64,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub errors: Vec<String>,
}

impl MemberStatus {
    /// Whether the member knows a leader (etcd 3.5 reports "etcdserver: no leader" among its
    /// errors when it does not).
    pub fn has_leader(&self) -> bool {
        self.leader != MemberId(0) && !self.errors.iter().any(|e| e.contains("no leader"))
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member {} of cluster {} at {} (etcd {}, {}, raft index {}, term {}, revision {}, db {} bytes, {} in use)",
            self.member_id,
            self.cluster_id,
            self.endpoint,
            self.version,
            if self.is_leader { "leader" } else if self.is_learner { "learner" } else { "follower" },
            self.raft_index,
            self.raft_term,
            self.revision,
            self.db_size,
            self.db_size_in_use
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint could serve a snapshot:{}\ncheck ETCD_ENDPOINTS, that etcd is running and reachable, and that ETCD_CACERT, ETCD_CERT and ETCD_KEY belong to this cluster's PKI", list(.0))]
    Unreachable(Vec<(String, String)>),
    #[error("snapshot stream from {endpoint} failed after {bytes} bytes: {error}")]
    Stream {
        endpoint: String,
        bytes: u64,
        error: String,
    },
    #[error("snapshot from {endpoint} did not finish within ETCD_SNAPSHOT_TIMEOUT={timeout:?} ({bytes} bytes received); raise ETCD_SNAPSHOT_TIMEOUT for a large database")]
    Timeout {
        endpoint: String,
        bytes: u64,
        timeout: Duration,
    },
}

fn list(attempts: &[(String, String)]) -> String {
    attempts
        .iter()
        .map(|(e, why)| format!("\n  {e}: {why}"))
        .collect()
}

/// A connected member, ready to serve a snapshot.
pub struct Member {
    pub client: Client,
    pub status: MemberStatus,
}

/// The HTTP/2 connection window, per stream window: the stream's window is what paces etcd (a
/// paced reader leaves at most that much in flight), so the connection's is larger and never
/// the one that binds.
const CONNECTION_WINDOWS: u32 = 4;

fn options(cfg: &EtcdConfig) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(cfg.dial_timeout)
        .with_keep_alive(Duration::from_secs(10), cfg.dial_timeout)
}

/// A client of one member over a channel of our own: etcd-client's `connect` builds its
/// endpoints without HTTP/2 window settings, and hyper's default stream window (2 MiB) lets
/// etcd send a paced reader's data in full-speed bursts. `window` is the stream window of a
/// connection that reads a snapshot (`ETCD_SNAPSHOT_WINDOW`); `None` keeps hyper's defaults,
/// which a watch under a burst of writes or a call across a long link wants.
pub async fn connect(
    cfg: &EtcdConfig,
    endpoint: &str,
    window: Option<u32>,
) -> Result<Client, ProbeError> {
    let transport = |e: tonic::transport::Error| ProbeError::Transport { why: chain(&e) };
    let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(transport)?
        .connect_timeout(cfg.dial_timeout)
        .keep_alive_while_idle(false)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(cfg.dial_timeout);
    if let Some(w) = window {
        ep = ep
            .initial_stream_window_size(w)
            .initial_connection_window_size(w.saturating_mul(CONNECTION_WINDOWS));
    }
    if endpoint.starts_with("https://") {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cfg.ca {
            tls = tls.ca_certificate(Certificate::from_pem(&ca.pem));
        }
        if let Some(id) = &cfg.identity {
            tls = tls.identity(Identity::from_pem(&id.cert.pem, id.key.expose()));
        }
        ep = ep.tls_config(tls).map_err(transport)?;
    }
    let channel = ep.connect().await.map_err(transport)?;
    Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options(cfg)))
        .await
        .map_err(|e| ProbeError::transport(&e))
}

fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

/// What an operator should check for a failed connection, from the words of the TLS and
/// transport errors (tonic gives no typed cause).
pub(crate) fn hint(why: &str) -> &'static str {
    if why.contains("invalid peer certificate")
        || why.contains("UnknownIssuer")
        || why.contains("BadSignature")
    {
        " (etcd's server certificate is not signed by ETCD_CACERT, or does not name this host: check ETCD_CACERT and the endpoint's host)"
    } else if why.contains("BadCertificate")
        || why.contains("CertificateRequired")
        || why.contains("UnknownCA")
    {
        " (etcd rejected our client certificate: check that ETCD_CERT and ETCD_KEY are signed by etcd's --trusted-ca-file)"
    } else if why.contains("Connection refused") {
        " (nothing listens there: check the host and port in ETCD_ENDPOINTS)"
    } else {
        ""
    }
}

/// Why a member could not be reached or read. tonic gives the transport's cause as words only,
/// so they are kept as text, with a hint of what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{why}{}", hint(.why))]
    Transport { why: String },
    #[error("status response has no header")]
    NoHeader,
    #[error("no answer within ETCD_DIAL_TIMEOUT={}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The transport's own timeout fired at the same moment as ours: say which setting ran out.
    #[error("no answer within ETCD_DIAL_TIMEOUT={} ({why})", humantime::format_duration(*.limit))]
    TimedOut { limit: Duration, why: String },
}

impl ProbeError {
    fn transport(e: &etcd_client::Error) -> ProbeError {
        ProbeError::Transport { why: chain(e) }
    }
}

/// A linearizable read of `client`'s member, within `timeout`: the member is part of a working
/// quorum.
pub async fn linearizable(client: &mut Client, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, client.get("health", None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::transport(&e)),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// Connects to one endpoint and reads its status, within the dial timeout.
pub async fn probe(cfg: &EtcdConfig, endpoint: &Url) -> Result<Member, ProbeError> {
    let ep = endpoint.as_str().trim_end_matches('/').to_string();
    tracing::debug!(endpoint = %ep, "connecting");
    let attempt = async {
        let mut client = connect(cfg, &ep, None).await?;
        let s = client
            .status()
            .await
            .map_err(|e| ProbeError::transport(&e))?;
        let header = s.header().ok_or(ProbeError::NoHeader)?;
        let status = MemberStatus {
            endpoint: ep.clone(),
            cluster_id: hex_id(header.cluster_id()),
            member_id: MemberId(header.member_id()),
            leader: MemberId(s.leader()),
            is_leader: s.leader() != 0 && s.leader() == header.member_id(),
            is_learner: s.is_learner(),
            version: s.version().to_string(),
            raft_index: s.raft_index(),
            raft_applied_index: s.raft_applied_index(),
            raft_term: s.raft_term(),
            revision: header.revision(),
            db_size: s.db_size().max(0) as u64,
            db_size_in_use: s.raft_used_db_size().max(0) as u64,
            errors: s.errors().to_vec(),
        };
        Ok(Member { client, status })
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(cfg.dial_timeout, attempt).await {
        // The connect timeout has the same length and can fire first, as the transport's own
        // "timed out": say which setting ran out either way.
        Ok(Err(ProbeError::Transport { why })) if started.elapsed() >= cfg.dial_timeout => {
            Err(ProbeError::TimedOut {
                limit: cfg.dial_timeout,
                why,
            })
        }
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(cfg.dial_timeout)),
    }
}

/// How long before the client certificate expires we start warning: kubeadm's last a year and
/// `kubeadm certs renew` is a manual step, so a month gives an operator several runs' notice.
pub const CERT_WARN_DAYS: i64 = 30;

/// A warning when the client certificate expires within [`CERT_WARN_DAYS`] of `now`, or has.
pub fn cert_warning(
    id: &crate::credentials::ClientCert,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    expiry_warning(id.not_after, &id.cert.path, now)
}

/// [`cert_warning`] for a certificate at `path` valid until `not_after`.
pub fn expiry_warning(
    not_after: chrono::DateTime<chrono::Utc>,
    path: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let left = not_after - now;
    let when = not_after.format("%Y-%m-%d %H:%M UTC");
    let path = path.display();
    if left <= chrono::TimeDelta::zero() {
        Some(format!("the client certificate {path} (ETCD_CERT) expired on {when}: etcd refuses it; renew it (kubeadm: kubeadm certs renew etcd-healthcheck-client)"))
    } else if left < chrono::TimeDelta::days(CERT_WARN_DAYS) {
        Some(format!("the client certificate {path} (ETCD_CERT) expires on {when}, in {} days: renew it before then, or every backup will fail (kubeadm: kubeadm certs renew etcd-healthcheck-client)", left.num_days()))
    } else {
        None
    }
}

/// The share of the quota above which we warn: etcd refuses writes at the quota (an alarm that
/// only compaction and defragmentation clear).
pub const QUOTA_WARN: f64 = 0.8;

/// A warning when the member's database is past 80% of the quota.
pub fn quota_warning(s: &MemberStatus, quota: u64) -> Option<String> {
    let used = s.db_size as f64 / quota as f64;
    (used > QUOTA_WARN).then(|| {
        format!(
            "etcd database of member {} is {} bytes, {:.0}% of the {quota}-byte quota (ETCD_QUOTA_BACKEND_BYTES); at 100% etcd refuses writes: compact and defragment, or raise --quota-backend-bytes",
            s.member_id, s.db_size, used * 100.0
        )
    })
}

/// Whether `e` is, or was caused by, a snapshot stream that broke (rather than the store, the
/// verification or a shutdown): the kind of failure another member may not have.
pub fn is_broken_stream(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref(), Some(EtcdError::Stream { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn only_a_broken_stream_is_worth_another_member() {
        let broken: anyhow::Result<()> = Err(EtcdError::Stream {
            endpoint: "https://10.0.0.1:2379".into(),
            bytes: 7_000_000,
            error: "connection reset".into(),
        }
        .into());
        // As `publish` returns it: wrapped in the upload's context.
        let broken = broken.context("uploading s3://b/etcd/x.db.gz").unwrap_err();
        assert!(is_broken_stream(&broken));
        let store = anyhow::anyhow!("the bbolt walk found damage").context("verifying");
        assert!(!is_broken_stream(&store));
        let interrupted = anyhow::Error::from(crate::shutdown::Interrupted("SIGTERM"));
        assert!(!is_broken_stream(&interrupted));
    }
}
