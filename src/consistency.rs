//! Proves that a snapshot is the cluster: its HashKV ([`crate::snapshot::hashkv`]) against the
//! HashKV every member reports at the snapshot's revision.
//!
//! A member is asked one at a time, followers before the leader (HashKV holds the member's
//! read lock for its whole scan, stalling its commits while it runs; a stalled leader stalls
//! the cluster), and only the members `ETCD_HASHKV_MEMBERS` names ([`Asked`]). Hashes are compared only at equal compact
//! revisions, as etcd's own corruption checks do: a member that compacted after the snapshot,
//! to a revision between the snapshot's compact revision and its revision, is compared with
//! the snapshot hashed again at that member's compact revision. The verdict is a pure rule
//! over the outcomes ([`judge`]):
//!
//! - the snapshot agrees with a majority of the voting members: publish, naming any member
//!   that differs;
//! - a majority differs from the snapshot: its own member diverged; publish nothing and start
//!   over from another member;
//! - no member differs: publish, recording the members that could not be checked and why;
//! - otherwise (as many differ as agree): publish nothing; which side diverged is unknown.

use std::fmt;
use std::time::Duration;

use etcd_client::Client;

use crate::config::{Asked, EtcdConfig};
use crate::describe as chain;
use crate::etcd::{probe, MemberId, MemberStatus, Members};
use crate::snapshot::hashkv::HashKv;

/// The members in the order they are asked, each with why it is not asked, if it is not:
/// followers in the cluster's order, then the leader; learners are never asked (they do not
/// vote).
pub fn ask_order(
    members: &[(MemberId, bool)],
    leader: MemberId,
    asked: Asked,
) -> Vec<(MemberId, bool, Option<String>)> {
    let mut order: Vec<_> = members.to_vec();
    order.sort_by_key(|(id, _)| *id == leader);
    order
        .into_iter()
        .map(|(id, learner)| {
            let skip = if learner {
                Some("a learner: not a voting member".to_string())
            } else if asked == Asked::None {
                Some("ETCD_HASHKV_MEMBERS=none".to_string())
            } else if asked == Asked::Followers && id == leader {
                Some("the leader: ETCD_HASHKV_MEMBERS=followers".to_string())
            } else {
                None
            };
            (id, learner, skip)
        })
        .collect()
}

/// What one member's HashKV says about the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Agrees,
    /// The member's hash, and the compact revision both were computed with.
    Differs {
        hash: u32,
        compact_revision: i64,
    },
    /// Why the member could not be compared.
    Unchecked(String),
}

/// One member's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCheck {
    pub member_id: MemberId,
    pub learner: bool,
    pub outcome: Outcome,
}

impl fmt::Display for MemberCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Agrees => write!(f, "{}=agrees", self.member_id),
            Outcome::Differs {
                hash,
                compact_revision,
            } => write!(
                f,
                "{}=differs (hash {hash} at compact revision {compact_revision})",
                self.member_id
            ),
            Outcome::Unchecked(why) => write!(f, "{}=unchecked ({why})", self.member_id),
        }
    }
}

/// What a member answered to HashKV at the snapshot's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Hash {
        hash: u32,
        compact_revision: i64,
    },
    /// The member compacted past the revision (or, before etcd 3.5.10, to it).
    Compacted,
    /// The member has not reached the revision yet.
    Behind,
    Failed(String),
}

/// Whether a member's hash at compact revision `c` is compared by hashing the snapshot again at
/// `c`: it compacted after the snapshot's compaction, and not past the snapshot's revision.
fn needs_rehash(ours: HashKv, c: i64) -> bool {
    ours.compact_revision < c && c <= ours.revision
}

/// The compact revision to hash the snapshot again at for `answer`, if [`compare`] will need it.
pub fn rehash_at(ours: HashKv, answer: &Answer) -> Option<i64> {
    match *answer {
        Answer::Hash {
            compact_revision: c,
            ..
        } if needs_rehash(ours, c) => Some(c),
        _ => None,
    }
}

