//! Which member a run talks to. [`Members`] is the one owner of that choice: it probes the
//! endpoints concurrently, picks one with a pure rule ([`choose`]), and remembers for the rest
//! of the run which endpoints failed and why, so that a member that failed once is not tried
//! again after another breaks. The configuration stays as the operator wrote it.
//!
//! The rule: in endpoint order, a clean follower (answers, is a voter, reports no alarm, is not
//! the leader) before the clean leader, before a learner or an alarmed member, before one that
//! does not answer. The leader comes after its followers because one raft loop of the leader
//! sends the heartbeats, replicates the log and syncs its WAL (etcd's `raft.go`): a leader
//! starved by a snapshot slows every write of the cluster, while in three members one slow
//! follower is not on the quorum path (the reasoning of etcd issue #17161). etcd's docs take
//! snapshots from the leader for freshness; a follower's snapshot is as fresh as its applied
//! index, and the HashKV check against every member proves it holds the cluster's data. A
//! learner or an alarmed member still holds the data, so it serves when nothing better answers;
//! the operator is told.

use url::Url;

use super::{probe, EtcdError, Member, MemberStatus, ProbeError, Snapshot};
use crate::config::EtcdConfig;

/// How a probed endpoint stands, for [`choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Answers, is a voting member, reports no errors; `leader` when it leads.
    Clean { leader: bool },
    /// Answers, but is a learner or reports errors (an alarm): why.
    Degraded(String),
    /// Does not answer, or failed earlier in this run: why.
    Unusable(String),
}

impl Standing {
    pub fn of(s: &MemberStatus) -> Standing {
        if s.is_learner {
            Standing::Degraded("is a learner".into())
        } else if !s.errors.is_empty() {
            Standing::Degraded(format!("reports errors: {}", s.errors.join("; ")))
        } else {
            Standing::Clean {
                leader: s.is_leader,
            }
        }
    }
}

/// The index of the member to use: the first clean follower in endpoint order, else the clean
/// leader, else the first degraded one, else none.
pub fn choose(standings: &[Standing]) -> Option<usize> {
    let first = |want: fn(&Standing) -> bool| standings.iter().position(want);
    first(|s| *s == Standing::Clean { leader: false })
        .or_else(|| first(|s| *s == Standing::Clean { leader: true }))
        .or_else(|| first(|s| matches!(s, Standing::Degraded(_))))
}

