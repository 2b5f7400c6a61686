//! `prune`: list our backups, plan with [`crate::retention`] (a pure function of the listing,
//! the policy and `now`, then of the object lock retention of what it would delete), then
//! delete what the plan says, one backup at a time. Names we did not write are never in the
//! plan.

use chrono::{DateTime, Utc};

use super::{Context, Outcome};
use crate::config::PruneConfig;
use crate::key::BackupKey;
use crate::retention::{self, Policy};
use crate::sign::{Refused, VerifyKeys};
use crate::store::{Listing, Store};
use crate::stream::names::Name;
use crate::stream::objects;
use crate::stream::retention::StreamPlan;
use std::collections::HashMap;

/// `prune`'s command line.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PruneArgs {
    /// Print the plan (keep/delete, with reasons) and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What prune did.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub deleted: Vec<BackupKey>,
    pub plan: retention::Plan,
    /// What the stream's history loses ([`crate::stream::retention`]).
    pub stream: StreamPlan,
    pub stream_deleted: Vec<Name>,
}

impl Pruned {
    pub fn log(&self, dry_run: bool) {
        tracing::info!(
            deleted = self.deleted.len(),
            planned = self.plan.delete_count(),
            stream_deleted = self.stream_deleted.len(),
            stream_planned = self.stream.delete.len(),
            dry_run,
            "prune complete"
        );
    }
}

/// What [`survey`] found.
pub struct Survey {
    /// Our backups (names not ours are skipped, with a log line).
    pub listing: Listing,
    pub plan: retention::Plan,
    /// With verify keys: why each backup that does not pass is refused.
    pub refused: HashMap<BackupKey, Refused>,
    /// With verify keys: the signed manifest's figures of each backup that passes (read for
    /// the judgement, so `list` need not read them again).
    pub vouched: HashMap<BackupKey, Vec<(String, String)>>,
    /// What the stream's history keeps and loses.
    pub stream: StreamPlan,
}

/// What prune works by: the policy, the backup it must never delete (the one just written),
/// and the keys whose signatures count toward BACKUP_KEEP_LAST.
#[derive(Debug, Clone, Copy)]
pub struct Pruning<'a> {
    pub policy: &'a Policy,
    pub protect: Option<&'a BackupKey>,
    pub verify: Option<&'a VerifyKeys>,
}

impl<'a> Pruning<'a> {
    /// Prune's settings as `prune` and `list` read them.
    pub fn of(cfg: &'a PruneConfig) -> Pruning<'a> {
        Pruning {
            policy: &cfg.policy,
            protect: None,
            verify: cfg.verify_keys.as_ref(),
        }
    }
}

/// Our backups and what retention would do with each. `protect` is never planned for deletion.
/// With verify keys, each backup is judged, and only those whose signature passes fill the
/// newest places.
pub async fn survey(store: &Store, by: &Pruning<'_>, now: DateTime<Utc>) -> anyhow::Result<Survey> {
    let Pruning {
        policy,
        protect,
        verify,
    } = *by;
    let listing = store.list().await?;
    if !listing.skipped.is_empty() {
        tracing::info!(
            skipped = listing.skipped.len(),
            "objects under the prefix whose names are not ours were left alone"
        );
    }
    let keys: Vec<_> = listing.backups.iter().map(|b| b.key).collect();
    let (mut refused, mut vouched) = (HashMap::new(), HashMap::new());
    if let Some(verify) = verify {
        for b in &listing.backups {
            match crate::trust::judge(store, &b.key, verify).await? {
                Ok(v) => {
                    vouched.insert(b.key, v.figures);
                }
                Err(why) => {
                    tracing::info!(
                        "{} does not count toward BACKUP_KEEP_LAST: {why}",
                        store.url(&b.key)
                    );
                    refused.insert(b.key, why);
                }
            }
        }
    }
    let plan = retention::plan_counting(&keys, policy, now, protect, |k| !refused.contains_key(k));
    // The bases a stream generation needs for its window are kept whatever their age.
    let stream = if listing.stream_objects > 0 {
        let view = crate::stream::records::StreamView::read(store).await?;
        let views: Vec<_> = view.generations.iter().map(|g| g.retention()).collect();
        crate::stream::retention::plan(&views, now, policy.pitr_window)
    } else {
        StreamPlan::default()
    };
    let plan = plan.needed_by_stream(|k| {
        let name = k.to_string();
        stream.needed.get(&name).cloned()
    });
    let plan = match store.bucket() {
        Some(bucket) if plan.delete_count() > 0 && bucket.object_lock().await?.is_some() => {
            // One GET per backup the rules would delete: only those can be locked in the way.
            let mut until = std::collections::HashMap::new();
            for key in plan.to_delete() {
                if let Some(t) = bucket.retain_until(store.path(key).as_ref()).await? {
                    until.insert(*key, t);
                }
            }
            plan.locked(|k| until.get(k).copied(), now)
        }
        _ => plan,
    };
    Ok(Survey {
        listing,
        plan,
        refused,
        vouched,
        stream,
    })
}

/// The `prune` command.
pub async fn run(
    store: &Store,
    cfg: &PruneConfig,
    args: PruneArgs,
    ctx: &Context,
) -> anyhow::Result<Pruned> {
    prune(store, &Pruning::of(cfg), args, ctx).await
}

impl Outcome for Pruned {}

/// Lists, plans and (unless `dry_run`) deletes. Deletion stops at the first failure.
pub async fn prune(
    store: &Store,
    by: &Pruning<'_>,
    args: PruneArgs,
    ctx: &Context,
) -> anyhow::Result<Pruned> {
    let (dry_run, shutdown) = (args.dry_run, &ctx.shutdown);
    let Survey { plan, stream, .. } = survey(store, by, ctx.now).await?;
    let mut deleted = Vec::new();
    let mut stream_deleted = Vec::new();
    if !dry_run {
        // The trim markers first: once one is there, a generation counts from its base, so a
        // prune stopped midway leaves nothing that reads as a gap.
        for name in &stream.trims {
            let body = serde_json::json!({ "trimmed-to": name.to_string() }).to_string();
            objects::put(store, name, body.into()).await?;
        }
        // Then the stream's objects, in the plan's order (segments before the records that
        // name their base): a prune stopped midway leaves no segment without its base.
        for (name, why) in &stream.delete {
            if let Some(why) = shutdown.fired() {
                return Err(crate::shutdown::Interrupted(why).into());
            }
            objects::delete(store, name).await?;
            tracing::info!(object = %objects::url(store, name), reason = %why, "deleted");
            stream_deleted.push(*name);
        }
        for key in plan.to_delete() {
            // Stop between deletions: each one is whole, and the rest wait for the next run.
            if let Some(why) = shutdown.fired() {
                return Err(crate::shutdown::Interrupted(why).into());
            }
            store.delete(key).await?;
            tracing::info!(key = %store.url(key), "deleted");
            deleted.push(*key);
        }
    }
    Ok(Pruned {
        deleted,
        plan,
        stream,
        stream_deleted,
    })
}