/// Compares one answer with the snapshot's HashKV `ours`. `rehash(c)` hashes the snapshot again
/// with compact revision `c` (`None`: it could not).
pub fn compare(ours: HashKv, answer: Answer, rehash: impl FnOnce(i64) -> Option<u32>) -> Outcome {
    let (hash, compact_revision) = match answer {
        Answer::Hash {
            hash,
            compact_revision,
        } => (hash, compact_revision),
        Answer::Compacted => {
            return Outcome::Unchecked(format!(
                "it compacted past revision {} before it was asked",
                ours.revision
            ))
        }
        Answer::Behind => {
            return Outcome::Unchecked(format!("it has not reached revision {} yet", ours.revision))
        }
        Answer::Failed(why) => return Outcome::Unchecked(why),
    };
    let expected = if compact_revision == ours.compact_revision {
        Some(ours.hash)
    } else if needs_rehash(ours, compact_revision) {
        match rehash(compact_revision) {
            Some(h) => Some(h),
            None => {
                return Outcome::Unchecked(format!(
                    "it compacted to revision {compact_revision} and the snapshot could not be hashed again at it"
                ))
            }
        }
    } else {
        None
    };
    match expected {
        Some(h) if h == hash => Outcome::Agrees,
        Some(_) => Outcome::Differs {
            hash,
            compact_revision,
        },
        None => Outcome::Unchecked(format!(
            "its compact revision {compact_revision} is not between the snapshot's {} and its revision {}",
            ours.compact_revision, ours.revision
        )),
    }
}

/// What to do with the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Publish,
    /// The snapshot's member is in the minority: take the snapshot from another member.
    StartOver,
    /// As many members differ as agree: publish nothing.
    Refuse,
}

/// The rule of the module doc, over the voting members' outcomes (learners do not vote).
pub fn judge(checks: &[MemberCheck]) -> Verdict {
    let voters: Vec<_> = checks.iter().filter(|c| !c.learner).collect();
    let count = |f: fn(&Outcome) -> bool| voters.iter().filter(|c| f(&c.outcome)).count();
    let agree = count(|o| *o == Outcome::Agrees);
    let differ = count(|o| matches!(o, Outcome::Differs { .. }));
    if agree * 2 > voters.len() || differ == 0 {
        Verdict::Publish
    } else if differ * 2 > voters.len() {
        Verdict::StartOver
    } else {
        Verdict::Refuse
    }
}

/// The check of one snapshot against the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub snapshot: HashKv,
    pub checks: Vec<MemberCheck>,
    pub verdict: Verdict,
}

impl Comparison {
    pub fn differing(&self) -> Vec<&MemberCheck> {
        let differs = |c: &&MemberCheck| matches!(c.outcome, Outcome::Differs { .. });
        self.checks.iter().filter(differs).collect()
    }

    pub fn unchecked(&self) -> Vec<&MemberCheck> {
        let unchecked = |c: &&MemberCheck| matches!(c.outcome, Outcome::Unchecked(_));
        self.checks.iter().filter(unchecked).collect()
    }

    /// Every member's outcome on one line.
    pub fn members(&self) -> String {
        let lines: Vec<String> = self.checks.iter().map(|c| c.to_string()).collect();
        lines.join("; ")
    }

    /// What the manifest records beside the snapshot's own HashKV.
    pub fn figures(&self, asked: Asked) -> Vec<(&'static str, String)> {
        vec![
            ("etcd-hashkv-members", self.members()),
            ("etcd-hashkv-asked", asked.to_string()),
        ]
    }
}

/// The snapshot's own member is in the minority, or the members split evenly: nothing was
/// published.
#[derive(Debug, thiserror::Error)]
#[error("{}", match .report.verdict {
    Verdict::StartOver => format!("the snapshot from member {member} differs from the majority of the cluster (HashKV {} at revision {}, compact revision {}): {}; member {member} has diverged from the others, nothing from it was published; check it with `etcdctl endpoint hashkv --cluster --rev={}` and replace its data", .report.snapshot.hash, .report.snapshot.revision, .report.snapshot.compact_revision, .report.members(), .report.snapshot.revision),
    _ => format!("the members do not agree on the data at revision {} (HashKV {} of the snapshot from member {member}): {}; as many differ as agree, so which one diverged is unknown and nothing was published; compare them with `etcdctl endpoint hashkv --cluster --rev={}`", .report.snapshot.revision, .report.snapshot.hash, .report.members(), .report.snapshot.revision),
})]
pub struct NotTheCluster {
    pub member: String,
    pub endpoint: String,
    pub report: Comparison,
}

/// Whether `e` is, or was caused by, a snapshot whose member is in the minority.
pub fn diverged_source(e: &anyhow::Error) -> Option<&NotTheCluster> {
    e.chain()
        .filter_map(|c| c.downcast_ref::<NotTheCluster>())
        .find(|n| n.report.verdict == Verdict::StartOver)
}

/// How long one member may take: the scan runs at about a second per GB.
fn hash_timeout(cfg: &EtcdConfig, db_size: u64) -> Duration {
    cfg.dial_timeout + Duration::from_secs(30) + Duration::from_secs(db_size / 100_000_000)
}