/// An endpoint as messages and [`MemberStatus::endpoint`] name it.
pub fn endpoint_name(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// The members of one run: the endpoints, and which of them failed and why.
pub struct Members {
    cfg: EtcdConfig,
    failed: Vec<(String, String)>,
}

impl Members {
    pub fn new(cfg: &EtcdConfig) -> Members {
        Members {
            cfg: cfg.clone(),
            failed: Vec::new(),
        }
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.cfg
    }

    /// Endpoints that failed this run, in the order they failed, with why.
    pub fn failed(&self) -> &[(String, String)] {
        &self.failed
    }

    fn has_failed(&self, endpoint: &str) -> bool {
        self.failed.iter().any(|(e, _)| e == endpoint)
    }

    /// Records that `endpoint` failed: it is not tried again in this run.
    pub fn fail(&mut self, endpoint: &str, why: impl Into<String>) {
        if !self.has_failed(endpoint) {
            self.failed.push((endpoint.to_string(), why.into()));
        }
    }

    /// Probes every endpoint that has not failed, all at once (so one that hangs costs one dial
    /// timeout, not one per endpoint). Results come in endpoint order; a failure says what to
    /// check.
    pub async fn probe_all(&self) -> Vec<(String, Result<Member, ProbeError>)> {
        let probes = self
            .cfg
            .endpoints
            .iter()
            .filter(|u| !self.has_failed(&endpoint_name(u)))
            .map(|u| async move { (endpoint_name(u), probe(&self.cfg, u).await) });
        futures::future::join_all(probes).await
    }

    /// The member to use now, by [`choose`] over a fresh probe. Endpoints that do not answer
    /// are recorded as failed; when no member is left, the error lists every failure of the run.
    pub async fn choose(&mut self) -> Result<Member, EtcdError> {
        let probed = self.probe_all().await;
        let standings: Vec<Standing> = probed
            .iter()
            .map(|(_, r)| match r {
                Ok(m) => Standing::of(&m.status),
                Err(why) => Standing::Unusable(why.to_string()),
            })
            .collect();
        let chosen = choose(&standings);
        let mut member = None;
        for (i, ((endpoint, r), standing)) in probed.into_iter().zip(&standings).enumerate() {
            match (r, standing) {
                (Err(why), _) => {
                    tracing::warn!(endpoint = %endpoint, "endpoint unusable: {why}");
                    self.fail(&endpoint, why.to_string());
                }
                (Ok(m), _) if Some(i) == chosen => member = Some(m),
                (Ok(m), Standing::Degraded(why)) => tracing::warn!(
                    endpoint = %endpoint,
                    "member {} {why}; passed over for a better one",
                    m.status.member_id
                ),
                (Ok(_), _) => {}
            }
        }
        let member = member.ok_or_else(|| EtcdError::Unreachable(self.failed.clone()))?;
        if let Some(Standing::Degraded(why)) = chosen.map(|i| &standings[i]) {
            tracing::warn!(
                "no member answered cleanly; using {} although it {why}",
                member.status.endpoint
            );
        }
        if !member.status.has_leader() {
            // Snapshot and status are served from the member's local database, so a member
            // without quorum still gives a consistent (if not the latest) backup: the one the
            // operator needs most when the API server has gone read-only.
            tracing::warn!(
                "member {} knows no leader: the cluster may have lost quorum; taking the snapshot from its local copy anyway",
                member.status.member_id
            );
        }
        Ok(member)
    }

    /// Chooses a member and starts its snapshot. A member that fails before the first chunk is
    /// recorded as failed and the next is chosen; when none is left, the error lists them all.
    pub async fn start_snapshot(&mut self) -> Result<(Member, Snapshot), EtcdError> {
        loop {
            let mut member = self.choose().await?;
            // The snapshot gets a connection of its own, with the window that paces etcd.
            let endpoint = member.status.endpoint.clone();
            match super::connect(&self.cfg, &endpoint, Some(self.cfg.window)).await {
                Ok(client) => member.client = client,
                Err(e) => {
                    tracing::warn!("{endpoint}: {e}; trying the next endpoint");
                    self.fail(&endpoint, e.to_string());
                    continue;
                }
            }
            match Snapshot::start(&mut member).await {
                Ok(s) => return Ok((member, s)),
                Err(e) => {
                    tracing::warn!("{e}; trying the next endpoint");
                    self.fail(&member.status.endpoint, e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::MemberId;

    fn d(why: &str) -> Standing {
        Standing::Degraded(why.into())
    }
    fn u(why: &str) -> Standing {
        Standing::Unusable(why.into())
    }

    #[test]
    fn the_choice_prefers_a_follower_then_the_leader_then_degraded_then_endpoint_order() {
        const F: Standing = Standing::Clean { leader: false };
        const L: Standing = Standing::Clean { leader: true };
        let cases: &[(&[Standing], Option<usize>)] = &[
            (&[], None),
            (&[F], Some(0)),
            (&[L], Some(0)),
            (&[F, F], Some(0)),
            (&[L, F, F], Some(1)),
            (&[L, u("refused"), F], Some(2)),
            (&[L, u("refused"), u("timeout")], Some(0)),
            (&[u("refused"), F], Some(1)),
            (&[d("is a learner"), L], Some(1)),
            (&[d("is a learner"), F, L], Some(1)),
            (&[d("NOSPACE"), u("refused"), F], Some(2)),
            (&[u("refused"), d("is a learner"), d("NOSPACE")], Some(1)),
            (&[u("refused"), u("timeout")], None),
            (&[d("is a learner")], Some(0)),
        ];
        for (standings, want) in cases {
            assert_eq!(choose(standings), *want, "{standings:?}");
        }
    }

    fn status(is_learner: bool, errors: &[&str]) -> MemberStatus {
        MemberStatus {
            endpoint: "https://10.0.0.1:2379".into(),
            cluster_id: "c".into(),
            member_id: MemberId(0xa),
            leader: MemberId(0xa),
            is_leader: true,
            is_learner,
            version: "3.5.1".into(),
            raft_index: 1,
            raft_applied_index: 1,
            raft_term: 1,
            revision: 1,
            db_size: 1,
            db_size_in_use: 1,
            errors: errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn standing_of_a_status() {
        assert_eq!(
            Standing::of(&status(false, &[])),
            Standing::Clean { leader: true }
        );
        assert_eq!(
            Standing::of(&status(true, &[])),
            d("is a learner"),
            "a learner"
        );
        assert_eq!(
            Standing::of(&status(false, &["memberID:1 alarm:NOSPACE"])),
            d("reports errors: memberID:1 alarm:NOSPACE")
        );
    }

    #[test]
    fn a_failed_endpoint_is_remembered_once_and_never_probed_again() {
        let cfg = crate::config::Env::from_iter([(
            "ETCD_ENDPOINTS",
            "http://127.0.0.1:1,http://127.0.0.1:2",
        )])
        .etcd()
        .unwrap();
        let mut m = Members::new(&cfg);
        m.fail("http://127.0.0.1:1", "broke mid-stream");
        m.fail("http://127.0.0.1:1", "again");
        assert_eq!(
            m.failed(),
            [(
                "http://127.0.0.1:1".to_string(),
                "broke mid-stream".to_string()
            )]
        );
        // The configuration is untouched: the run's state lives here.
        assert_eq!(m.config().endpoints.len(), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let probed = rt.block_on(m.probe_all());
        let names: Vec<_> = probed.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(names, ["http://127.0.0.1:2"]);
    }
}
