//! Which backups to keep and which to delete: a pure function of the listing, the policy and
//! `now`, so that the decision can be printed (`prune --dry-run`), tested against a fixed
//! clock, and applied as a separate step.
//!
//! The rules, in order: a backup this run just uploaded is kept; the newest `keep_last` are
//! kept whatever their age; the newest of each of the last hours, days, ISO weeks and months
//! that the tiers name is kept (restic's `forget --keep-hourly` and the rest); a backup no older
//! than `max_age` is kept; the rest are deleted, unless a stream generation needs it as a base
//! for its point-in-time window ([`Plan::needed_by_stream`]).
//! A time in the future (clock skew) counts as young, so it is kept. On a bucket with object
//! lock, a backup the rules would delete but whose retention runs past `now` is kept, "locked
//! until" that date ([`Plan::locked`]): S3 would refuse the delete anyway, and that is not a
//! failure.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::key::BackupKey;

/// The retention settings. Both are validated by config: `keep_last >= 1` and `max_age > 0`,
/// so a policy can never delete every backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_age: Duration,
    pub keep_last: usize,
    /// How far back `stream`'s history must reach (BACKUP_PITR_WINDOW): the bases and segments
    /// that reach every moment in it are kept ([`crate::stream::retention`]).
    pub pitr_window: Duration,
    /// Backups kept one per hour, day, week and month, as restic's `forget --keep-hourly` and
    /// the rest do (BACKUP_KEEP_HOURLY and the rest; 0 turns a tier off).
    pub tiers: Tiers,
}

/// A tier's name, how many periods it keeps, and the period a backup's time falls in.
type Tier = (&'static str, usize, fn(DateTime<Utc>) -> String);

/// How many hours, days, ISO weeks and months keep their newest backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tiers {
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Tiers {
    /// The tiers in order, each with the period a backup falls in.
    fn each(&self) -> [Tier; 4] {
        [
            ("hourly", self.hourly, |t| {
                t.format("%Y-%m-%d %Hh").to_string()
            }),
            ("daily", self.daily, |t| t.format("%Y-%m-%d").to_string()),
            ("weekly", self.weekly, |t| t.format("%G-W%V").to_string()),
            ("monthly", self.monthly, |t| t.format("%Y-%m").to_string()),
        ]
    }
}

/// Why a backup is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    JustUploaded,
    Newest {
        rank: usize,
        keep_last: usize,
    },
    Young {
        age: Duration,
        max_age: Duration,
    },
    Old {
        age: Duration,
        max_age: Duration,
    },
    /// Past retention, but the bucket's object lock retains it until then.
    Locked {
        until: DateTime<Utc>,
    },
    /// The newest backup of one of the last periods a tier keeps.
    Tier {
        tier: &'static str,
        period: String,
        rank: usize,
        of: usize,
    },
    /// Past retention, but a stream generation needs it to reach its point-in-time window.
    StreamBase {
        why: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |d: &Duration| human(*d);
        match self {
            Reason::JustUploaded => write!(f, "uploaded by this run"),
            Reason::Newest { rank, keep_last } => {
                write!(f, "newest {rank} of {keep_last} kept by count")
            }
            Reason::Young { age, max_age } => {
                write!(f, "age {} is within retention {}", h(age), h(max_age))
            }
            Reason::Old { age, max_age } => {
                write!(f, "age {} is past retention {}", h(age), h(max_age))
            }
            Reason::Locked { until } => {
                write!(f, "locked until {}", until.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            Reason::StreamBase { why } => write!(f, "{why}"),
            Reason::Tier {
                tier,
                period,
                rank,
                of,
            } => write!(f, "newest of {period}, {tier} {rank} of {of}"),
        }
    }
}

/// `51d 3h 5m 2s`: days at most, since backups are kept for days, not months.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: BackupKey,
    pub keep: bool,
    pub reason: Reason,
}

/// Every backup of the listing, newest first, each with its decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

impl Plan {
    pub fn to_delete(&self) -> impl Iterator<Item = &BackupKey> {
        self.decisions.iter().filter(|d| !d.keep).map(|d| &d.key)
    }

    pub fn delete_count(&self) -> usize {
        self.to_delete().count()
    }

    /// The plan once object lock is known: each backup planned for deletion whose
    /// `retain_until` is after `now` is kept, locked until then.
    pub fn locked(
        mut self,
        retain_until: impl Fn(&BackupKey) -> Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Plan {
        for d in self.decisions.iter_mut().filter(|d| !d.keep) {
            if let Some(until) = retain_until(&d.key).filter(|u| *u > now) {
                d.keep = true;
                d.reason = Reason::Locked { until };
            }
        }
        self
    }
}

impl Plan {
    /// The plan once the stream's needs are known: each backup planned for deletion that a
    /// generation needs (`needed` says why) is kept.
    pub fn needed_by_stream(mut self, needed: impl Fn(&BackupKey) -> Option<String>) -> Plan {
        for d in self.decisions.iter_mut().filter(|d| !d.keep) {
            if let Some(why) = needed(&d.key) {
                d.keep = true;
                d.reason = Reason::StreamBase { why };
            }
        }
        self
    }
}

impl fmt::Display for Plan {
    /// One line a backup: `keep` or `delete`, the name, the reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.decisions {
            writeln!(
                f,
                "{:<6} {}  {}",
                if d.keep { "keep" } else { "delete" },
                d.key,
                d.reason
            )?;
        }
        Ok(())
    }
}