/// Asks one member for HashKV at `revision`; the answer must come from `member_id`.
async fn ask(client: &mut Client, member_id: MemberId, revision: i64, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, client.hash_kv(revision)).await {
        Err(_) => Answer::Failed(format!(
            "no HashKV answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => {
            let text = chain(&e);
            if text.contains("required revision has been compacted") {
                Answer::Compacted
            } else if text.contains("required revision is a future revision") {
                Answer::Behind
            } else {
                Answer::Failed(format!("HashKV failed: {text}"))
            }
        }
        Ok(Ok(r)) => match r.header().map(|h| MemberId(h.member_id())) {
            Some(id) if id == member_id => Answer::Hash {
                hash: r.hash(),
                compact_revision: r.compact_version(),
            },
            other => Answer::Failed(format!(
                "the answer came from member {} instead",
                other.map_or_else(|| "?".into(), |id| id.to_string())
            )),
        },
    }
}

/// Checks the snapshot `ours` (from `source`) against every member of the cluster, one at a
/// time. Members are reached through the configured endpoints, else through the client URLs
/// they advertise. `rehash(c)` hashes the snapshot again at compact revision `c`: a scan of the
/// file, which must not run on the async thread (the upload's last parts and the connections'
/// keepalives run there).
pub async fn check<F>(
    cfg: &EtcdConfig,
    source: &MemberStatus,
    ours: HashKv,
    mut rehash: impl FnMut(i64) -> F,
) -> Comparison
where
    F: std::future::Future<Output = Option<u32>>,
{
    let members = Members::new(cfg);
    let mut reachable: Vec<_> = members
        .probe_all()
        .await
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .collect();
    let listed = match reachable
        .iter_mut()
        .find(|m| m.status.member_id == source.member_id)
    {
        Some(m) => m.client.member_list().await.map_err(|e| chain(&e)),
        None => Err(format!("{} no longer answers", source.endpoint)),
    };
    let listed: Vec<(MemberId, bool, Vec<String>)> = match listed {
        Ok(l) => l
            .members()
            .iter()
            .map(|m| (MemberId(m.id()), m.is_learner(), m.client_urls().to_vec()))
            .collect(),
        Err(why) => {
            // Without the member list, the members behind the endpoints are what we know.
            tracing::warn!("could not list the cluster's members ({why}); checking the members behind ETCD_ENDPOINTS only");
            reachable
                .iter()
                .map(|m| (m.status.member_id, m.status.is_learner, vec![]))
                .collect()
        }
    };
    let ids: Vec<(MemberId, bool)> = listed.iter().map(|(id, l, _)| (*id, *l)).collect();
    let mut checks = Vec::new();
    for (id, learner, skip) in ask_order(&ids, source.leader, cfg.hashkv_members) {
        let urls = listed
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, _, u)| u.as_slice())
            .unwrap_or_default();
        let outcome = if let Some(why) = skip {
            Outcome::Unchecked(why)
        } else {
            let timeout = hash_timeout(cfg, source.db_size);
            let answer = match reachable.iter_mut().find(|m| m.status.member_id == id) {
                Some(m) => ask(&mut m.client, id, ours.revision, timeout).await,
                None => reach_and_ask(cfg, id, urls, ours.revision, timeout).await,
            };
            let again = match rehash_at(ours, &answer) {
                Some(c) => rehash(c).await,
                None => None,
            };
            compare(ours, answer, |_| again)
        };
        checks.push(MemberCheck {
            member_id: id,
            learner,
            outcome,
        });
    }
    let verdict = judge(&checks);
    Comparison {
        snapshot: ours,
        checks,
        verdict,
    }
}

