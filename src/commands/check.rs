//! `check`: is the newest verified backup young enough (or, with `--max-lag`, is the stream
//! keeping up: [`crate::stream::report::lag`])? It reads the bucket alone (no etcd
//! settings), so it runs as a second CronJob, or from any monitor that runs commands, where
//! there is no Prometheus. A backup counts once its manifest is there: the manifest is written
//! only after the upload completed, which happens only after every check passed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Context, Outcome, Verdict};
use crate::config::CheckConfig;
use crate::retention::human;
use crate::store::{Listed, Store};
use crate::stream::records::StreamView;
use crate::stream::report::{self, Lag};

/// The verdict, for a table or JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// The newest verified backup, as its full key.
    pub newest: Option<String>,
    pub newest_time: Option<String>,
    pub age_seconds: Option<u64>,
    pub max_age_seconds: u64,
    pub fresh: bool,
    /// Backups without a manifest (not counted): from before manifests, or a manifest write
    /// that failed.
    pub unverified: usize,
    /// With BACKUP_VERIFY_KEY: the newer backups not counted because their signature did not
    /// pass, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Where it looked, for the verdict's message.
    #[serde(skip)]
    pub url: String,
}

/// The pure part: the newest backup with a manifest, against `max_age` at `now`.
pub fn judge(prefix: &str, backups: &[Listed], now: DateTime<Utc>, max_age: Duration) -> Freshness {
    let newest = backups.iter().filter(|b| b.manifest).max_by_key(|b| b.key);
    let age = newest.map(|b| (now - b.key.time).to_std().unwrap_or(Duration::ZERO));
    Freshness {
        newest: newest.map(|b| format!("{prefix}{}", b.key)),
        newest_time: newest.map(|b| b.key.time.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        age_seconds: age.map(|a| a.as_secs()),
        max_age_seconds: max_age.as_secs(),
        fresh: age.is_some_and(|a| a < max_age),
        unverified: backups.iter().filter(|b| !b.manifest).count(),
        refused: Vec::new(),
        url: String::new(),
    }
}

impl Freshness {
    /// `None` when fresh; else what is wrong and what to check.
    pub fn problem(&self, url: &str) -> Option<String> {
        if self.fresh {
            return None;
        }
        let max = human(Duration::from_secs(self.max_age_seconds));
        let refused = if self.refused.is_empty() {
            String::new()
        } else {
            format!(
                " ({} newer backups are not counted, their signatures did not pass BACKUP_VERIFY_KEY: {})",
                self.refused.len(),
                self.refused.join("; ")
            )
        };
        Some(match (&self.newest, self.age_seconds) {
            (Some(key), Some(age)) => format!(
                "the newest verified backup {key} is {} old, older than the maximum {max} (--max-age, BACKUP_MAX_AGE){refused}: check the backup CronJob's recent runs and their logs",
                human(Duration::from_secs(age))
            ),
            _ => format!(
                "there is no verified backup under {url}{}{refused}: check that the backup CronJob runs and succeeds, and BACKUP_BUCKET and BACKUP_PREFIX",
                if self.unverified > 0 {
                    format!(" ({} backups without a manifest are not counted)", self.unverified)
                } else {
                    String::new()
                }
            ),
        })
    }
}

/// Lists the bucket and judges it. With verify keys, a backup counts only when its signature
/// passes: the newest are judged until one does.
pub async fn run(store: &Store, cfg: &CheckConfig, ctx: &Context) -> anyhow::Result<Freshness> {
    let (now, max_age, keys) = (ctx.now, cfg.max_age, cfg.verify_keys.as_ref());
    ctx.shutdown
        .or_interrupted(async {
            let mut backups = store.list().await?.backups;
            let unverified = backups.iter().filter(|b| !b.manifest).count();
            let mut refused = Vec::new();
            if let Some(keys) = keys {
                // Newest first, as listed: judged until one passes, which is then the newest
                // that counts; the older ones need no judgement.
                let mut passing = None;
                for (i, b) in backups.iter().enumerate().filter(|(_, b)| b.manifest) {
                    match crate::trust::judge(store, &b.key, keys).await? {
                        Ok(_) => {
                            passing = Some(i);
                            break;
                        }
                        Err(why) => refused.push(format!("{}{}: {why}", store.prefix(), b.key)),
                    }
                }
                backups = passing.map_or_else(Vec::new, |i| backups.split_off(i));
            }
            let mut f = judge(store.prefix(), &backups, now, max_age);
            f.refused = refused;
            f.unverified = unverified;
            f.url = store.url_prefix().to_string();
            Ok(f)
        })
        .await
}

impl Outcome for Freshness {
    fn verdict(&self) -> Verdict {
        self.problem(&self.url).map_or(Verdict::Pass, Verdict::Fail)
    }
}

/// `check --max-lag`: the stream's newest generation judged at `ctx.now`.
pub async fn lag(store: &Store, max_lag: Duration, ctx: &Context) -> anyhow::Result<Lag> {
    let view = ctx
        .shutdown
        .or_interrupted(async { Ok(StreamView::read(store).await?) })
        .await?;
    let mut lag = report::lag(&report::summarize(&view, None), ctx.now, max_lag);
    lag.url = store.url_prefix().to_string();
    Ok(lag)
}

impl Outcome for Lag {
    fn verdict(&self) -> Verdict {
        match &self.problem {
            Some(p) => Verdict::Fail(format!("{p} ({})", self.url)),
            None => Verdict::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Codec;
    use crate::key::BackupKey;

    fn listed(hours_ago: i64, manifest: bool, now: DateTime<Utc>) -> Listed {
        Listed {
            key: BackupKey::new(now - chrono::TimeDelta::hours(hours_ago), Codec::Gzip),
            size: 1,
            last_modified: now,
            manifest,
            signature: false,
            files: false,
        }
    }

    #[test]
    fn the_newest_verified_backup_decides() {
        let now = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let max = Duration::from_secs(13 * 3600);
        // (backups as (hours ago, has manifest), fresh, newest's age in hours)
        type Case<'a> = (&'a [(i64, bool)], bool, Option<u64>);
        let cases: &[Case] = &[
            (&[], false, None),
            (&[(1, true)], true, Some(1)),
            (&[(12, true)], true, Some(12)),
            (&[(13, true)], false, Some(13)),
            (&[(14, true), (30, true)], false, Some(14)),
            // A newer backup without a manifest does not count.
            (&[(1, false), (20, true)], false, Some(20)),
            (&[(1, false)], false, None),
            (&[(30, true), (2, true), (8, true)], true, Some(2)),
        ];
        for (backups, fresh, age) in cases {
            let list: Vec<_> = backups.iter().map(|(h, m)| listed(*h, *m, now)).collect();
            let f = judge("etcd/", &list, now, max);
            assert_eq!(f.fresh, *fresh, "{backups:?}");
            assert_eq!(f.age_seconds, age.map(|h| h * 3600), "{backups:?}");
            assert_eq!(f.problem("s3://b/etcd/").is_none(), *fresh);
        }
        let f = judge("etcd/", &[listed(1, false, now)], now, max);
        let e = f.problem("s3://b/etcd/").unwrap();
        assert!(
            e.contains("no verified backup under s3://b/etcd/ (1 backups without a manifest"),
            "{e}"
        );
    }
}
