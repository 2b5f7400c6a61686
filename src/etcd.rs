//! The etcd side: connect to one member over (m)TLS, read its status, stream its snapshot.
//!
//! Endpoints are tried one by one, not through the client's load balancer, because a snapshot
//! is served by one member from its local database and the operator needs to know which one
//! and why the others were passed over. A member is chosen if it answers `Status` within the
//! dial timeout; a member that reports errors (an alarm) or is a learner is used only when no
//! other member answers cleanly.

use std::fmt;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;
use url::Url;

use crate::config::EtcdConfig;
use crate::describe as chain;

/// What one member says about itself (etcdctl's `endpoint status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub endpoint: String,
    pub cluster_id: String,
    pub member_id: String,
    pub leader: String,
    pub is_leader: bool,
    pub is_learner: bool,
    pub version: String,
    pub raft_index: u64,
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
        self.leader != "0" && !self.errors.iter().any(|e| e.contains("no leader"))
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
    #[error("no etcd endpoint answered:{}\ncheck ETCD_ENDPOINTS, that etcd is running and reachable, and that ETCD_CACERT, ETCD_CERT and ETCD_KEY belong to this cluster's PKI", list(.0))]
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

fn options(cfg: &EtcdConfig) -> ConnectOptions {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(cfg.dial_timeout)
        .with_keep_alive(Duration::from_secs(10), cfg.dial_timeout);
    if let Some(ca) = &cfg.ca {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&ca.pem));
        if let Some(id) = &cfg.identity {
            tls = tls.identity(Identity::from_pem(&id.cert.pem, id.key.expose()));
        }
        opts = opts.with_tls(tls);
    }
    opts
}

fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

/// What an operator should check for a failed connection, from the words of the TLS and
/// transport errors (tonic gives no typed cause).
fn hint(why: &str) -> &'static str {
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

/// Connects to one endpoint and reads its status, within the dial timeout.
pub async fn probe(cfg: &EtcdConfig, endpoint: &Url) -> Result<Member, String> {
    let ep = endpoint.as_str().trim_end_matches('/').to_string();
    let attempt = async {
        let mut client = Client::connect([ep.as_str()], Some(options(cfg)))
            .await
            .map_err(|e| chain(&e))?;
        let s = client.status().await.map_err(|e| chain(&e))?;
        let header = s.header().ok_or("status response has no header")?;
        let status = MemberStatus {
            endpoint: ep.clone(),
            cluster_id: hex_id(header.cluster_id()),
            member_id: hex_id(header.member_id()),
            leader: hex_id(s.leader()),
            is_leader: s.leader() != 0 && s.leader() == header.member_id(),
            is_learner: s.is_learner(),
            version: s.version().to_string(),
            raft_index: s.raft_index(),
            raft_term: s.raft_term(),
            revision: header.revision(),
            db_size: s.db_size().max(0) as u64,
            db_size_in_use: s.raft_used_db_size().max(0) as u64,
            errors: s.errors().to_vec(),
        };
        Ok::<_, String>(Member { client, status })
    };
    match tokio::time::timeout(cfg.dial_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within ETCD_DIAL_TIMEOUT={}",
            humantime::format_duration(cfg.dial_timeout)
        )),
    }
}

/// Picks the member to take the snapshot from: the first endpoint that answers cleanly, else
/// the first that answers at all (with a warning saying why it is second best).
pub async fn connect(cfg: &EtcdConfig) -> Result<Member, EtcdError> {
    let chosen = choose(cfg).await?;
    if !chosen.status.has_leader() {
        // Snapshot and status are served from the member's local database, so a member
        // without quorum still gives a consistent (if not the latest) backup: the one the
        // operator needs most when the API server has gone read-only.
        tracing::warn!(
            "member {} knows no leader: the cluster may have lost quorum; taking the snapshot from its local copy anyway",
            chosen.status.member_id
        );
    }
    Ok(chosen)
}