/// Decides what to keep. `protect` is the backup this run uploaded, if any: it is never deleted,
/// even when the clock makes it look old.
pub fn plan(
    backups: &[BackupKey],
    policy: &Policy,
    now: DateTime<Utc>,
    protect: Option<&BackupKey>,
) -> Plan {
    plan_counting(backups, policy, now, protect, |_| true)
}

/// [`plan`] where only the backups that `counts` takes fill the `keep_last` places (with
/// BACKUP_VERIFY_KEY, those whose signature passes): backups planted in the bucket under newer
/// names must not push the real ones out. The others are kept while young and deleted when
/// old. When none counts (a verify key that matches nothing, or only backups from before
/// signing), every backup counts, as without a key: a wrong key must not cost the backups.
pub fn plan_counting(
    backups: &[BackupKey],
    policy: &Policy,
    now: DateTime<Utc>,
    protect: Option<&BackupKey>,
    counts: impl Fn(&BackupKey) -> bool,
) -> Plan {
    let mut sorted = backups.to_vec();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    let any_counts = sorted.iter().any(&counts);
    // Each tier walks the counted backups newest first and keeps the first of each period,
    // for as many periods as it is told; a backup keeps the first tier's reason.
    let mut tiered: std::collections::HashMap<BackupKey, Reason> = Default::default();
    for (tier, n, period_of) in policy.tiers.each() {
        let mut periods: Vec<String> = Vec::new();
        for key in sorted.iter().filter(|k| !any_counts || counts(k)) {
            if periods.len() >= n {
                break;
            }
            let period = period_of(key.time);
            if periods.last() != Some(&period) {
                periods.push(period.clone());
                tiered.entry(*key).or_insert(Reason::Tier {
                    tier,
                    period,
                    rank: periods.len(),
                    of: n,
                });
            }
        }
    }
    let mut rank = 0;
    let decisions = sorted
        .into_iter()
        .map(|key| {
            let age = (now - key.time).to_std().unwrap_or(Duration::ZERO);
            let counted = !any_counts || counts(&key);
            let i = rank;
            if counted {
                rank += 1;
            }
            let (keep, reason) = if protect == Some(&key) {
                (true, Reason::JustUploaded)
            } else if counted && i < policy.keep_last {
                (
                    true,
                    Reason::Newest {
                        rank: i + 1,
                        keep_last: policy.keep_last,
                    },
                )
            } else if let Some(reason) = tiered.remove(&key) {
                (true, reason)
            } else if age <= policy.max_age {
                (
                    true,
                    Reason::Young {
                        age,
                        max_age: policy.max_age,
                    },
                )
            } else {
                (
                    false,
                    Reason::Old {
                        age,
                        max_age: policy.max_age,
                    },
                )
            };
            Decision { key, keep, reason }
        })
        .collect();
    Plan { decisions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Codec;

    const DAY: u64 = 86_400;

    fn key(name: &str) -> BackupKey {
        name.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        key("20260601-000000.db").time
    }

    #[test]
    fn backups_that_do_not_count_never_take_a_newest_place() {
        let policy = Policy {
            max_age: Duration::from_secs(DAY),
            keep_last: 2,
            pitr_window: Duration::from_secs(7 * DAY),
            tiers: Tiers::default(),
        };
        let keys = [
            key("20260531-200000.db"), // planted, young
            key("20260520-000000.db"), // planted, old
            key("20260510-000000.db"),
            key("20260501-000000.db"),
            key("20260420-000000.db"),
        ];
        let planted = |k: &BackupKey| k.time > key("20260515-000000.db").time;
        let real = |k: &BackupKey| !planted(k);
        // (what counts, the backups kept)
        type Case<'a> = (&'a dyn Fn(&BackupKey) -> bool, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (&|_| true, vec!["20260531-200000.db", "20260520-000000.db"]),
            (
                &real,
                vec![
                    "20260531-200000.db",
                    "20260510-000000.db",
                    "20260501-000000.db",
                ],
            ),
            // Nothing counts: as if every backup did.
            (&|_| false, vec!["20260531-200000.db", "20260520-000000.db"]),
        ];
        for (counts, kept) in cases {
            let p = plan_counting(&keys, &policy, now(), None, counts);
            let got: Vec<String> = p
                .decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| d.key.to_string())
                .collect();
            assert_eq!(got, kept);
        }
    }

    #[test]
    fn a_locked_backup_is_kept_until_its_retention_ends_and_nothing_else_changes() {
        let policy = Policy {
            max_age: Duration::from_secs(DAY),
            keep_last: 1,
            pitr_window: Duration::from_secs(7 * DAY),
            tiers: Tiers::default(),
        };
        let keys = [
            key("20260531-120000.db"),
            key("20260520-000000.db"),
            key("20260510-000000.db"),
            key("20260501-000000.db"),
        ];
        let plain = plan(&keys, &policy, now(), None);
        assert_eq!(plain.delete_count(), 3);
        let until = |d: i64| now() + chrono::TimeDelta::days(d);
        let locks = |k: &BackupKey| match k.to_string().as_str() {
            "20260520-000000.db" => Some(until(5)),
            // Retention over: deleted as planned.
            "20260510-000000.db" => Some(until(-1)),
            // Locked, but kept anyway: the reason stays the rule's.
            "20260531-120000.db" => Some(until(9)),
            _ => None,
        };
        let locked = plain.clone().locked(locks, now());
        let reasons: Vec<String> = locked
            .decisions
            .iter()
            .map(|d| d.reason.to_string())
            .collect();
        assert_eq!(
            locked
                .to_delete()
                .map(|k| k.to_string())
                .collect::<Vec<_>>(),
            ["20260510-000000.db", "20260501-000000.db"]
        );
        assert_eq!(reasons[0], plain.decisions[0].reason.to_string());
        assert_eq!(reasons[1], "locked until 2026-06-06 00:00:00 UTC");
    }

    fn policy(days: u64, keep_last: usize) -> Policy {
        Policy {
            max_age: Duration::from_secs(days * DAY),
            keep_last,
            pitr_window: Duration::from_secs(7 * DAY),
            tiers: Tiers::default(),
        }
    }

    #[test]
    fn golden_plan() {
        let backups = [
            key("20260410-000000.db.gz"),
            key("20260531-180000.db.gz"),
            key("20260502-000000.db.gz"),
            key("20260501-235959.db.zst"),
            key("20260602-000000.db.gz"), // a clock ahead of ours
            key("20260301-000000.db"),
        ];
        let got = plan(&backups, &policy(30, 2), now(), None).to_string();
        let want = "\
keep   20260602-000000.db.gz  newest 1 of 2 kept by count
keep   20260531-180000.db.gz  newest 2 of 2 kept by count
keep   20260502-000000.db.gz  age 30d is within retention 30d
delete 20260501-235959.db.zst  age 30d 1s is past retention 30d
delete 20260410-000000.db.gz  age 52d is past retention 30d
delete 20260301-000000.db  age 92d is past retention 30d
";
        assert_eq!(got, want);
    }

    #[test]
    fn keeps_the_newest_even_when_all_are_old() {
        let backups: Vec<_> = (1..=5)
            .map(|m| key(&format!("2025010{m}-000000.db.gz")))
            .collect();
        let p = plan(&backups, &policy(30, 3), now(), None);
        let kept: Vec<_> = p
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.key.to_string())
            .collect();
        assert_eq!(
            kept,
            [
                "20250105-000000.db.gz",
                "20250104-000000.db.gz",
                "20250103-000000.db.gz"
            ]
        );
        assert_eq!(p.delete_count(), 2);
    }

    #[test]
    fn never_deletes_the_protected_backup() {
        // The protected backup is old by this clock (the machine's clock jumped forward).
        let old = key("20250101-000000.db.gz");
        let backups = [
            key("20250301-000000.db.gz"),
            key("20250201-000000.db.gz"),
            old,
        ];
        let p = plan(&backups, &policy(1, 1), now(), Some(&old));
        let d = p.decisions.iter().find(|d| d.key == old).unwrap();
        assert!(d.keep);
        assert_eq!(d.reason, Reason::JustUploaded);
        assert_eq!(p.delete_count(), 1);
    }

    #[test]
    fn empty_listing_empty_plan() {
        assert_eq!(plan(&[], &policy(30, 3), now(), None), Plan::default());
    }

    #[test]
    fn a_backup_exactly_at_the_limit_is_kept() {
        let backups = [key("20260601-000000.db"), key("20260502-000000.db")];
        let p = plan(&backups, &policy(30, 1), now(), None);
        assert_eq!(p.delete_count(), 0);
        let _ = Codec::Gzip;
    }

    #[test]
    fn tiers_keep_the_newest_of_each_period_as_restic_does() {
        // Four backups a day, 00:00, 06:00, 12:00, 18:00, from May 1 to May 31.
        let mut keys = Vec::new();
        for day in 1..=31 {
            for h in [0, 6, 12, 18] {
                keys.push(key(&format!("202605{day:02}-{h:02}0000.db")));
            }
        }
        let policy = Policy {
            max_age: Duration::from_secs(DAY),
            keep_last: 2,
            pitr_window: Duration::from_secs(7 * DAY),
            tiers: Tiers {
                hourly: 3,
                daily: 7,
                weekly: 4,
                monthly: 2,
            },
        };
        let p = plan(&keys, &policy, now(), None);
        let kept: Vec<String> = p
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| format!("{} {}", d.key, d.reason))
            .collect();
        // Within a day of June 1 (Young): May 31 06:00, 12:00, 18:00 and June 1 00:00 is not
        // there; the newest two by count; then one a period back from there.
        let want = [
            "20260531-180000.db newest 1 of 2 kept by count",
            "20260531-120000.db newest 2 of 2 kept by count",
            "20260531-060000.db newest of 2026-05-31 06h, hourly 3 of 3",
            "20260531-000000.db age 1d is within retention 1d",
            "20260530-180000.db newest of 2026-05-30, daily 2 of 7",
            "20260529-180000.db newest of 2026-05-29, daily 3 of 7",
            "20260528-180000.db newest of 2026-05-28, daily 4 of 7",
            "20260527-180000.db newest of 2026-05-27, daily 5 of 7",
            "20260526-180000.db newest of 2026-05-26, daily 6 of 7",
            "20260525-180000.db newest of 2026-05-25, daily 7 of 7",
            "20260524-180000.db newest of 2026-W21, weekly 2 of 4",
            "20260517-180000.db newest of 2026-W20, weekly 3 of 4",
            "20260510-180000.db newest of 2026-W19, weekly 4 of 4",
        ];
        assert_eq!(kept, want);
        // No tier: the newest two by count and the two within a day.
        let none = Policy {
            tiers: Tiers::default(),
            ..policy
        };
        let kept = plan(&keys, &none, now(), None);
        assert_eq!(kept.decisions.iter().filter(|d| d.keep).count(), 4);
    }
}