/// A member no configured endpoint leads to: through the client URLs it advertises.
async fn reach_and_ask(
    cfg: &EtcdConfig,
    id: MemberId,
    urls: &[String],
    revision: i64,
    timeout: Duration,
) -> Answer {
    let mut why = Vec::new();
    for u in urls {
        let Ok(url) = url::Url::parse(u) else {
            why.push(format!("{u}: not a URL"));
            continue;
        };
        match probe(cfg, &url).await {
            Ok(mut m) if m.status.member_id == id => {
                return ask(&mut m.client, id, revision, timeout).await
            }
            Ok(m) => why.push(format!("{u} is member {}", m.status.member_id)),
            Err(e) => why.push(format!("{u}: {e}")),
        }
    }
    Answer::Failed(format!(
        "no configured endpoint leads to it and its client URLs did not answer as it ({}); add its client URL to ETCD_ENDPOINTS",
        if why.is_empty() { "none advertised".to_string() } else { why.join("; ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, learner: bool, outcome: Outcome) -> MemberCheck {
        MemberCheck {
            member_id: MemberId(u64::from_str_radix(id, 16).unwrap()),
            learner,
            outcome,
        }
    }

    #[test]
    fn followers_are_asked_before_the_leader_and_only_those_named() {
        let (a, b, c, l) = (MemberId(1), MemberId(2), MemberId(3), MemberId(4));
        let members = [(l, false), (a, false), (c, true), (b, false)];
        let asked = |which| -> Vec<(MemberId, bool)> {
            ask_order(&members, l, which)
                .into_iter()
                .map(|(id, _, skip)| (id, skip.is_none()))
                .collect()
        };
        // (setting, members in order with whether each is asked)
        let cases = [
            (
                Asked::All,
                vec![(a, true), (c, false), (b, true), (l, true)],
            ),
            (
                Asked::Followers,
                vec![(a, true), (c, false), (b, true), (l, false)],
            ),
            (
                Asked::None,
                vec![(a, false), (c, false), (b, false), (l, false)],
            ),
        ];
        for (which, want) in cases {
            assert_eq!(asked(which), want, "{which}");
        }
        for s in ["all", "followers", "none"] {
            assert_eq!(s.parse::<Asked>().unwrap().to_string(), s);
        }
        assert!("leader".parse::<Asked>().is_err());
    }

    #[test]
    fn the_verdict_follows_the_majority_of_voters() {
        use Outcome::*;
        let d = || Differs {
            hash: 1,
            compact_revision: 5,
        };
        let u = || Unchecked("unreachable".into());
        let cases: Vec<(Vec<MemberCheck>, Verdict)> = vec![
            (vec![m("a", false, Agrees)], Verdict::Publish),
            (vec![m("a", false, u())], Verdict::Publish),
            (
                vec![
                    m("a", false, Agrees),
                    m("b", false, Agrees),
                    m("c", false, d()),
                ],
                Verdict::Publish,
            ),
            (
                vec![
                    m("a", false, Agrees),
                    m("b", false, d()),
                    m("c", false, d()),
                ],
                Verdict::StartOver,
            ),
            (
                vec![
                    m("a", false, Agrees),
                    m("b", false, u()),
                    m("c", false, u()),
                ],
                Verdict::Publish,
            ),
            (
                vec![
                    m("a", false, Agrees),
                    m("b", false, d()),
                    m("c", false, u()),
                ],
                Verdict::Refuse,
            ),
            (
                vec![m("a", false, Agrees), m("b", false, d())],
                Verdict::Refuse,
            ),
            // A learner that differs does not outvote anyone.
            (
                vec![m("a", false, Agrees), m("b", true, d()), m("c", true, d())],
                Verdict::Publish,
            ),
            (
                vec![
                    m("a", false, Agrees),
                    m("b", false, d()),
                    m("c", false, d()),
                    m("d", false, Agrees),
                    m("e", false, Agrees),
                ],
                Verdict::Publish,
            ),
        ];
        for (checks, want) in cases {
            assert_eq!(judge(&checks), want, "{checks:?}");
        }
    }

    #[test]
    fn hashes_are_compared_only_at_equal_compact_revisions() {
        let ours = HashKv {
            hash: 10,
            compact_revision: 100,
            revision: 200,
        };
        let at = |hash, compact_revision| Answer::Hash {
            hash,
            compact_revision,
        };
        let never = |_| -> Option<u32> { panic!("no rehash expected") };
        assert_eq!(compare(ours, at(10, 100), never), Outcome::Agrees);
        assert_eq!(
            compare(ours, at(11, 100), never),
            Outcome::Differs {
                hash: 11,
                compact_revision: 100
            }
        );
        // Compacted after the snapshot, to a revision it holds: hashed again there.
        assert_eq!(
            compare(ours, at(7, 150), |c| Some(c as u32 - 143)),
            Outcome::Agrees
        );
        assert_eq!(
            compare(ours, at(8, 150), |_| Some(7)),
            Outcome::Differs {
                hash: 8,
                compact_revision: 150
            }
        );
        assert_eq!(compare(ours, at(7, 200), |_| Some(7)), Outcome::Agrees);
        // Below the snapshot's compact revision, or past its revision: no comparison.
        assert!(matches!(
            compare(ours, at(10, 99), never),
            Outcome::Unchecked(_)
        ));
        assert!(matches!(
            compare(ours, at(10, 201), never),
            Outcome::Unchecked(_)
        ));
        assert!(matches!(
            compare(ours, at(7, 150), |_| None),
            Outcome::Unchecked(_)
        ));
        assert!(matches!(
            compare(ours, Answer::Compacted, never),
            Outcome::Unchecked(w) if w.contains("compacted past revision 200")
        ));
        assert!(matches!(
            compare(ours, Answer::Behind, never),
            Outcome::Unchecked(w) if w.contains("not reached revision 200")
        ));
    }
}