async fn choose(cfg: &EtcdConfig) -> Result<Member, EtcdError> {
    let mut failures = Vec::new();
    let mut fallback: Option<(Member, String)> = None;
    for endpoint in &cfg.endpoints {
        match probe(cfg, endpoint).await {
            Ok(m) if m.status.errors.is_empty() && !m.status.is_learner => return Ok(m),
            Ok(m) => {
                let why = if m.status.is_learner {
                    "is a learner".to_string()
                } else {
                    format!("reports errors: {}", m.status.errors.join("; "))
                };
                tracing::warn!(endpoint = %endpoint, "member {} {why}; trying the next endpoint", m.status.member_id);
                fallback = fallback.or(Some((m, why)));
            }
            Err(why) => {
                let why = format!("{why}{}", hint(&why));
                tracing::warn!(endpoint = %endpoint, "endpoint unusable: {why}");
                failures.push((endpoint.to_string(), why));
            }
        }
    }
    match fallback {
        Some((m, why)) => {
            tracing::warn!(
                "no member answered cleanly; using {} although it {why}",
                m.status.endpoint
            );
            Ok(m)
        }
        None => Err(EtcdError::Unreachable(failures)),
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

/// The status of every endpoint, in order: the member's status or why it did not answer.
pub async fn status_all(cfg: &EtcdConfig) -> Vec<(String, Result<MemberStatus, String>)> {
    let probes = cfg.endpoints.iter().map(|e| async move {
        let r = probe(cfg, e)
            .await
            .map(|m| m.status)
            .map_err(|why| format!("{why}{}", hint(&why)));
        (e.as_str().trim_end_matches('/').to_string(), r)
    });
    futures::future::join_all(probes).await
}

/// The snapshot stream of one member, as chunks of bytes. It ends when etcd closes the stream,
/// which is after the message carrying the SHA-256 trailer (stopping at `remaining_bytes == 0`
/// would drop it).
pub struct Snapshot {
    endpoint: String,
    stream: etcd_client::SnapshotStreaming,
    bytes: u64,
    /// The first chunk, read by [`start_snapshot`] to prove the stream works.
    first: Option<bytes::Bytes>,
}

/// Removes `used` (an endpoint as [`MemberStatus::endpoint`] names it) from the endpoints.
pub fn pass_over(cfg: &mut EtcdConfig, used: &str) {
    cfg.endpoints
        .retain(|u| u.as_str().trim_end_matches('/') != used);
}

/// Whether `e` is, or was caused by, a snapshot stream that broke (rather than the store, the
/// verification or a shutdown): the kind of failure another member may not have.
pub fn is_broken_stream(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref(), Some(EtcdError::Stream { .. })))
}

/// Connects and starts a snapshot, trying the endpoints in order. A member that answers its
/// status but fails before the first chunk of its snapshot arrives is passed over like one
/// that does not answer; a failure after that fails this stream (the caller may start over
/// from the next member). Returns the member and its stream.
pub async fn start_snapshot(cfg: &EtcdConfig) -> Result<(Member, Snapshot), EtcdError> {
    let mut remaining = cfg.clone();
    loop {
        let mut member = connect(&remaining).await?;
        let started = async {
            let mut s = Snapshot::start(&mut member).await?;
            s.first = Some(s.next_chunk().await?.ok_or_else(|| EtcdError::Stream {
                endpoint: s.endpoint.clone(),
                bytes: 0,
                error: "the stream ended before any data".into(),
            })?);
            Ok::<_, EtcdError>(s)
        };
        match started.await {
            Ok(s) => return Ok((member, s)),
            Err(e) => {
                pass_over(&mut remaining, &member.status.endpoint);
                if remaining.endpoints.is_empty() {
                    return Err(e);
                }
                tracing::warn!("{e}; trying the next endpoint");
            }
        }
    }
}

impl Snapshot {
    pub async fn start(member: &mut Member) -> Result<Snapshot, EtcdError> {
        let endpoint = member.status.endpoint.clone();
        let stream = member
            .client
            .snapshot()
            .await
            .map_err(|e| EtcdError::Stream {
                endpoint: endpoint.clone(),
                bytes: 0,
                error: chain(&e),
            })?;
        Ok(Snapshot {
            endpoint,
            stream,
            bytes: 0,
            first: None,
        })
    }

    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, EtcdError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        match self.stream.message().await {
            Ok(Some(m)) => {
                self.bytes += m.blob().len() as u64;
                Ok(Some(bytes::Bytes::copy_from_slice(m.blob())))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(EtcdError::Stream {
                endpoint: self.endpoint.clone(),
                bytes: self.bytes,
                error: chain(&e),
            }),
        }
    }
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
