//! Which members `defrag` visits, in which order, and why: pure, tested with tables. The
//! order is followers in endpoint order, then the leader (a defrag blocks its member; a blocked
//! leader stalls the cluster); the rule defragments a member when `dbSize - dbSizeInUse >=
//! ETCD_DEFRAG_MIN_FREE` or its database is past 80% of the quota.

use std::time::Duration;

use serde::Serialize;

use super::{MemberId, MemberStatus, QUOTA_WARN};

/// One member as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub member_id: MemberId,
    pub endpoint: String,
    pub is_leader: bool,
    pub db_size: u64,
    pub db_size_in_use: u64,
}

impl Facts {
    pub fn of(s: &MemberStatus) -> Facts {
        Facts {
            member_id: s.member_id,
            endpoint: s.endpoint.clone(),
            is_leader: s.is_leader,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
        }
    }

    pub fn free(&self) -> u64 {
        self.db_size.saturating_sub(self.db_size_in_use)
    }
}

/// What the rule says of one member, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Defrag(String),
    Skip(String),
}

/// The rule for one member.
pub fn rule(f: &Facts, min_free: u64, quota: u64) -> Verdict {
    let used = f.db_size as f64 / quota as f64;
    if f.free() >= min_free {
        Verdict::Defrag(format!(
            "{} bytes free >= ETCD_DEFRAG_MIN_FREE {min_free}",
            f.free()
        ))
    } else if used > QUOTA_WARN {
        Verdict::Defrag(format!(
            "database at {:.0}% of the {quota}-byte quota",
            used * 100.0
        ))
    } else {
        Verdict::Skip(format!(
            "{} bytes free < ETCD_DEFRAG_MIN_FREE {min_free}, and {:.0}% of the quota",
            f.free(),
            used * 100.0
        ))
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub member: Facts,
    pub defrag: bool,
    pub reason: String,
}

/// The members in the order they are visited: followers in endpoint order, then the leader.
pub fn plan(members: &[Facts], min_free: u64, quota: u64) -> Vec<Step> {
    let mut ordered: Vec<&Facts> = members.iter().filter(|m| !m.is_leader).collect();
    ordered.extend(members.iter().filter(|m| m.is_leader));
    ordered
        .into_iter()
        .map(|m| {
            let (defrag, reason) = match rule(m, min_free, quota) {
                Verdict::Defrag(why) => (true, why),
                Verdict::Skip(why) => (false, why),
            };
            Step {
                member: m.clone(),
                defrag,
                reason,
            }
        })
        .collect()
}

/// How long a defrag of `in_use` bytes may take: etcd copies about 10 s per GB; three times
/// that, and a minute for a slow disk or a busy member.
pub fn defrag_timeout(in_use: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs_f64(30.0 * in_use as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, leader: bool, size: u64, in_use: u64) -> Facts {
        Facts {
            member_id: MemberId(u64::from_str_radix(id, 16).unwrap()),
            endpoint: format!("https://{id}:2379"),
            is_leader: leader,
            db_size: size,
            db_size_in_use: in_use,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn followers_first_leader_last_each_by_the_rule() {
        let quota = 2048 * MIB;
        // (members, expected order of ids, expected defrag flags)
        type Case = (Vec<Facts>, Vec<&'static str>, Vec<bool>);
        let cases: Vec<Case> = vec![
            (
                vec![
                    m("a", true, 900 * MIB, 100 * MIB),
                    m("b", false, 900 * MIB, 100 * MIB),
                    m("c", false, 900 * MIB, 100 * MIB),
                ],
                vec!["b", "c", "a"],
                vec![true, true, true],
            ),
            // Below the threshold: skipped; at exactly the threshold: defragmented.
            (
                vec![
                    m("a", false, 300 * MIB, 100 * MIB),
                    m("b", false, 356 * MIB, 100 * MIB),
                    m("c", true, 100 * MIB, 100 * MIB),
                ],
                vec!["a", "b", "c"],
                vec![false, true, false],
            ),
            // Little free, but past 80% of the quota.
            (
                vec![m("a", false, 1700 * MIB, 1690 * MIB)],
                vec!["a"],
                vec![true],
            ),
            (
                vec![m("a", false, 1600 * MIB, 1590 * MIB)],
                vec!["a"],
                vec![false],
            ),
            // No leader known (a member alone): endpoint order.
            (
                vec![m("e", false, 1, 1), m("f", false, 1, 1)],
                vec!["e", "f"],
                vec![false, false],
            ),
        ];
        for (members, order, flags) in cases {
            let p = plan(&members, 256 * MIB, quota);
            let got: Vec<String> = p.iter().map(|s| s.member.member_id.to_string()).collect();
            assert_eq!(got, order);
            let got: Vec<bool> = p.iter().map(|s| s.defrag).collect();
            assert_eq!(got, flags, "{members:?}");
        }
    }

    #[test]
    fn timeouts_grow_with_the_database() {
        assert_eq!(defrag_timeout(0), Duration::from_secs(60));
        assert_eq!(defrag_timeout(2_000_000_000), Duration::from_secs(120));
        assert!(defrag_timeout(8_000_000_000) >= Duration::from_secs(8 * 10 * 2));
    }
}
